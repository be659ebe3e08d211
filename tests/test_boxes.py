"""cnnlib.boxes against torchvision.ops on random inputs."""
import pytest
import torch
import torchvision.ops as ops
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.rpn import RPNHead

from cnnlib import boxes


def random_boxes(n, size=100.0, generator=None):
    xy = torch.rand(n, 2, generator=generator) * size
    wh = torch.rand(n, 2, generator=generator) * size / 2 + 1
    return torch.cat([xy, xy + wh], dim=1)


@pytest.fixture
def g():
    return torch.Generator().manual_seed(0)


def test_formats_round_trip(g):
    b = random_boxes(50, generator=g)
    assert torch.allclose(boxes.xyxy_to_cxcywh(b), ops.box_convert(b, "xyxy", "cxcywh"))
    assert torch.allclose(boxes.cxcywh_to_xyxy(boxes.xyxy_to_cxcywh(b)), b, atol=1e-5)


def test_iou_corner_and_centre(g):
    a, b = random_boxes(30, generator=g), random_boxes(40, generator=g)
    expected = ops.box_iou(a, b)
    assert torch.allclose(boxes.box_iou(a, b), expected, atol=1e-6)
    ca, cb = ops.box_convert(a, "xyxy", "cxcywh"), ops.box_convert(b, "xyxy", "cxcywh")
    assert torch.allclose(boxes.box_iou_cxcywh(ca, cb), expected, atol=1e-5)
    assert torch.allclose(boxes.box_iou(a, a).diagonal(), torch.ones(30))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_nms(g, threshold):
    b = random_boxes(200, size=60, generator=g)
    s = torch.rand(200, generator=g)
    assert torch.equal(boxes.nms(b, s, threshold), ops.nms(b, s, threshold))
    c = torch.randint(0, 3, (200,), generator=g)
    assert torch.equal(boxes.batched_nms(b, s, c, threshold), ops.batched_nms(b, s, c, threshold))


def random_rois(k, n_images, size, generator):
    idx = torch.randint(0, n_images, (k, 1), generator=generator).float()
    return torch.cat([idx, random_boxes(k, size, generator) - size / 8], dim=1)


@pytest.mark.parametrize("scale,out", [(1.0, 3), (0.25, (2, 4)), (1 / 16, 7)])
def test_roi_pool(g, scale, out):
    x = torch.randn(2, 3, 20, 24, generator=g)
    rois = random_rois(25, 2, 20 / scale, g)
    assert torch.allclose(boxes.roi_pool(x, rois, out, scale), ops.roi_pool(x, rois, out, scale))


@pytest.mark.parametrize("sampling", [-1, 2])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("scale,out", [(1.0, 3), (0.25, (2, 4))])
def test_roi_align(g, sampling, aligned, scale, out):
    x = torch.randn(2, 3, 20, 24, generator=g)
    rois = random_rois(25, 2, 20 / scale, g)
    mine = boxes.roi_align(x, rois, out, scale, sampling, aligned)
    theirs = ops.roi_align(x, rois, out, scale, sampling, aligned)
    assert torch.allclose(mine, theirs, atol=1e-5)


def test_anchors_scales_ratios_and_positions():
    base = boxes.base_anchors()
    w, h = base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]
    assert torch.allclose((w * h).sqrt(), torch.tensor([128., 256, 512] * 3))
    assert torch.allclose(h / w, torch.tensor([0.5] * 3 + [1.0] * 3 + [2.0] * 3))
    a = boxes.anchors((3, 5), stride=16)
    assert a.shape == (3 * 5 * 9, 4)
    centres = boxes.xyxy_to_cxcywh(a)[:, :2].reshape(3, 5, 9, 2)
    assert torch.allclose(centres[2, 4, 0], torch.tensor([4.5 * 16, 2.5 * 16]))
    assert torch.allclose(centres.std(dim=2), torch.zeros(3, 5, 2), atol=1e-4)


def test_encode_decode_round_trip_and_torchvision(g):
    a, b = random_boxes(100, generator=g), random_boxes(100, generator=g)
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        t = boxes.encode(b, a, weights)
        assert torch.allclose(t, BoxCoder(weights).encode_single(b, a), atol=1e-5)
        assert torch.allclose(boxes.decode(t, a, weights), b, atol=1e-3)
    assert torch.allclose(boxes.encode(a, a), torch.zeros(100, 4), atol=1e-6)


def test_rpn_head_has_54_outputs_per_position():
    head = RPNHead(in_channels=32, num_anchors=9)
    logits, deltas = head([torch.zeros(1, 32, 5, 7)])
    assert logits[0].shape[1] + deltas[0].shape[1] == 9 * (4 + 1)
    # torchvision scores each anchor with one logit (sigmoid); the paper's two-way softmax has 2
    assert 9 * (4 + 2) == 54
