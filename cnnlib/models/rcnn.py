"""Faster R-CNN (Ren et al., 2015) for the digit scenes, put together from torchvision's parts.

Taught in chapters/06_detection_segmentation/04_faster_rcnn.ipynb. The backbone is the YOLO-style
detector's convolutions (``yolo.yolo_scenes``, stride 8, no pretrained weights); the anchors are
scaled to the digits (16, 32 and 48 pixels, ratios 1:2, 1:1, 2:1: 9 per position); RoI align
cuts 7 x 7 features per proposal; a box head of two small dense layers gives num_classes + 1
scores (torchvision keeps class 0 for the background) and 4 offsets per class. torchvision
normalises and resizes the images itself; a scene of ``size`` pixels is left at its size.

The model always runs in float32, also under autocast: torchvision makes the anchors in the
feature maps' dtype, decodes the proposals in the regression output's and casts the true boxes
to the proposals' (anchor_utils.py, _utils.BoxCoder, roi_heads.py), and bfloat16's 8-bit
mantissa rounds coordinates of 64-128 px to 0.5 px. The backbone is small; the time goes
into the per-image work around it.
"""
import torch
import torch.nn as nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from . import yolo
from ._registry import register


class Float32FasterRCNN(FasterRCNN):
    """torchvision's FasterRCNN with autocast switched off inside it (see the module note)."""

    def forward(self, images, targets=None):
        device_type = images[0].device.type if len(images) else "cpu"
        with torch.autocast(device_type, enabled=False):
            return super().forward([image.float() for image in images], targets)


def out_channels(backbone):
    """The channels of a backbone's last feature map: those of its last convolution."""
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the backbone has no convolution to read its output channels from")
    return convs[-1].out_channels


@register((1, 96, 96))
def faster_rcnn_scenes(num_classes=10, in_channels=1, size=96,
                       channels=16):
    """Faster R-CNN for `size` x `size` scenes of num_classes digits (or
    classes) on the YOLO backbone."""
    # The whole YOLO detector is built and its head dropped: the random
    # draws stay those of the page's stored run, so one seed gives the same
    # starting weights.
    backbone = yolo.yolo_scenes(in_channels=in_channels,
                                channels=channels).features
    backbone.out_channels = out_channels(backbone)
    return Float32FasterRCNN(
        backbone, num_classes=None, min_size=size, max_size=size,
        image_mean=[0.0] * in_channels, image_std=[1.0] * in_channels,
        rpn_anchor_generator=AnchorGenerator(
            sizes=((16, 32, 48),), aspect_ratios=((0.5, 1.0, 2.0),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=7,
                                        sampling_ratio=2),
        box_head=TwoMLPHead(backbone.out_channels * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, num_classes + 1),
        rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=200,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
        rpn_batch_size_per_image=128, box_batch_size_per_image=64)


def detections(model, images):
    """The detector's boxes, scores and labels per image, in the scenes' classes: torchvision's
    detectors number the background 0, so class k of the scenes is their k + 1."""
    return [{"boxes": out["boxes"], "scores": out["scores"], "labels": out["labels"] - 1}
            for out in model(list(images))]
