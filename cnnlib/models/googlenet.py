"""GoogLeNet (Szegedy et al., 2015), the network of Inception modules.

An Inception module runs four branches side by side on the same input and concatenates their
outputs along the channels: a 1x1 convolution; a 1x1 reduction then a 3x3; a 1x1 reduction then
a "5x5"; a 3x3 max pool (stride 1) then a 1x1 projection. The 1x1 reductions (an idea taken
from Network in Network) keep the wide convolutions cheap. Nine modules, 22 layers with weights
on the longest path (27 counting the poolings, see ``cnnlib.arith.longest_path``), one dense layer at the end
after global average pooling, and two auxiliary classifiers (after 4a and 4d) that only exist in
training mode: ``forward`` returns ``(logits, aux1, aux2)`` in training and the logits alone in
eval mode. Train with ``loss_fn=googlenet_loss`` (the aux losses weighted by 0.3, as in the paper).

``googlenet()`` builds the 2014 network: 5x5 kernels, no batch norm, local response
normalisation in the stem (6,998,552 parameters without the aux heads, 13,378,280 with them, at
1000 classes). ``googlenet(variant="torchvision")`` builds torchvision's, whose parameter counts
it equals (6,624,904 and 13,004,888): batch norm after every convolution, which came after 2014,
and a 3x3 kernel in the "5x5" branch (a known slip that torchvision keeps for its weights).

``googlenet_small()`` reads 28x28 images: one 3x3 stem convolution instead of the 7x7 stride-2
stem and its poolings, then the same nine modules at 14x14, 7x7 and 4x4, with torchvision's batch
norm and 3x3 kernels (``five=5`` for the paper's); ``width`` scales every channel count so that
it trains on a CPU.

Taught in chapters/05_modern_cnns/06_googlenet.ipynb.
"""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..arith import _is_int
from ._checks import check_input, min_input_size
from ._registry import register

# in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection (Table 1 of the paper)
INCEPTIONS = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}


class ConvBN(nn.Sequential):
    """Convolution (no bias: batch norm has one), batch norm, ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
                         nn.BatchNorm2d(out_channels, eps=0.001), nn.ReLU(inplace=True))


class ConvReLU(nn.Sequential):
    """Convolution (with its bias) and ReLU: the 2014 network had no batch norm."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding),
                         nn.ReLU(inplace=True))


class Inception(nn.Module):
    """Four branches on one input, concatenated: out channels = c1 + c3 + c5
    + pool_proj."""

    def __init__(self, in_channels, c1, c3_reduce, c3, c5_reduce, c5,
                 pool_proj, five=3, norm=True):
        super().__init__()
        Conv = ConvBN if norm else ConvReLU
        self.branch1 = Conv(in_channels, c1, 1)
        self.branch2 = nn.Sequential(Conv(in_channels, c3_reduce, 1),
                                     Conv(c3_reduce, c3, 3, padding=1))
        self.branch3 = nn.Sequential(
            Conv(in_channels, c5_reduce, 1),
            Conv(c5_reduce, c5, five, padding=five // 2))
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            Conv(in_channels, pool_proj, 1))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x),
                          self.branch4(x)], dim=1)


class InceptionAux(nn.Module):
    """An auxiliary classifier: average pool to 4x4, 1x1 conv to 128, FC-1024, FC-classes."""

    def __init__(self, in_channels, num_classes, channels=128, hidden=1024, dropout=0.7, norm=True):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = (ConvBN if norm else ConvReLU)(in_channels, channels, 1)
        self.fc1 = nn.Linear(channels * 16, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = self.conv(self.pool(x)).flatten(1)
        return self.fc2(self.dropout(F.relu(self.fc1(x), inplace=True)))


def _scaled(config, width, in_channels=None):
    out = [max(1, round(c * width)) for c in config]
    if in_channels is not None:
        out[0] = in_channels
    return out


class GoogLeNet(nn.Module):
    def __init__(self, stem, stem_channels, num_classes=1000, in_channels=3, *, aux_logits=True,
                 width=1.0, five=3, dropout=0.2, pool4=(2, 2), norm=True, name="GoogLeNet"):
        super().__init__()
        if not _is_int(five) or five < 1 or five % 2 == 0:
            # padding five // 2 keeps the map's size only for an odd kernel; the branches must agree
            raise ValueError(f"five must be an odd kernel size such as 3 or 5, got {five!r}")
        self.in_channels, self.name, self.aux_logits = in_channels, name, aux_logits
        self.stem = stem
        blocks, channels = {}, stem_channels
        for key, config in INCEPTIONS.items():
            cfg = _scaled(config, width, in_channels=channels)
            blocks[key] = Inception(*cfg, five=five, norm=norm)
            channels = cfg[1] + cfg[3] + cfg[5] + cfg[6]
        self.inception3a, self.inception3b = blocks["3a"], blocks["3b"]
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a, self.inception4b, self.inception4c = blocks["4a"], blocks["4b"], blocks["4c"]
        self.inception4d, self.inception4e = blocks["4d"], blocks["4e"]
        self.maxpool4 = nn.MaxPool2d(*pool4, ceil_mode=True)
        self.inception5a, self.inception5b = blocks["5a"], blocks["5b"]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        if aux_logits:
            aux = dict(channels=max(1, round(128 * width)), hidden=max(1, round(1024 * width)), norm=norm)
            self.aux1 = InceptionAux(blocks["4b"].branch1[0].in_channels, num_classes, **aux)
            self.aux2 = InceptionAux(blocks["4e"].branch1[0].in_channels, num_classes, **aux)
        else:
            self.aux1 = self.aux2 = None
        self.min_size = min_input_size(nn.Sequential(self.stem, self.maxpool3, self.maxpool4))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.01, a=-2, b=2)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):
        check_input(x, model=self.name, channels=self.in_channels, min_size=self.min_size)
        x = self.inception3b(self.inception3a(self.stem(x)))
        x = self.inception4a(self.maxpool3(x))
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.inception5b(self.inception5a(self.maxpool4(self.inception4e(x))))
        logits = self.fc(self.dropout(self.avgpool(x).flatten(1)))
        return (logits, aux1, aux2) if aux1 is not None else logits


VARIANTS = ("torchvision", "paper")


@register((3, 224, 224))
def googlenet(num_classes=1000, in_channels=3, aux_logits=True, variant="paper", **kwargs):
    """GoogLeNet for 224x224 images.

    variant="paper" (the default): the 2014 network of Table 1: convolutions with biases and no batch norm,
      5x5 kernels, local response normalisation after the stem's first pooling and after its
      3x3 convolution (as in the paper's Caffe model: size 5, alpha 1e-4, beta 0.75), a 3x3/2
      pool4 and dropout 0.4. 6,998,552 parameters at 1000 classes without the aux heads.
    variant="torchvision": torchvision's layout and parameter count (batch norm after every
      convolution, 3x3 kernels in the "5x5" branch, a 2x2 pool4, dropout 0.2): 6,624,904.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(map(repr, VARIANTS))}, got {variant!r}")
    if variant == "paper":
        lrn = functools.partial(nn.LocalResponseNorm, 5, alpha=1e-4, beta=0.75, k=1.0)
        stem = nn.Sequential(
            ConvReLU(in_channels, 64, 7, stride=2, padding=3), nn.MaxPool2d(3, stride=2, ceil_mode=True), lrn(),
            ConvReLU(64, 64, 1), ConvReLU(64, 192, 3, padding=1), lrn(), nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        kwargs = dict(five=5, dropout=0.4, pool4=(3, 2), norm=False, name="GoogLeNet (2014)", **kwargs)
    else:
        stem = nn.Sequential(
            ConvBN(in_channels, 64, 7, stride=2, padding=3), nn.MaxPool2d(3, stride=2, ceil_mode=True),
            ConvBN(64, 64, 1), ConvBN(64, 192, 3, padding=1), nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
    return GoogLeNet(stem, 192, num_classes, in_channels, aux_logits=aux_logits, **kwargs)


@register((1, 28, 28))
def googlenet_small(num_classes=10, in_channels=1, aux_logits=False, width=0.25, **kwargs):
    """GoogLeNet for 28x28 images: a 3x3 stem, then the nine modules at 14x14, 7x7 and 4x4."""
    c = max(1, round(192 * width))
    stem = nn.Sequential(ConvBN(in_channels, c, 3, padding=1), nn.MaxPool2d(3, stride=2, ceil_mode=True))
    return GoogLeNet(stem, c, num_classes, in_channels, aux_logits=aux_logits, width=width,
                     name="GoogLeNet (small input)", **kwargs)


def googlenet_loss(model, batch, aux_weight=0.3):
    """Cross-entropy for fit: in training mode the aux classifiers' losses
    are added with weight 0.3."""
    x, y = batch
    out = model(x)
    logits, *aux = out if isinstance(out, tuple) else (out,)
    loss = F.cross_entropy(logits, y)
    for a in aux:
        loss = loss + aux_weight * F.cross_entropy(a, y)
    return loss, {"acc": (logits.argmax(dim=1) == y).float().mean()}
