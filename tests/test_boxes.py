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


def test_rpn_head_has_one_logit_and_four_deltas_per_anchor():
    head = RPNHead(in_channels=32, num_anchors=9)
    logits, deltas = head([torch.zeros(1, 32, 5, 7)])
    # torchvision scores each anchor with one logit (sigmoid): 9 x (4 + 1) = 45 outputs a position,
    # where the paper's two-way softmax has 9 x (4 + 2) = 54
    assert logits[0].shape == (1, 9, 5, 7)
    assert deltas[0].shape == (1, 9 * 4, 5, 7)


# ---- ties and the edges (each failed before its fix) ----------------------------------------

def test_nms_keeps_what_torchvision_keeps_on_tied_scores(g):
    # identical boxes with equal scores: the first in index order survives, as in torchvision
    same = torch.tensor([[10.0, 10, 30, 30]]).repeat(20, 1)
    same[10:] += 100
    s = torch.ones(20)
    assert torch.equal(boxes.nms(same, s, 0.5), ops.nms(same, s, 0.5))
    # quantised scores: many ties among overlapping boxes
    b = random_boxes(400, size=60, generator=g)
    s = (torch.rand(400, generator=g) * 5).floor() / 5
    for threshold in (0.3, 0.5, 0.7):
        assert torch.equal(boxes.nms(b, s, threshold), ops.nms(b, s, threshold))


def test_nms_on_fp16_saturated_scores(g):
    b = random_boxes(300, size=60, generator=g)
    logits = torch.randn(300, generator=g) * 10
    s = torch.sigmoid(logits).half()             # many scores saturate to exactly 1 in fp16
    assert (s == 1).sum() > 50
    for threshold in (0.3, 0.5):  # torchvision's CPU kernel takes no fp16: compare on float32
        expected = ops.nms(b, s.float(), threshold)
        assert torch.equal(boxes.nms(b, s.float(), threshold), expected)
        assert torch.equal(boxes.nms(b, s, threshold), expected)


def per_class_nms(b, s, c, threshold):
    """The reference for any coordinates: torchvision's nms within each class separately."""
    keep = torch.cat([torch.where(c == k)[0][ops.nms(b[c == k], s[c == k], threshold)] for k in c.unique()])
    return keep.sort().values


def test_batched_nms_with_negative_coordinates(g):
    b = torch.tensor([[-50.0, -50, -10, -10], [-49, -50, -10, -11], [-50, -49, -11, -10]])
    s, c = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 1, 2])
    assert boxes.batched_nms(b, s, c, 0.5).tolist() == [0, 1, 2]
    # many boxes partly left of and above the origin, 5 classes
    b = random_boxes(1500, size=200, generator=g) - 120
    s = torch.rand(1500, generator=g)
    c = torch.randint(0, 5, (1500,), generator=g)
    mine = boxes.batched_nms(b, s, c, 0.5)
    assert torch.equal(mine.sort().values, per_class_nms(b, s, c, 0.5))
    assert torch.equal(s[mine], s[mine].sort(descending=True).values)
    # the same boxes moved right of the origin: exactly torchvision's batched_nms, order included
    shifted = b + 120
    assert torch.equal(boxes.batched_nms(shifted, s, c, 0.5), ops.batched_nms(shifted, s, c, 0.5))


def test_roi_align_float64_within_1e12_of_torchvision(g):
    x = torch.randn(2, 3, 20, 24, generator=g, dtype=torch.float64)
    rois = random_rois(25, 2, 40, g).double()
    for aligned in (False, True):
        for sampling in (-1, 2):
            mine = boxes.roi_align(x, rois, (3, 4), 0.5, sampling, aligned)
            theirs = ops.roi_align(x, rois, (3, 4), 0.5, sampling, aligned)
            assert mine.dtype == torch.float64
            assert (mine - theirs).abs().max() < 1e-12


DEGENERATE_ROIS = {
    "zero-area": [[0, 5.0, 5, 5, 5], [0, 3, 4, 3, 9]],
    "identical": [[1, 2.0, 3, 12, 14]] * 3,
    "inverted": [[0, 12.0, 14, 2, 3], [1, 10, 2, 4, 12]],
    "outside the map": [[0, -30.0, -30, -20, -20], [1, 40, 40, 60, 60], [0, -5, -5, 3, 30]],
    "sub-pixel": [[0, 4.2, 4.3, 4.6, 4.5]],
}


@pytest.mark.parametrize("case", sorted(DEGENERATE_ROIS))
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling", [-1, 0, 1, 2])
def test_roi_align_and_pool_on_degenerate_rois(case, aligned, sampling, g):
    x = torch.randn(2, 3, 20, 24, generator=g)
    rois = torch.tensor(DEGENERATE_ROIS[case])
    assert torch.allclose(boxes.roi_pool(x, rois, 3, 1.0), ops.roi_pool(x, rois, 3, 1.0))
    if case == "inverted" and aligned:
        # a negative size: torchvision fails ("cannot create std::vector larger than max_size()")
        # or samples a mirrored box; cnnlib refuses and names the RoI
        with pytest.raises(ValueError, match=r"x1 <= x2 and y1 <= y2, got RoI 0: \[0.0, 12.0, 14.0, 2.0, 3.0\]"):
            boxes.roi_align(x, rois, 3, 1.0, sampling, aligned)
        return
    mine = boxes.roi_align(x, rois, 3, 1.0, sampling, aligned)
    assert torch.allclose(mine, ops.roi_align(x, rois, 3, 1.0, sampling, aligned), atol=1e-5)


def test_empty_sets_match_torchvision():
    none, one = torch.zeros(0, 4), torch.tensor([[1.0, 1, 5, 5]])
    assert boxes.box_iou(none, one).shape == ops.box_iou(none, one).shape == (0, 1)
    assert boxes.nms(none, torch.zeros(0), 0.5).tolist() == ops.nms(none, torch.zeros(0), 0.5).tolist() == []
    empty_classes = torch.zeros(0, dtype=torch.int64)
    assert boxes.batched_nms(none, torch.zeros(0), empty_classes, 0.5).tolist() == []
    x = torch.randn(1, 2, 8, 8)
    assert boxes.roi_align(x, torch.zeros(0, 5), 2).shape == ops.roi_align(x, torch.zeros(0, 5), 2).shape
    assert boxes.roi_pool(x, torch.zeros(0, 5), 2).shape == ops.roi_pool(x, torch.zeros(0, 5), 2).shape


def test_nms_zero_area_identical_and_threshold_boxes():
    b = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 5], [0, 0, 10, 5], [20, 20, 20, 30]])
    s = torch.tensor([0.5, 0.9, 0.8, 0.7, 0.6])
    for threshold in (0.0, 0.5, 0.99):  # [0, 0, 10, 5] has IoU exactly 0.5 with the first two
        assert torch.equal(boxes.nms(b, s, threshold), ops.nms(b, s, threshold))


def test_box_iou_pairs_is_the_diagonal_of_box_iou(g):
    a, b = random_boxes(60, generator=g), random_boxes(60, generator=g)
    b[:10] = a[:10]                                   # some identical pairs
    assert torch.allclose(boxes.box_iou_pairs(a, b), ops.box_iou(a, b).diagonal(), atol=1e-6)
    # any leading shape, as YOLO's (N, S, S, B, 4) boxes
    grid_a, grid_b = a.reshape(3, 4, 5, 4), b.reshape(3, 4, 5, 4)
    assert torch.equal(boxes.box_iou_pairs(grid_a, grid_b), boxes.box_iou_pairs(a, b).reshape(3, 4, 5))
    # two empty boxes (YOLO's cells without an object) overlap by 0, not 0 / 0
    empty = torch.zeros(2, 4)
    assert ops.box_iou(empty, empty).diagonal().isnan().all()
    assert boxes.box_iou_pairs(empty, empty).tolist() == [0.0, 0.0]


def test_yolo_uses_the_one_elementwise_iou():
    from cnnlib.models import yolo
    assert not hasattr(yolo, "_paired_iou")


def test_soft_nms_decays_only_boxes_at_or_above_the_threshold_by_one_minus_iou():
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [0, 0, 10, 8], [50, 50, 60, 60]])
    s = torch.tensor([0.9, 0.8, 0.7, 0.6])
    out = boxes.soft_nms(b, s, iou_threshold=0.3)
    # box 0 first: box 1 has IoU 1/3 >= 0.3 -> 0.8 * 2/3; box 2 has IoU 0.8 -> 0.7 * 0.2; then
    # box 3 (0.6) overlaps nothing; then box 1: IoU(1, 2) = 40 / 140 < 0.3 leaves box 2 alone
    expected = torch.tensor([0.9, 0.8 * 2 / 3, 0.7 * 0.2, 0.6])
    assert torch.allclose(out, expected) and torch.equal(s, torch.tensor([0.9, 0.8, 0.7, 0.6]))
    untouched = boxes.soft_nms(b, s, iou_threshold=0.9)   # no pair overlaps by 0.9
    assert torch.equal(untouched, s)
