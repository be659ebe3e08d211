"""VGG (Simonyan and Zisserman, 2015): configurations A, B, D and E, i.e. VGG-11/13/16/19.

One configuration table builds every variant: a number is a 3x3 convolution (stride 1,
padding 1) with that many output channels followed by ReLU (and batch norm before the ReLU in
the ``_bn`` variants, which came later than the paper); "M" is a 2x2 max pool with stride 2.
No local response normalisation (the paper found it does not help). The classifier is
FC-4096, FC-4096, FC-classes with dropout, read from a 7x7x512 map; an adaptive average pool
makes any input of at least 32x32 work (at 224x224 it is the identity). At 1000 classes the
parameter counts equal torchvision's ``vgg11`` ... ``vgg19_bn`` exactly.

Small inputs (28x28 or 32x32): five poolings take 32x32 down to 1x1, so 32x32 is the minimum;
resize 28x28 images to 32 (``resize=32`` in cnnlib.data). With ``small_input=True`` the
classifier reads that 1x1x512 map directly instead of copying it into a 7x7 grid (which would
cost 25,088 x 4,096 weights for nothing), and ``width`` scales the channels and hidden units
so that the network trains on a CPU.
Taught in: chapters/05_modern_cnns/03_vgg.ipynb.
"""
import torch.nn as nn

from ._checks import check_input, min_input_size
from ._registry import register

CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def make_layers(config, in_channels=3, batch_norm=False, width=1.0):
    """The convolutional part of a VGG from its configuration list."""
    layers = []
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        out = max(1, round(v * width))
        layers.append(nn.Conv2d(in_channels, out, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, config, num_classes=1000, in_channels=3, *, batch_norm=False, small_input=False,
                 width=1.0, hidden=4096, dropout=0.5, name="VGG"):
        super().__init__()
        self.in_channels, self.name = in_channels, name
        self.features = make_layers(config, in_channels, batch_norm, width)
        last = max(1, round(config[-2] * width))
        side = 1 if small_input else 7
        hidden = max(1, round(hidden * width))
        self.avgpool = nn.AdaptiveAvgPool2d((side, side))
        self.classifier = nn.Sequential(
            nn.Linear(last * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self.min_size = min_input_size(self.features)
        # torchvision's initialisation: without it, plain VGG-16/19 barely start to learn.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        check_input(x, model=self.name, channels=self.in_channels, min_size=self.min_size)
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


def _vgg(key, batch_norm, num_classes, in_channels, **kwargs):
    name = key.replace("vgg", "VGG-") + ("-BN" if batch_norm else "")
    return VGG(CONFIGS[key], num_classes, in_channels, batch_norm=batch_norm, name=name, **kwargs)


@register((3, 224, 224))
def vgg11(num_classes=1000, in_channels=3, **kwargs):
    return _vgg("vgg11", False, num_classes, in_channels, **kwargs)


@register((3, 224, 224))
def vgg11_bn(num_classes=1000, in_channels=3, **kwargs):
    return _vgg("vgg11", True, num_classes, in_channels, **kwargs)


@register((3, 224, 224))
def vgg13(num_classes=1000, in_channels=3, **kwargs):
    return _vgg("vgg13", False, num_classes, in_channels, **kwargs)


@register((3, 224, 224))
def vgg13_bn(num_classes=1000, in_channels=3, **kwargs):
    return _vgg("vgg13", True, num_classes, in_channels, **kwargs)


@register((3, 224, 224))
def vgg16(num_classes=1000, in_channels=3, **kwargs):
    return _vgg("vgg16", False, num_classes, in_channels, **kwargs)


@register((3, 224, 224))
def vgg16_bn(num_classes=1000, in_channels=3, **kwargs):
    return _vgg("vgg16", True, num_classes, in_channels, **kwargs)


@register((3, 224, 224))
def vgg19(num_classes=1000, in_channels=3, **kwargs):
    return _vgg("vgg19", False, num_classes, in_channels, **kwargs)


@register((3, 224, 224))
def vgg19_bn(num_classes=1000, in_channels=3, **kwargs):
    return _vgg("vgg19", True, num_classes, in_channels, **kwargs)
