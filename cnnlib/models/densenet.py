"""DenseNet (Huang et al., 2017): every layer reads the concatenation of all maps before it.

A dense block of L layers starts from c0 channels; layer i reads c0 + i * k channels (k, the
growth rate) and adds k new ones: BN-ReLU-1x1 convolution to 4k ("bottleneck", DenseNet-B),
then BN-ReLU-3x3 convolution to k. Concatenation, not addition: earlier features are passed on
unchanged and each layer stays narrow. A transition (BN-ReLU-1x1 convolution halving the
channels, 2x2 average pool) sits between blocks and shrinks both channels and map.

- ``densenet121``: growth 32, blocks (6, 12, 24, 16), 64-channel 7x7 stride-2 stem and max pool;
  at 1000 classes its parameter count equals torchvision's (7,978,856).
- ``densenet_small``: for 28x28 images: a 3x3 stem, three blocks at 28x28, 14x14 and 7x7.
Taught in: chapters/05_modern_cnns/08_densenet.ipynb.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import check_input, min_input_size
from ._registry import register


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (to bn_size * growth), BN-ReLU-3x3 conv (to growth); returns the new maps only."""

    def __init__(self, in_channels, growth, bn_size=4):
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        x = self.conv1(F.relu(self.norm1(x)))     # 1x1: bn_size * k maps
        return self.conv2(F.relu(self.norm2(x)))  # 3x3: k new maps


class DenseBlock(nn.Module):
    def __init__(self, num_layers, in_channels, growth, bn_size=4):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(in_channels + i * growth, growth, bn_size) for i in range(num_layers))
        self.out_channels = in_channels + num_layers * growth

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, dim=1)))
        return torch.cat(features, dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 convolution (to out_channels) and a 2x2 average pool."""

    def __init__(self, in_channels, out_channels):
        super().__init__(nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                         nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.AvgPool2d(2, stride=2))


class DenseNet(nn.Module):
    def __init__(self, growth=32, blocks=(6, 12, 24, 16), stem_channels=64, num_classes=1000, in_channels=3, *,
                 bn_size=4, compression=0.5, small_input=False, name="DenseNet"):
        super().__init__()
        if not 0 < compression <= 1:  # the paper's theta: a transition keeps that share of the channels
            raise ValueError(f"compression must be in (0, 1], got {compression!r}")
        self.in_channels, self.name = in_channels, name
        c = stem_channels
        if small_input:
            stem = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False)]
        else:
            stem = [nn.Conv2d(in_channels, c, 7, 2, padding=3, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                    nn.MaxPool2d(3, stride=2, padding=1)]
        layers = stem
        for i, n in enumerate(blocks):
            block = DenseBlock(n, c, growth, bn_size)
            layers.append(block)
            c = block.out_channels
            if i < len(blocks) - 1:
                kept = int(c * compression)
                if kept < 1:
                    raise ValueError(f"compression={compression!r} leaves no channel of the {c} after "
                                     f"dense block {i + 1}: it must keep at least one")
                layers.append(Transition(c, kept))
                c = kept
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        self.min_size = min_input_size(self.features)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        check_input(x, model=self.name, channels=self.in_channels, min_size=self.min_size)
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


@register((3, 224, 224))
def densenet121(num_classes=1000, in_channels=3):
    return DenseNet(32, (6, 12, 24, 16), 64, num_classes, in_channels, name="DenseNet-121")


@register((1, 28, 28))
def densenet_small(num_classes=10, in_channels=1, *, growth=12, blocks=(6, 6, 6)):
    """A DenseNet-BC for 28x28: a 3x3 stem of 2 * growth channels, blocks at 28x28, 14x14, 7x7."""
    depth = 2 * sum(blocks) + len(blocks) + 1  # two convolutions per layer, transitions, stem, classifier
    return DenseNet(growth, blocks, 2 * growth, num_classes, in_channels, small_input=True,
                    name=f"DenseNet-BC-{depth} (k={growth}, small input)")
