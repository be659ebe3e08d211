"""Network in Network (Lin, Chen and Yan, 2014).

Two ideas: the mlpconv block (a convolution followed by two 1x1 convolutions, i.e. a small
MLP slid over every pixel) and a classifier without fully connected layers: the last block
outputs one map per class and global average pooling (GAP) turns each map into a logit.

- nin():       the ImageNet-sized network as d2l writes it (an AlexNet-shaped stem of 11x11
               stride 4, blocks of 96, 256, 384 channels, then num_classes); inputs of at
               least 67x67, 224x224 as in the paper.
- nin_cifar(): the authors' released CIFAR-10 model (their Caffe model; the paper's text
               gives three mlpconv blocks and leaves the details to its supplement): blocks
               192-160-96, 192-192-192, 192-192-classes, 5x5, 5x5 and 3x3 convolutions,
               dropout between blocks; it reads 32x32 images,
               and 28x28 ones as they are (any input of at least 7x7). This is the
               small-input choice for NiN; ``width`` scales the channels for a CPU.

Both end with a ReLU before the pooling, as the paper's network does.
Taught in: chapters/05_modern_cnns/04_nin.ipynb.
"""
import torch.nn as nn

from ._checks import check_input, min_input_size
from ._registry import register


def mlpconv(in_channels, channels, kernel_size, stride=1, padding=0):
    """A kxk convolution and two 1x1 convolutions, each followed by ReLU.

    channels: the three output widths, e.g. (192, 160, 96).
    """
    c1, c2, c3 = channels
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, kernel_size, stride=stride, padding=padding), nn.ReLU(inplace=True),
        nn.Conv2d(c1, c2, kernel_size=1), nn.ReLU(inplace=True),
        nn.Conv2d(c2, c3, kernel_size=1), nn.ReLU(inplace=True),
    )


class NiN(nn.Module):
    def __init__(self, features, in_channels, name="NiN"):
        super().__init__()
        self.in_channels, self.name = in_channels, name
        self.features = features
        self.gap = nn.AdaptiveAvgPool2d(1)  # one number per class map: no weights at all
        self.min_size = min_input_size(self.features)

    def forward(self, x):
        check_input(x, model=self.name, channels=self.in_channels, min_size=self.min_size)
        return self.gap(self.features(x)).flatten(1)


@register((3, 224, 224))
def nin(num_classes=1000, in_channels=3, dropout=0.5):
    """NiN for 224x224 images (d2l's version of the ImageNet model)."""
    features = nn.Sequential(
        mlpconv(in_channels, (96, 96, 96), 11, stride=4), nn.MaxPool2d(3, stride=2),
        mlpconv(96, (256, 256, 256), 5, padding=2), nn.MaxPool2d(3, stride=2),
        mlpconv(256, (384, 384, 384), 3, padding=1), nn.MaxPool2d(3, stride=2),
        nn.Dropout(dropout),
        mlpconv(384, (num_classes,) * 3, 3, padding=1),
    )
    return NiN(features, in_channels)


@register((3, 32, 32))
def nin_cifar(num_classes=10, in_channels=3, width=1.0, dropout=0.5):
    """The authors' released CIFAR-10 NiN (32x32 images); `width` scales the 192/160/96 channels."""
    w = lambda c: max(1, round(c * width))  # noqa: E731
    features = nn.Sequential(
        mlpconv(in_channels, (w(192), w(160), w(96)), 5, padding=2), nn.MaxPool2d(3, stride=2),
        nn.Dropout(dropout),
        mlpconv(w(96), (w(192), w(192), w(192)), 5, padding=2), nn.AvgPool2d(3, stride=2),
        nn.Dropout(dropout),
        mlpconv(w(192), (w(192), w(192), num_classes), 3, padding=1),
    )
    return NiN(features, in_channels, name="NiN (CIFAR)")
