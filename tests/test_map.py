"""cnnlib.boxes' from-scratch mean average precision against torchmetrics (pycocotools) on
generated detections: many images and classes, tied scores, empty images, a class with no
detections, a class with no true boxes, and an image with more detections than COCO keeps.

Two differences by design, so the comparisons set them aside:
- torchmetrics hands pycocotools its thresholds in float32 (``torch.linspace(...).tolist()``),
  so a recall of exactly 3/5 falls short of the level 0.6000000238 and that level reads a lower
  precision. cnnlib uses pycocotools' own levels, float64 ``np.linspace``; the tests give
  torchmetrics the same (``rec_thresholds=COCO_RECALLS``, ``iou_thresholds=COCO_IOUS``).
- pycocotools ignores a detection with a negative area (an inverted box, x2 < x1) when it
  matches nothing, through its area-range rule; cnnlib counts it as the false positive it is.
  The generated boxes are never inverted.
"""
import numpy as np
import pytest
import torch

from cnnlib import boxes

MeanAveragePrecision = pytest.importorskip("torchmetrics.detection").MeanAveragePrecision


COCO_RECALLS = np.linspace(0, 1, 101).tolist()    # pycocotools' defaults, float64
COCO_IOUS = np.linspace(0.5, 0.95, 10).tolist()


def random_boxes(n, g, size=100.0):
    xy = torch.rand(n, 2, generator=g) * size
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 40 + 4], dim=1)


def generated(n_images=80, seed=0):
    """Truths of classes 0..4; detections of classes 0..3 and 5: jittered copies of truths,
    duplicates and false positives, scores rounded to 0.1 so that many tie."""
    g = torch.Generator().manual_seed(seed)
    predictions, truths = [], []
    for i in range(n_images):
        empty = i % 10 == 0                       # no truths and no detections
        n = 0 if empty else int(torch.randint(0, 6, (1,), generator=g))
        true_boxes, true_labels = random_boxes(n, g), torch.randint(0, 5, (n,), generator=g)
        copies = true_boxes.repeat(2, 1) + torch.randn(2 * n, 4, generator=g) * 4
        copies = torch.cat([torch.minimum(copies[:, :2], copies[:, 2:]),  # never inverted (below)
                            torch.maximum(copies[:, :2], copies[:, 2:])], dim=1)
        m = 0 if empty else int(torch.randint(0, 4, (1,), generator=g))
        b = torch.cat([copies, random_boxes(m, g)])
        labels = torch.cat([true_labels.repeat(2), torch.randint(0, 6, (m,), generator=g)])
        keep = labels != 4                            # class 4 is never detected
        if i == 7:                                    # more than 100 detections of one class
            b = torch.cat([b, random_boxes(150, g)])
            labels = torch.cat([labels, torch.zeros(150, dtype=torch.int64)])
            keep = torch.cat([keep, torch.ones(150, dtype=torch.bool)])
        scores = (torch.rand(len(b), generator=g) * 10).round() / 10
        predictions.append({"boxes": b[keep], "scores": scores[keep], "labels": labels[keep]})
        truths.append({"boxes": true_boxes, "labels": true_labels})
    return predictions, truths


def torchmetrics_map(predictions, truths, **kwargs):
    metric = MeanAveragePrecision(class_metrics=True, rec_thresholds=COCO_RECALLS, **kwargs)
    metric.warn_on_many_detections = False
    metric.update(predictions, truths)
    return metric, metric.compute()


def test_generated_detections_have_what_the_test_is_about():
    predictions, truths = generated()
    scores = torch.cat([p["scores"] for p in predictions])
    assert len(scores) - len(scores.unique()) > 400                        # ties
    assert sum(len(p["boxes"]) == 0 and len(t["boxes"]) == 0 for p, t in zip(predictions, truths)) >= 5
    assert 4 in torch.cat([t["labels"] for t in truths]) and 4 not in torch.cat([p["labels"] for p in predictions])
    assert 5 in torch.cat([p["labels"] for p in predictions]) and 5 not in torch.cat([t["labels"] for t in truths])
    assert max(int((p["labels"] == 0).sum()) for p in predictions) > 100


@pytest.mark.parametrize("seed", [0, 1])
def test_map_at_05_equals_torchmetrics(seed):
    predictions, truths = generated(seed=seed)
    _, theirs = torchmetrics_map(predictions, truths, iou_thresholds=[0.5])
    mine, per_class = boxes.mean_average_precision(predictions, truths, iou_thresholds=[0.5])
    assert abs(mine - theirs["map"].item()) < 1e-6
    their_classes = dict(zip(theirs["classes"].tolist(), theirs["map_per_class"].tolist()))
    assert their_classes[5] == -1 and 5 not in per_class        # no true box: left out by both
    assert per_class[4] == 0 and their_classes[4] == 0          # never detected: AP 0
    for label, ap in per_class.items():
        assert abs(ap - their_classes[label]) < 1e-6, label


def test_coco_map_over_ten_thresholds_equals_torchmetrics():
    predictions, truths = generated(seed=2)
    _, theirs = torchmetrics_map(predictions, truths, iou_thresholds=COCO_IOUS)
    mine, _ = boxes.mean_average_precision(predictions, truths, iou_thresholds=COCO_IOUS)
    assert abs(mine - theirs["map"].item()) < 1e-6
    at_75, _ = boxes.mean_average_precision(predictions, truths, iou_thresholds=[0.75])
    assert abs(at_75 - theirs["map_75"].item()) < 1e-6


def test_tied_scores_are_ranked_in_image_order_as_coco_does():
    # two images, one box each; the hit in image 1 and the miss in image 0 score the same:
    # COCO ranks the miss first (stable order), so precision at the first rank is 0
    truths = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])},
              {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}]
    predictions = [{"boxes": torch.tensor([[50.0, 50, 60, 60]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([0])},
                   {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([0])}]
    precision, recall = boxes.pr_curve(predictions, truths, 0)
    assert precision.tolist() == [0.0, 0.5] and recall.tolist() == [0.0, 0.5]
    _, theirs = torchmetrics_map(predictions, truths, iou_thresholds=[0.5])
    assert abs(boxes.mean_average_precision(predictions, truths)[0] - theirs["map"].item()) < 1e-6


def test_no_detections_at_all_scores_zero_not_a_crash():
    truths = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([2])}]
    predictions = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}]
    assert boxes.mean_average_precision(predictions, truths) == (0.0, {2: 0.0})
    _, theirs = torchmetrics_map(predictions, truths, iou_thresholds=[0.5])
    assert theirs["map"].item() == 0
