"""Boxes from scratch: formats, IoU, non-maximum suppression, RoI pooling and RoI align,
anchors, the (tx, ty, tw, th) offsets of Faster R-CNN (chapter 6, pages 1 and 2), and the
average precision that scores a detector (chapter 6, the YOLO page).

Every function follows the conventions of ``torchvision.ops`` (tests/test_boxes.py checks
each against it on random inputs):

- A box is ``(x1, y1, x2, y2)`` in pixels ("corner" format, ``xyxy``), its width ``x2 - x1``;
  ``(cx, cy, w, h)`` is the "centre" format (``cxcywh``).
- RoIs for pooling are rows ``(batch_index, x1, y1, x2, y2)`` in input-image pixels;
  ``spatial_scale`` maps them onto the feature map (1/16 for a backbone of stride 16).
"""
import math

import numpy as np
import torch


# ---- formats and IoU -------------------------------------------------------------------------

def cxcywh_to_xyxy(boxes):
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def xyxy_to_cxcywh(boxes):
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def box_area(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a, b):
    """IoU of every box of a (N, 4) with every box of b (M, 4), corner
    format: (N, M)."""
    top_left = torch.max(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / union


def box_iou_pairs(a, b):
    """IoU of a[i] with b[i] only, pair by pair: boxes (..., 4) of the same shape -> (...).
    The diagonal of box_iou(a, b) without the (N, M) matrix; two empty boxes give 0, not 0 / 0
    (YOLO compares every cell's boxes with a target that is all zeros where there is no object)."""
    wh = (torch.min(a[..., 2:], b[..., 2:]) - torch.max(a[..., :2], b[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    return inter / torch.where(union > 0, union, 1)


def box_iou_cxcywh(a, b):
    """The same IoU for boxes in centre format (cx, cy, w, h)."""
    return box_iou(cxcywh_to_xyxy(a), cxcywh_to_xyxy(b))


# ---- non-maximum suppression ---------------------------------------------------------------

def nms(boxes, scores, iou_threshold):
    """Greedy NMS: keep the best box, drop those overlapping it by more than
    iou_threshold, repeat. Returns the indices kept, best score first (as
    torchvision.ops.nms). Equal scores keep their index order (a stable
    sort, as torchvision's): saturated or fp16 scores tie often, and an
    unstable sort would keep other boxes than the library."""
    order = scores.argsort(descending=True, stable=True)
    iou = box_iou(boxes, boxes)
    suppressed = torch.zeros(len(boxes), dtype=torch.bool,
                             device=boxes.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def batched_nms(boxes, scores, classes, iou_threshold):
    """NMS within each class only: shift each class's boxes far away from the others.
    The shift counts from the lowest coordinate (torchvision's counts from 0, which lets
    classes of boxes left of or above the origin overlap); for boxes at or right of the
    origin both are the same sums, so the same boxes are kept."""
    if len(boxes) == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    low = boxes.min().clamp(max=0)
    offsets = classes.to(boxes) * (boxes.max() - low + 1)
    return nms(boxes - low + offsets[:, None], scores, iou_threshold)


def soft_nms(boxes, scores, iou_threshold=0.3):
    """Linear soft-NMS (Bodla et al., 2017): the scores after decaying, in the input's order.

    Take the box with the best remaining score; multiply the score of every other remaining box
    whose IoU with it is at least iou_threshold (the paper's N_t) by 1 - IoU; repeat. Nothing is
    removed: a detector then keeps the boxes whose decayed score passes its cut."""
    scores, left = scores.clone(), torch.ones(len(boxes), dtype=torch.bool, device=boxes.device)
    iou = box_iou(boxes, boxes)
    for _ in range(len(boxes)):
        best = torch.where(left, scores, -math.inf).argmax()
        left[best] = False
        close = left & (iou[best] >= iou_threshold)
        scores[close] *= 1 - iou[best, close]
    return scores


# ---- RoI pooling and RoI align -------------------------------------------------------------

def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _round(x):  # C's round(): halves away from zero, as torchvision's kernels use
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def roi_pool(features, rois, output_size, spatial_scale=1.0):
    """Fast R-CNN's RoI max pooling: snap each RoI to the feature grid, cut it into
    output_size bins (also snapped: rows floor(i * h / out) .. ceil((i + 1) * h / out)) and take
    the maximum of each. features (N, C, H, W), rois (K, 5) -> (K, C, out_h, out_w)."""
    out_h, out_w = _pair(output_size)
    _, channels, height, width = features.shape
    result = features.new_zeros(len(rois), channels, out_h, out_w)
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        scale = np.float32(spatial_scale)
        x1, y1 = _round(np.float32(x1) * scale), _round(np.float32(y1) * scale)
        x2, y2 = _round(np.float32(x2) * scale), _round(np.float32(y2) * scale)
        roi_h, roi_w = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
        bin_h, bin_w = np.float32(roi_h) / np.float32(out_h), np.float32(roi_w) / np.float32(out_w)
        for i in range(out_h):  # float32 arithmetic, as the kernel does, so the bins agree exactly
            top = min(max(math.floor(np.float32(i) * bin_h) + y1, 0), height)
            bottom = min(max(math.ceil(np.float32(i + 1) * bin_h) + y1, 0), height)
            for j in range(out_w):
                left = min(max(math.floor(np.float32(j) * bin_w) + x1, 0), width)
                right = min(max(math.ceil(np.float32(j + 1) * bin_w) + x1, 0), width)
                if bottom > top and right > left:  # an empty bin stays 0
                    result[k, :, i, j] = features[int(b), :, top:bottom, left:right].amax(dim=(1, 2))
    return result


def bilinear(feature, y, x):
    """Values of feature (C, H, W) at real-valued points y, x (same shape S): (C, *S).
    A point more than one pixel outside the map reads 0; closer ones read the border."""
    _, height, width = feature.shape
    outside = (y < -1) | (y > height) | (x < -1) | (x > width)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y0, x0 = y.floor().long().clamp(max=height - 1), x.floor().long().clamp(max=width - 1)
    y1, x1 = (y0 + 1).clamp(max=height - 1), (x0 + 1).clamp(max=width - 1)
    y = torch.where(y0 >= height - 1, y0.to(y), y)
    x = torch.where(x0 >= width - 1, x0.to(x), x)
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    value = (hy * hx * feature[:, y0, x0] + hy * lx * feature[:, y0, x1]
             + ly * hx * feature[:, y1, x0] + ly * lx * feature[:, y1, x1])
    return torch.where(outside, torch.zeros_like(value), value)


def _sample_points(start, bin_size, bins, grid, dtype):
    """(bins, grid) coordinates: grid evenly spaced points inside each of the bins."""
    inside = (torch.arange(grid, dtype=dtype)[None] + 0.5) / grid
    return start + bin_size * (torch.arange(bins, dtype=dtype)[:, None] + inside)


def roi_align(features, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """Mask R-CNN's RoI align: no snapping; each bin is the mean of a few bilinearly
    interpolated points (sampling_ratio per side, or ceil(bin size) when it is -1).
    aligned=True shifts the box by half a pixel so that pixel centres line up, and refuses an
    inverted box (x2 < x1 or y2 < y1: a negative size, on which torchvision's kernel fails or
    samples a mirrored box). Sample points are computed in the features' precision."""
    out_h, out_w = _pair(output_size)
    dtype = torch.promote_types(features.dtype, torch.float32)
    offset = 0.5 if aligned else 0.0
    result = []
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        if aligned and (x2 < x1 or y2 < y1):
            raise ValueError(f"roi_align(aligned=True) needs x1 <= x2 and y1 <= y2, got RoI {k}: "
                             f"{rois[k].tolist()}")
        x1, y1 = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        roi_w, roi_h = x2 * spatial_scale - offset - x1, y2 * spatial_scale - offset - y1
        if not aligned:  # the original kernel forces at least a 1x1 RoI
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / out_h)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / out_w)
        ys, xs = _sample_points(y1, bin_h, out_h, grid_h, dtype), _sample_points(x1, bin_w, out_w, grid_w, dtype)
        y = ys.reshape(out_h, 1, grid_h, 1).expand(out_h, out_w, grid_h, grid_w)
        x = xs.reshape(1, out_w, 1, grid_w).expand(out_h, out_w, grid_h, grid_w)
        values = bilinear(features[int(b)], y.to(features), x.to(features))
        result.append(values.sum(dim=(-2, -1)) / max(grid_h * grid_w, 1))
    if not result:
        return features.new_zeros(0, features.shape[1], out_h, out_w)
    return torch.stack(result)


# ---- anchors and box offsets ---------------------------------------------------------------

def base_anchors(scales=(128, 256, 512), ratios=(0.5, 1.0, 2.0)):
    """One anchor per (ratio, scale), centred on (0, 0): area scale^2, height / width = ratio.
    Returned (len(ratios) * len(scales), 4) in corner format, ratios varying slowest."""
    rows = []
    for r in ratios:
        for s in scales:
            w, h = s / math.sqrt(r), s * math.sqrt(r)
            rows.append([-w / 2, -h / 2, w / 2, h / 2])
    return torch.tensor(rows)


def anchors(feature_size, stride, scales=(128, 256, 512), ratios=(0.5, 1.0, 2.0)):
    """Every base anchor at every position of a feature map of feature_size (h, w), centred
    on the pixel (i + 0.5) * stride: (h * w * A, 4), the A anchors of one position together."""
    h, w = _pair(feature_size)
    cy = (torch.arange(h) + 0.5) * stride
    cx = (torch.arange(w) + 0.5) * stride
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")
    centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
    return (centres + base_anchors(scales, ratios)[None]).reshape(-1, 4)


def encode(boxes, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """Offsets of boxes from anchors (both corner format), as R-CNN regresses them:
    tx = (x - xa) / wa, ty = (y - ya) / ha, tw = log(w / wa), th = log(h / ha),
    on centres (x, y) and sizes (w, h); each multiplied by its weight."""
    x, y, w, h = xyxy_to_cxcywh(boxes).unbind(-1)
    xa, ya, wa, ha = xyxy_to_cxcywh(anchors).unbind(-1)
    wx, wy, ww, wh = weights
    return torch.stack([wx * (x - xa) / wa, wy * (y - ya) / ha,
                        ww * torch.log(w / wa), wh * torch.log(h / ha)], dim=-1)


def decode(offsets, anchors, weights=(1.0, 1.0, 1.0, 1.0)):
    """The inverse of encode: boxes (corner format) from offsets and their anchors."""
    xa, ya, wa, ha = xyxy_to_cxcywh(anchors).unbind(-1)
    tx, ty, tw, th = (offsets / offsets.new_tensor(weights)).unbind(-1)
    return cxcywh_to_xyxy(torch.stack([xa + tx * wa, ya + ty * ha,
                                       wa * torch.exp(tw), ha * torch.exp(th)], dim=-1))


# ---- precision, recall and average precision -----------------------------------------------

def _match(pred_boxes, true_boxes, iou_threshold):
    """Which detections (best score first) find a true box: each takes the unmatched true box
    it overlaps most, if that IoU reaches iou_threshold. A bool per detection."""
    hit = torch.zeros(len(pred_boxes), dtype=torch.bool)
    if len(pred_boxes) == 0 or len(true_boxes) == 0:
        return hit
    iou = box_iou(pred_boxes.double(), true_boxes.double())   # float64, as pycocotools
    matched = torch.zeros(len(true_boxes), dtype=torch.bool)
    for i in range(len(pred_boxes)):
        candidates = iou[i].masked_fill(matched, -1)
        j = int(candidates.argmax())
        if candidates[j] >= iou_threshold:
            matched[j] = hit[i] = True
    return hit


def pr_curve(predictions, truths, label, iou_threshold=0.5,
             max_detections=100):
    """Precision and recall after each detection of `label`, best score
    first, over all images.

    predictions: per image {"boxes", "scores", "labels"}; truths: per image
    {"boxes", "labels"}. As COCO's evaluation (pycocotools, which
    torchmetrics runs): an image contributes its max_detections best
    detections of the class, matched greedily within the image; equal scores
    keep their order (images in order, then detections as given: stable
    sorts)."""
    hits, scores, n_true = [], [], 0
    for p, t in zip(predictions, truths):
        true_boxes = t["boxes"][t["labels"] == label].cpu()
        n_true += len(true_boxes)
        mine = p["labels"] == label
        s, order = p["scores"][mine].cpu().sort(descending=True,
                                                 stable=True)
        b = p["boxes"][mine].cpu()[order][:max_detections]
        hits.append(_match(b, true_boxes, iou_threshold))
        scores.append(s[:max_detections])
    hits = torch.cat(hits)[torch.cat(scores).argsort(descending=True,
                                                      stable=True)]
    tp = hits.double().cumsum(0)
    return tp / torch.arange(1, len(tp) + 1), tp / max(n_true, 1)


def average_precision(precision, recall, points=101):
    """COCO's AP: the precision envelope (best precision at any recall
    >= r), read at `points` recalls from 0 to 1 (0 where the detector never
    reaches that recall)."""
    envelope = precision.flip(0).cummax(0).values.flip(0)
    # COCO's exact levels
    levels = torch.from_numpy(np.linspace(0, 1, points)).to(recall)
    # the first detection reaching each level
    first = torch.searchsorted(recall, levels)
    reached = first < len(recall)
    return envelope[first[reached]].sum().item() / points


def mean_average_precision(predictions, truths, iou_thresholds=(0.5,), max_detections=100):
    """AP averaged over the IoU thresholds and over the classes that have a true box (as
    COCO, which leaves out classes seen only among the detections): (mAP, {label: AP})."""
    labels = sorted(set(torch.cat([t["labels"].cpu() for t in truths]).tolist()))
    per_class = {}
    for label in labels:
        aps = [average_precision(*pr_curve(predictions, truths, label, t, max_detections))
               for t in iou_thresholds]
        per_class[label] = sum(aps) / len(aps)
    return sum(per_class.values()) / max(len(per_class), 1), per_class
