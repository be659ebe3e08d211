"""A YOLO-style one-stage detector (Redmon et al., 2016), its loss and its decoding.

The image is cut into an S x S grid; each cell predicts B boxes, each (x, y, w, h, confidence),
and one set of C class scores, so the output is S x S x (B*5 + C): 7 x 7 x 30 for PASCAL VOC
(S = 7, B = 2, C = 20). Within a box, x and y are the centre's offset inside its cell and
w and h the square roots of the box's width and height as fractions of the image (the paper's
choice: an error on a small box then costs more than the same error on a large one); all
five go through a sigmoid here, the class scores are logits.

- yolo_scenes(): a small fully convolutional backbone of stride 8 (a 12 x 12 grid on the
  96 x 96 scenes of cnnlib.scenes).
- yolo_voc():    the paper's input and output (448 x 448 x 3 in, 7 x 7 x 30 out) on a narrow
  backbone of stride 64, to check the arithmetic, not to be trained here.

The loss follows the paper's sum of squared errors (lambda_coord = 5, lambda_noobj = 0.5, the
"responsible" box is the one of the cell's B boxes that overlaps the object best, its target
confidence that overlap), except for the classes, scored with cross-entropy instead of squared
error, which trains faster.
Taught in: chapters/06_detection_segmentation/03_yolo.ipynb.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import boxes as box_ops
from ._checks import check_input
from ._registry import register


def _conv(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(0.1))


class YOLO(nn.Module):
    def __init__(self, num_classes, boxes_per_cell=2, in_channels=1, stages=((16,), (32,), (64, 64), (128, 128))):
        """stages: the convolutions' widths of each stage; a 2x2 max pooling between stages,
        so the grid is the input size / 2^(len(stages) - 1)."""
        super().__init__()
        self.num_classes, self.boxes_per_cell = num_classes, boxes_per_cell
        self.in_channels, self.name = in_channels, "YOLO"
        self.min_size = 2 ** (len(stages) - 1)  # the grid's stride: one cell at least
        layers, c = [], in_channels
        for i, widths in enumerate(stages):
            if i:
                layers.append(nn.MaxPool2d(2))
            for w in widths:
                layers.append(_conv(c, w))
                c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, boxes_per_cell * 5 + num_classes, 1)

    def forward(self, x):
        """(N, C, H, W) -> (N, S, S, B*5 + C)."""
        check_input(x, model=self.name, channels=self.in_channels, min_size=self.min_size)
        return self.head(self.features(x)).permute(0, 2, 3, 1)

    def split(self, out):
        """Raw output -> (boxes (N, S, S, B, 5) after the sigmoid, class logits (N, S, S, C))."""
        b = self.boxes_per_cell
        return out[..., :5 * b].unflatten(-1, (b, 5)).sigmoid(), out[..., 5 * b:]


@register((1, 96, 96))
def yolo_scenes(num_classes=10, boxes_per_cell=2, in_channels=1, channels=16):
    """channels: the first stage's convolutions; each later stage doubles them."""
    w = channels
    return YOLO(num_classes, boxes_per_cell, in_channels, ((w,), (2 * w,), (4 * w, 4 * w), (8 * w, 8 * w)))


@register((3, 448, 448))
def yolo_voc(num_classes=20, boxes_per_cell=2, channels=8):
    """channels: the first stage's convolutions; later stages double them, as in yolo_scenes."""
    w = channels
    return YOLO(num_classes, boxes_per_cell, 3, ((w,), (w,), (2 * w,), (2 * w,), (4 * w,), (4 * w,), (8 * w,)))


# ---- from boxes to grid targets and back --------------------------------------------------

def cell_boxes(pred, image_size):
    """Predicted (N, S, S, B, 5) -> corner-format boxes (N, S, S, B, 4) in pixels."""
    s = pred.shape[1]
    cell = image_size / s
    j = torch.arange(s, device=pred.device).view(1, 1, s, 1)   # column
    i = torch.arange(s, device=pred.device).view(1, s, 1, 1)   # row
    cx = (j + pred[..., 0]) * cell
    cy = (i + pred[..., 1]) * cell
    w, h = pred[..., 2] ** 2 * image_size, pred[..., 3] ** 2 * image_size
    return box_ops.cxcywh_to_xyxy(torch.stack([cx, cy, w, h], dim=-1))


def grid_targets(boxes, labels, grid, image_size):
    """Padded boxes (N, K, 4) and labels (N, K) -> the cell of each object's centre:
    has_object (N, S, S) bool, box (N, S, S, 4) corner format, label (N, S, S).
    Two objects with their centre in one cell: the later one is kept (YOLO's known limit). The
    earlier ones are dropped before writing: with repeated indices, index_put's order is not
    defined on CUDA, and the box and the label could then come from different objects."""
    n = len(boxes)
    real = labels >= 0
    _refuse_degenerate(boxes, real)
    cxcy = (boxes[..., :2] + boxes[..., 2:]) / 2
    cell = (cxcy / (image_size / grid)).long().clamp(0, grid - 1)
    img = torch.arange(n, device=boxes.device)[:, None].expand_as(labels)
    img, cy, cx, box, label = img[real], cell[..., 1][real], cell[..., 0][real], boxes[real], labels[real]
    flat = (img * grid + cy) * grid + cx
    order = torch.arange(len(flat), device=boxes.device)
    last = torch.full((n * grid * grid,), -1, device=boxes.device).scatter_reduce(0, flat, order, "amax")
    kept = last[flat] == order                      # the last object of each cell
    idx = (img[kept], cy[kept], cx[kept])
    has_object = torch.zeros(n, grid, grid, dtype=torch.bool, device=boxes.device)
    target_box = boxes.new_zeros(n, grid, grid, 4)
    target_label = labels.new_zeros(n, grid, grid)
    has_object[idx] = True
    target_box[idx] = box[kept]
    target_label[idx] = label[kept]
    return has_object, target_box, target_label


def _refuse_degenerate(boxes, real):
    """torchvision's detectors' rule: every real box has a positive width and height."""
    bad = real & (boxes[..., 2:] <= boxes[..., :2]).any(-1)
    if bad.any():
        i, k = bad.nonzero()[0].tolist()
        raise ValueError(f"target boxes must have x2 > x1 and y2 > y1 (corner format), got "
                         f"{boxes[i, k].tolist()} for object {k} of image {i}")


def yolo_loss(model, out, target, image_size, lambda_coord=5.0,
              lambda_noobj=0.5):
    """The loss of a raw output against padded targets, per image:
    (total, {part: value})."""
    pred, class_logits = model.split(out.float())
    n, s = pred.shape[:2]
    has_object, tbox, tlabel = grid_targets(
        target["boxes"], target["labels"], s, image_size)
    pboxes = cell_boxes(pred, image_size)                 # (N, S, S, B, 4)
    # which of the B boxes is responsible, and its overlap
    with torch.no_grad():
        iou = box_ops.box_iou_pairs(
            pboxes, tbox[..., None, :].expand_as(pboxes))   # (N, S, S, B)
        best = iou.argmax(dim=-1, keepdim=True)
        responsible = (torch.zeros_like(iou, dtype=torch.bool)
                       .scatter_(-1, best, True) & has_object[..., None])
    # targets in the network's own terms: offsets in the cell and square
    # roots of the sizes
    cell = image_size / s
    cxcy = (tbox[..., :2] + tbox[..., 2:]) / 2
    offset = cxcy / cell - (cxcy / cell).floor().clamp(max=s - 1)
    sqrt_wh = (((tbox[..., 2:] - tbox[..., :2]) / image_size)
               .clamp(min=0).sqrt())
    t = (torch.cat([offset, sqrt_wh], dim=-1)[..., None, :]
         .expand_as(pred[..., :4]))
    coord = ((pred[..., :4] - t) ** 2).sum(-1)[responsible].sum()
    conf_obj = ((pred[..., 4] - iou) ** 2)[responsible].sum()
    conf_noobj = (pred[..., 4] ** 2)[~responsible].sum()
    cls = F.cross_entropy(class_logits[has_object], tlabel[has_object],
                          reduction="sum")
    parts = {"coord": lambda_coord * coord / n, "obj": conf_obj / n,
             "noobj": lambda_noobj * conf_noobj / n, "cls": cls / n}
    return sum(parts.values()), parts


def loss_fn(image_size):
    """A fit-ready loss_fn(model, (images, target dict))."""
    def detection_loss(model, batch):
        x, target = batch
        if tuple(x.shape[-2:]) != (image_size, image_size):  # the grid's cells would be the wrong size
            raise ValueError(f"loss_fn(image_size={image_size}) got {x.shape[-2]}x{x.shape[-1]} images: "
                             f"make it with the images' size, loss_fn({x.shape[-1]})")
        return yolo_loss(_unwrap(model), model(x), target, image_size)
    return detection_loss


def _unwrap(model):
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


@torch.no_grad()
def decode(model, out, image_size, score_threshold=0.05, iou_threshold=0.5, max_detections=100):
    """Raw output -> per image {"boxes", "scores", "labels"}: each box's score is its
    confidence times its cell's class probability, then NMS within each class."""
    pred, class_logits = _unwrap(model).split(out.float())
    pboxes = cell_boxes(pred, image_size).clamp(0, image_size)
    probs = class_logits.softmax(-1)
    score, label = probs.max(-1)                                    # (N, S, S)
    scores = pred[..., 4] * score[..., None]                        # (N, S, S, B)
    labels = label[..., None].expand_as(scores)
    results = []
    for b, s, c in zip(pboxes.flatten(1, 3), scores.flatten(1), labels.flatten(1)):
        keep = s > score_threshold
        b, s, c = b[keep], s[keep], c[keep]
        kept = box_ops.batched_nms(b, s, c, iou_threshold)[:max_detections]
        results.append({"boxes": b[kept], "scores": s[kept], "labels": c[kept]})
    return results
