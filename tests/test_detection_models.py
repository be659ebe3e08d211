"""The YOLO-style detector and the FCN: shapes, their pieces, one training step each."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlib import boxes as box_ops
from cnnlib import fit
from cnnlib.models import fcn, yolo


def fake_targets(n=4, k=3, size=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, k, 2, generator=g) * (size - 40)
    wh = torch.rand(n, k, 2, generator=g) * 30 + 8
    labels = torch.randint(0, 10, (n, k), generator=g)
    labels[0, 1:] = -1  # padding
    boxes = torch.cat([xy, xy + wh], -1) * (labels >= 0)[..., None]
    masks = torch.randint(0, 11, (n, size, size), generator=g)
    return {"boxes": boxes, "labels": labels, "masks": masks}


class OneBatch:
    """The least a loader needs to be for fit."""
    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        yield self.batch

    def __len__(self):
        return 1

    def set_epoch(self, epoch):
        pass


def test_yolo_output_shapes():
    assert yolo.yolo_scenes()(torch.zeros(2, 1, 96, 96)).shape == (2, 12, 12, 2 * 5 + 10)
    out = yolo.yolo_voc().eval()(torch.zeros(1, 3, 448, 448))
    assert out.shape == (1, 7, 7, 30)


def test_grid_targets_put_each_object_in_its_centre_cell():
    t = fake_targets()
    has, box, label = yolo.grid_targets(t["boxes"], t["labels"], 12, 96)
    assert has.sum() <= (t["labels"] >= 0).sum() and has[0].sum() == 1
    cx, cy = ((t["boxes"][0, 0, :2] + t["boxes"][0, 0, 2:]) / 2 / 8).long().tolist()
    assert has[0, cy, cx] and torch.equal(box[0, cy, cx], t["boxes"][0, 0])
    assert label[0, cy, cx] == t["labels"][0, 0]


def test_cell_boxes_inverts_the_targets_encoding():
    # a prediction equal to the encoded target decodes back to the box
    box = torch.tensor([[30.0, 10.0, 50.0, 46.0]])
    cx, cy, w, h = box_ops.xyxy_to_cxcywh(box)[0].tolist()
    pred = torch.zeros(1, 12, 12, 1, 5)
    pred[0, int(cy // 8), int(cx // 8), 0, :4] = torch.tensor(
        [cx / 8 % 1, cy / 8 % 1, (w / 96) ** 0.5, (h / 96) ** 0.5])
    decoded = yolo.cell_boxes(pred, 96)[0, int(cy // 8), int(cx // 8), 0]
    assert torch.allclose(decoded, box[0], atol=1e-4)


def test_yolo_loss_parts_and_decode():
    torch.manual_seed(0)
    model = yolo.yolo_scenes()
    x, t = torch.rand(4, 1, 96, 96), fake_targets()
    loss, parts = yolo.loss_fn(96)(model, (x, t))
    assert set(parts) == {"coord", "obj", "noobj", "cls"} and torch.isclose(loss, sum(parts.values()))
    model.eval()
    dets = yolo.decode(model, model(x), 96, score_threshold=0.0)
    assert len(dets) == 4 and dets[0]["boxes"].shape[1] == 4
    assert (dets[0]["scores"][:-1] >= dets[0]["scores"][1:]).all()


def test_yolo_one_training_step_through_fit():
    torch.manual_seed(0)
    model = yolo.yolo_scenes(width=8)
    batch = (torch.rand(4, 1, 96, 96), fake_targets())
    before = [p.detach().clone() for p in model.parameters()]
    h = fit(model, OneBatch(batch), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
            loss_fn=yolo.loss_fn(96), device="cpu", progress=False, verbose=False)
    assert {"train_loss", "train_coord", "train_cls"} <= set(h.last)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_convolutionalize_keeps_the_2560_weights():
    torch.manual_seed(0)
    linear = nn.Linear(16 * 4 * 4, 10)
    conv = fcn.convolutionalize(linear, 16, 4)
    assert conv.weight.numel() == linear.weight.numel() == 2560
    x = torch.randn(3, 16, 4, 4)
    assert torch.allclose(conv(x).flatten(1), linear(x.flatten(1)), atol=1e-5)
    assert conv(torch.randn(1, 16, 9, 12)).shape == (1, 10, 6, 9)  # bigger input, bigger map


def test_bilinear_transposed_conv_interpolates():
    up = fcn.upsample(1, 2)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = up(x)
    assert y.shape == (1, 1, 8, 8)
    inner = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(y[..., 1:-1, 1:-1], inner[..., 1:-1, 1:-1], atol=1e-5)


def test_fcn_shapes_any_size():
    for skips in (True, False):
        for mode in ("transposed", "resize"):
            net = fcn.fcn_scenes(skips=skips, mode=mode).eval()
            assert net(torch.zeros(2, 1, 96, 96)).shape == (2, 11, 96, 96)
            assert net(torch.zeros(1, 1, 64, 128)).shape == (1, 11, 64, 128)


def test_fcn_one_training_step_through_fit():
    torch.manual_seed(0)
    model = fcn.fcn_scenes(width=8)
    batch = (torch.rand(4, 1, 96, 96), fake_targets())
    h = fit(model, OneBatch(batch), epochs=1, optimizer=torch.optim.Adam(model.parameters(), 1e-3),
            loss_fn=fcn.segmentation_loss, device="cpu", progress=False, verbose=False)
    assert h.last["train_loss"] > 0 and 0 <= h.last["train_pixel_acc"] <= 1
