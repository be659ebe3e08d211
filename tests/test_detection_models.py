"""The YOLO-style detector and the FCN: shapes, their pieces, one training step each."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlib import boxes as box_ops
from cnnlib import fit
from cnnlib import models
from cnnlib.models import fcn, rcnn, yolo


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
    model = yolo.yolo_scenes(channels=8)
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
    model = fcn.fcn_scenes(channels=8)
    batch = (torch.rand(4, 1, 96, 96), fake_targets())
    h = fit(model, OneBatch(batch), epochs=1, optimizer=torch.optim.Adam(model.parameters(), 1e-3),
            loss_fn=fcn.segmentation_loss, device="cpu", progress=False, verbose=False)
    assert h.last["train_loss"] > 0 and 0 <= h.last["train_pixel_acc"] <= 1


def test_fcn_refuses_sizes_that_are_not_multiples_of_8():
    for skips in (True, False):
        net = fcn.fcn_scenes(channels=4, skips=skips).eval()
        with pytest.raises(ValueError, match=r"FCN needs H and W to be multiples of 8, got 100x100 "
                                             r"\(crop or pad the images to 96x96 or 104x104\)"):
            net(torch.zeros(1, 1, 100, 100))
        with pytest.raises(ValueError, match="1-channel images, got 3 channels"):
            net(torch.zeros(1, 3, 96, 96))
        with pytest.raises(ValueError, match="at least 8x8"):
            net(torch.zeros(1, 1, 0, 8))


def test_segmentation_loss_takes_the_scenes_uint8_masks():
    torch.manual_seed(0)
    model = fcn.fcn_scenes(channels=4)
    x, masks = torch.rand(2, 1, 32, 32), torch.randint(0, 11, (2, 32, 32))
    loss, parts = fcn.segmentation_loss(model, (x, {"masks": masks.to(torch.uint8)}))
    logits = model(x)
    torch.testing.assert_close(loss, F.cross_entropy(logits, masks))
    torch.testing.assert_close(parts["pixel_acc"], (logits.argmax(1) == masks).float().mean())


def test_segmentation_loss_ignores_pixels_and_an_all_ignored_batch_is_zero_not_nan():
    torch.manual_seed(0)
    model = fcn.fcn_scenes(channels=4)
    x, masks = torch.rand(2, 1, 32, 32), torch.randint(0, 11, (2, 32, 32))
    masks[:, :16] = 255
    loss, parts = fcn.segmentation_loss(model, (x, masks))
    logits = model(x)
    torch.testing.assert_close(loss, F.cross_entropy(logits, masks, ignore_index=255))
    torch.testing.assert_close(parts["pixel_acc"], (logits.argmax(1) == masks)[masks != 255].float().mean())
    loss, parts = fcn.segmentation_loss(model, (x, torch.full_like(masks, 255)))
    loss.backward()
    assert loss.item() == 0 and parts["pixel_acc"].item() == 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("factor", [1, 2, 3, 5, 8])
def test_upsample_multiplies_the_size_exactly_for_any_factor(factor):
    for mode in ("transposed", "resize"):
        assert fcn.upsample(2, factor, mode)(torch.zeros(1, 2, 4, 5)).shape == (1, 2, 4 * factor, 5 * factor)
    x = torch.arange(16.0).view(1, 1, 4, 4)  # and the transposed one starts as bilinear interpolation
    inner = (..., slice(factor, -factor), slice(factor, -factor))  # the border is padded differently
    bilinear = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    torch.testing.assert_close(fcn.upsample(1, factor)(x)[inner], bilinear[inner])


def test_upsample_refuses_a_factor_that_is_not_a_positive_integer():
    for factor in (0, -2, 1.5):
        with pytest.raises(ValueError, match=rf"factor must be a positive integer, got {factor!r}"):
            fcn.upsample(2, factor)


def test_convolutionalize_names_the_sizes_that_disagree():
    message = r"reads 1000 features, but in_channels \* kernel_size\*\*2 = 10 \* 3\*\*2 = 90"
    with pytest.raises(ValueError, match=message):
        fcn.convolutionalize(nn.Linear(1000, 4), 10, 3)


def test_yolo_loss_refuses_images_of_another_size():
    model = yolo.yolo_scenes(channels=4)
    with pytest.raises(ValueError, match=r"loss_fn\(image_size=96\) got 128x128 images: make it with the "
                                         r"images' size, loss_fn\(128\)"):
        yolo.loss_fn(96)(model, (torch.rand(4, 1, 128, 128), fake_targets(size=128)))


def test_yolo_refuses_degenerate_target_boxes():
    model = yolo.yolo_scenes(channels=4)
    t = fake_targets()
    t["boxes"][2, 1] = torch.tensor([50.0, 10.0, 30.0, 40.0])  # x2 < x1
    message = r"x2 > x1 and y2 > y1 .*got \[50.0, 10.0, 30.0, 40.0\] for object 1 of image 2"
    with pytest.raises(ValueError, match=message):
        yolo.loss_fn(96)(model, (torch.rand(4, 1, 96, 96), t))
    t["boxes"][2, 1] = torch.tensor([30.0, 10.0, 50.0, 10.0])  # zero height, as torchvision refuses
    with pytest.raises(ValueError, match="for object 1 of image 2"):
        yolo.loss_fn(96)(model, (torch.rand(4, 1, 96, 96), t))


def test_yolo_checks_its_input():
    with pytest.raises(ValueError, match="YOLO was built for 1-channel images, got 3 channels"):
        yolo.yolo_scenes(channels=4)(torch.zeros(1, 3, 96, 96))
    with pytest.raises(ValueError, match="YOLO needs images of at least 8x8, got 4x4"):
        yolo.yolo_scenes(channels=4)(torch.zeros(1, 1, 4, 4))


def page_faster_rcnn(num_classes=10, in_channels=1, size=96):
    """The builder as 06_detection_segmentation/04_faster_rcnn defined it before it moved to cnnlib."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign
    backbone = yolo.yolo_scenes(in_channels=in_channels).features
    backbone.out_channels = 128
    return FasterRCNN(
        backbone, num_classes=None, min_size=size, max_size=size,
        image_mean=[0.0] * in_channels, image_std=[1.0] * in_channels,
        rpn_anchor_generator=AnchorGenerator(sizes=((16, 32, 48),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(128 * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, num_classes + 1),
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=200,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128, box_batch_size_per_image=64)


def detection_scenes(n=2, size=96):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, size, size, generator=g)
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 40.0, 50.0], [50.0, 20.0, 80.0, 60.0]]),
                "labels": torch.tensor([4, 8])} for _ in range(n)]
    return x, targets


def test_faster_rcnn_scenes_is_the_page_model_from_one_seed():
    """Same layers, same starting weights from one seed: the page's stored run stays reproducible."""
    for args in [(), (3, 3, 64)]:
        torch.manual_seed(0)
        ours = models.faster_rcnn_scenes(*args).state_dict()
        torch.manual_seed(0)
        page = page_faster_rcnn(*args).state_dict()
        assert list(ours) == list(page) and all(torch.equal(ours[k], page[k]) for k in ours)


def test_faster_rcnn_reads_its_channels_from_the_backbone():
    torch.manual_seed(0)
    model = models.faster_rcnn_scenes(channels=8)  # a 64-channel backbone: 128 hard-coded would not fit
    assert model.backbone.out_channels == 64
    assert model.roi_heads.box_head.fc6.in_features == 64 * 7 * 7
    x, targets = detection_scenes()
    losses = model.train()(list(x), targets)
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        assert len(model.eval()(list(x))) == 2


def test_faster_rcnn_boxes_stay_float32_under_bfloat16_autocast():
    """torchvision makes anchors and decodes proposals in the features' dtype: in bfloat16 a 64-128 px
    coordinate is rounded to 0.5 px. The scenes' model switches autocast off inside itself."""
    torch.manual_seed(0)
    model = models.faster_rcnn_scenes().eval()
    x, targets = detection_scenes()
    anchor_dtypes = []
    model.rpn.anchor_generator.register_forward_hook(lambda m, i, out: anchor_dtypes.append(out[0].dtype))
    with torch.no_grad():
        expected = model(list(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(list(x))
    assert anchor_dtypes == [torch.float32, torch.float32]
    for e, g in zip(expected, got):
        assert g["boxes"].dtype == torch.float32
        torch.testing.assert_close(g["boxes"], e["boxes"], rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.train()(list(x), targets)
    assert all(v.dtype == torch.float32 for v in losses.values())


def test_grid_targets_keep_the_later_object_of_a_shared_cell_box_and_label_together():
    boxes = torch.tensor([[[10.0, 10, 20, 20], [11, 11, 19, 19], [50, 50, 60, 60]]])   # first two: one cell
    labels = torch.tensor([[3, 7, 5]])
    has, box, label = yolo.grid_targets(boxes, labels, 6, 96)   # 16-px cells
    assert has.sum() == 2
    assert label[0, 0, 0] == 7 and torch.equal(box[0, 0, 0], boxes[0, 1])     # the later one, whole
    assert label[0, 3, 3] == 5 and torch.equal(box[0, 3, 3], boxes[0, 2])


def test_faster_rcnn_detections_number_classes_as_the_scenes():
    seen = []

    def detector(images):   # torchvision's detectors take a list of images; class 0 is background
        seen.append(type(images))
        return [{"boxes": torch.zeros(2, 4), "scores": torch.tensor([0.9, 0.2]),
                 "labels": torch.tensor([1, 10])} for _ in images]

    out = rcnn.detections(detector, torch.zeros(3, 1, 96, 96))
    assert seen == [list] and len(out) == 3
    assert torch.equal(out[0]["labels"], torch.tensor([0, 9]))   # the scenes' digits 0 and 9


def test_boundary_band_matches_a_scipy_dilation_of_the_class_edges():
    from scipy import ndimage
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(3, 20, 20, dtype=torch.uint8)
    masks[:, 4:12, 5:15] = 3
    masks[1, 8:18, 2:9] = 7
    masks[2, 0:3, :] = 255                          # ignored rows
    masks[0, 15:19, 15:19] = torch.randint(1, 4, (4, 4), generator=g, dtype=torch.uint8)
    for width in (0, 1, 2):
        band = fcn.boundary_band(masks, width)
        for m, b in zip(masks.numpy().astype(int), band.numpy()):
            neighbours = np.stack([np.roll(np.pad(m, 1, mode="edge"), (dy, dx), (0, 1))[1:-1, 1:-1]
                                   for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
            edge = (neighbours != m).any(0)
            expected = ndimage.binary_dilation(edge, np.ones((3, 3)), iterations=width) if width else edge
            assert np.array_equal(b, expected & (m != 255))


def test_segmentation_scores_are_perfect_for_the_truth_and_lower_for_a_coarse_copy():
    masks = torch.zeros(4, 16, 16, dtype=torch.uint8)
    masks[:, 3:11, 4:9] = 2
    masks[:, 9:14, 10:15] = 1

    class Oracle(nn.Module):   # answers with the true masks, or an 8x coarser copy of them
        def __init__(self, coarse):
            super().__init__()
            self.coarse, self.p = coarse, nn.Parameter(torch.zeros(()))

        def forward(self, x):
            m = masks[: len(x)].long()
            if self.coarse:
                m = F.interpolate(m[:, None].float()[..., ::8, ::8], scale_factor=8, mode="nearest")[:, 0].long()
            return F.one_hot(m, 3).permute(0, 3, 1, 2).float()

    loader = [(torch.zeros(4, 1, 16, 16), {"masks": masks})]
    exact = fcn.segmentation_scores(Oracle(False), loader, 3)
    coarse = fcn.segmentation_scores(Oracle(True), loader, 3)
    assert exact == {"mean_iou": 1.0, "boundary_acc": 1.0}
    assert coarse["boundary_acc"] < 0.9 and coarse["mean_iou"] < 1.0
