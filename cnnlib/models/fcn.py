"""Fully convolutional networks for semantic segmentation (Long, Shelhamer and Darrell, 2015).

A classifier's dense layers are convolutions in disguise (``convolutionalize``): a dense layer
on a C x k x k feature map is a k x k convolution with C input and `out` output channels, the
same weights. Without the dense layers' fixed input size, the network takes any image and
answers with a map of class scores, coarser than the image by the backbone's stride. FCN
brings the map back to the image's size with learned upsampling (transposed convolutions,
started as bilinear interpolation) and adds finer maps from earlier layers (skip
connections: FCN-32s has none, FCN-16s one, FCN-8s two).

- fcn_scenes(): a small FCN of stride 8 for the 96 x 96 scenes of cnnlib.scenes, with skips
  from strides 4, 2 and 1 (FCN-8s stops at stride 8 on its stride-32 VGG; thin digit strokes
  need the full resolution) or none, and upsampling by transposed convolution or by
  resize-then-convolve (bilinear resize, then a 3x3 convolution: no checkerboard artefacts).
Taught in: chapters/06_detection_segmentation/05_fcn_segmentation.ipynb.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .._validate import positive_int
from ._checks import check_input
from ._registry import register


def convolutionalize(linear, in_channels, kernel_size):
    """The k x k convolution that computes `linear` on a (in_channels, k, k) map, same weights."""
    if linear.in_features != in_channels * kernel_size ** 2:
        raise ValueError(f"the linear layer reads {linear.in_features} features, but in_channels * kernel_size**2 "
                         f"= {in_channels} * {kernel_size}**2 = {in_channels * kernel_size ** 2}: give the "
                         "channels and side of the map it was trained on")
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, kernel_size, kernel_size))
        if linear.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def bilinear_kernel(channels, kernel_size):
    """Weights that make ConvTranspose2d(channels, channels, kernel_size, stride=kernel_size // 2)
    a bilinear interpolation, channel by channel (FCN's starting point for its upsampling)."""
    factor = (kernel_size + 1) // 2
    centre = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt = 1 - (og - centre).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt[:, None] * filt[None, :]
    return weight


def upsample(channels, factor, mode="transposed"):
    """x factor upsampling: a transposed convolution (kernel 2 * factor, one less for an odd
    factor, stride factor, padding factor // 2, started bilinear), so n pixels become exactly
    n * factor, or a bilinear resize followed by a 3x3 convolution."""
    positive_int("factor", factor)
    if mode == "transposed":
        kernel = 2 * factor - factor % 2  # (n - 1) * factor - 2 * (factor // 2) + kernel = n * factor
        up = nn.ConvTranspose2d(channels, channels, kernel, stride=factor, padding=factor // 2, bias=False)
        with torch.no_grad():
            up.weight.copy_(bilinear_kernel(channels, kernel))
        return up
    if mode == "resize":
        return nn.Sequential(nn.Upsample(scale_factor=factor, mode="bilinear", align_corners=False),
                             nn.Conv2d(channels, channels, 3, padding=1))
    raise ValueError(f"upsampling mode must be 'transposed' or 'resize', got {mode!r}")


def _block(c_in, c_out, convs=2):
    layers = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class FCN(nn.Module):
    def __init__(self, num_classes, in_channels=1, channels=16, skips=True, mode="transposed"):
        super().__init__()
        w = channels  # the first stage's; each later stage doubles them
        self.skips = skips
        self.in_channels, self.name, self.min_size = in_channels, "FCN", 8  # 8: the coarsest map's stride
        self.register_forward_pre_hook(_check_size)  # forward keeps to the paper's figure
        self.stage1 = _block(in_channels, w, 1)                                          # stride 1
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), _block(w, 2 * w))                   # stride 2
        self.stage4 = nn.Sequential(nn.MaxPool2d(2), _block(2 * w, 4 * w))               # stride 4
        self.stage8 = nn.Sequential(nn.MaxPool2d(2), _block(4 * w, 8 * w))               # stride 8
        self.score8 = nn.Conv2d(8 * w, num_classes, 1)
        if skips:  # as FCN-8s, one level further: score, upsample x2, add the finer layer's score
            self.score4 = nn.Conv2d(4 * w, num_classes, 1)
            self.score2 = nn.Conv2d(2 * w, num_classes, 1)
            self.score1 = nn.Conv2d(w, num_classes, 1)
            self.up8to4, self.up4to2 = upsample(num_classes, 2, mode), upsample(num_classes, 2, mode)
            self.up2to1 = upsample(num_classes, 2, mode)
        else:      # FCN-32s style: one x8 upsampling of the coarse score map
            self.up8to1 = upsample(num_classes, 8, mode)

    def forward(self, x):
        """(N, C, H, W) with H, W multiples of 8 -> class scores
        (N, num_classes, H, W)."""
        f1 = self.stage1(x)
        f2 = self.stage2(f1)
        f4 = self.stage4(f2)
        score = self.score8(self.stage8(f4))
        if not self.skips:
            return self.up8to1(score)
        score = self.up8to4(score) + self.score4(f4)
        score = self.up4to2(score) + self.score2(f2)
        return self.up2to1(score) + self.score1(f1)


def _check_size(model, inputs):
    """Images (N, C, H, W) with H and W multiples of 8: the upsampled scores then match them pixel for pixel."""
    x = inputs[0]
    check_input(x, model=model.name, channels=model.in_channels, min_size=model.min_size)
    h, w = x.shape[-2:]
    if h % 8 or w % 8:
        raise ValueError(f"FCN needs H and W to be multiples of 8, got {h}x{w} (crop or pad the "
                         f"images to {h // 8 * 8}x{w // 8 * 8} or {-(-h // 8) * 8}x{-(-w // 8) * 8})")


@register((1, 96, 96))
def fcn_scenes(num_classes=11, in_channels=1, channels=16, skips=True, mode="transposed"):
    return FCN(num_classes, in_channels, channels, skips, mode)


def segmentation_loss(model, batch, ignore_index=255):
    """Pixel-wise cross-entropy and pixel accuracy of a batch (images, {"masks": ...}), both over
    the pixels whose mask is not ignore_index; a batch without any such pixel gives 0 and 0."""
    x, target = batch
    masks = (target["masks"] if isinstance(target, dict) else target).long()  # scenes store uint8
    logits = model(x)
    valid = masks != ignore_index
    labelled = valid.sum().clamp(min=1)  # a batch with no labelled pixel: loss 0, accuracy 0, not 0/0
    loss = F.cross_entropy(logits.float(), masks, ignore_index=ignore_index, reduction="sum") / labelled
    acc = ((logits.argmax(1) == masks) & valid).sum() / labelled
    return loss, {"pixel_acc": acc}


def boundary_band(masks, width=1, ignore_index=255):
    """(N, H, W) bool: the pixels within `width` pixels (chessboard distance) of a place where the
    true class changes, where a coarse score map errs first; ignored pixels are left out."""
    masks = masks.long()
    padded = F.pad(masks[:, None].float(), (1, 1, 1, 1), mode="replicate")
    low = -F.max_pool2d(-padded, 3, stride=1)[:, 0]       # the smallest class among the 3x3 neighbours
    high = F.max_pool2d(padded, 3, stride=1)[:, 0]        # and the largest: they differ at an edge
    edge = (low != high).float()[:, None]
    band = F.max_pool2d(edge, 2 * width + 1, stride=1, padding=width)[:, 0] > 0 if width else edge[:, 0] > 0
    return band & (masks != ignore_index)


@torch.no_grad()
def segmentation_scores(model, loader, num_classes, *, band=1, ignore_index=255):
    """{"mean_iou", "boundary_acc"} of a segmenter on a scene loader: the mean IoU over the classes
    (torchmetrics' JaccardIndex) and the pixel accuracy inside the boundary band."""
    from torchmetrics.classification import JaccardIndex
    model.eval()
    device = next(model.parameters()).device
    miou = JaccardIndex(task="multiclass", num_classes=num_classes, average="macro",
                        ignore_index=ignore_index).to(device)
    right = total = 0
    for x, target in loader:
        masks = target["masks"].long()
        predicted = model(x).argmax(1)
        miou.update(predicted, masks)
        near = boundary_band(masks, band, ignore_index)
        right += int((predicted == masks)[near].sum())
        total += int(near.sum())
    return {"mean_iou": miou.compute().item(), "boundary_acc": right / max(total, 1)}
