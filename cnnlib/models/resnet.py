"""ResNet (He et al., 2016): blocks that learn a residual F(x) and add it to their input.

- ``BasicBlock``: two 3x3 convolutions, y = relu(F(x) + x) (ResNet-18/34).
- ``Bottleneck``: 1x1 down to a quarter of the channels, 3x3, 1x1 back up (ResNet-50 and deeper).
- ``PreActBlock``: batch norm and ReLU before each convolution and nothing after the addition,
  y = x + F(x) (He et al., "Identity mappings", 2016): there dy/dx = I + dF/dx exactly.

The first block of a stage halves the map with stride 2 and doubles the channels, so its shortcut
must change shape too; the paper's three options (section 4.1, ``shortcut=``):
A: the identity, subsampled and padded with zero channels: no parameters (the paper's CIFAR nets);
B: a projection (1x1 convolution with stride 2 and batch norm) there, the identity elsewhere
(the paper's 50- to 152-layer ImageNet nets, and torchvision's; its
18- and 34-layer comparison with plain nets used A);
C: a projection on every shortcut (slightly better in the paper's Table 3, at more parameters).
``residual=False`` builds the same network without any shortcut (a "plain" network, as in the
paper's degradation experiment): same layers, same initialisation, no addition and no projection;
with option A it has exactly the residual network's parameters.

- ``resnet18/34/50``: the ImageNet networks (7x7 stride-2 stem and max pool); at 1000 classes
  their parameter counts equal torchvision's. ``small_input=True`` (for 28x28 or 32x32) swaps
  the stem for one 3x3 stride-1 convolution without the max pool; ``width`` scales the
  channels (64, 128, 256, 512) for a CPU.
- ``resnet_cifar(depth)``: the paper's CIFAR networks, 6n + 2 layers in three stages of 16, 32
  and 64 channels (``channels=`` sets the first stage's count), option A shortcuts.
Taught in: chapters/05_modern_cnns/07_resnet.ipynb.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..arith import _is_int
from ._checks import check_input, min_input_size
from ._registry import register


def conv3x3(in_channels, out_channels, stride=1):
    return nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)


def projection(in_channels, out_channels, stride, norm=True):
    """A projection shortcut: 1x1 convolution (strided), and batch norm unless pre-activated."""
    conv = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels)) if norm else conv


class PadShortcut(nn.Module):
    """Option A: the identity, subsampled by the stride, with zero channels appended. No parameters."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.extra, self.stride = out_channels - in_channels, stride

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self):
        return f"stride={self.stride}, zero channels={self.extra}"


SHORTCUTS = ("A", "B", "C")


def shortcut(in_channels, out_channels, stride, option="B", norm=True):
    """A block's shortcut by He et al.'s options (2016, section 4.1); None is the identity.

    A: the identity everywhere, zero-padded where the channels grow: no parameters.
    B: a projection where the shape changes, the identity elsewhere (torchvision's ResNets).
    C: a projection on every shortcut.
    """
    if option not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {option!r}")
    changes = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and changes):
        return projection(in_channels, out_channels, stride, norm)
    if option == "A" and changes:
        if out_channels < in_channels:
            raise ValueError(f"option A pads channels, so it cannot go from {in_channels} to {out_channels}")
        return PadShortcut(in_channels, out_channels, stride)
    return None


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, channels, stride=1, residual=True, shortcut_option="B"):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_channels, channels, stride), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = conv3x3(channels, channels), nn.BatchNorm2d(channels)
        self.residual = residual
        self.downsample = shortcut(in_channels, channels, stride, shortcut_option) if residual else None

    def residual_branch(self, x):
        """F(x): everything but the shortcut and the last ReLU."""
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def forward(self, x):
        out = self.residual_branch(x)
        if self.residual:
            skip = x if self.downsample is None else self.downsample(x)
            out = out + skip
        return F.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels, channels, stride=1, residual=True, shortcut_option="B"):
        super().__init__()
        out = channels * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(in_channels, channels, 1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = conv3x3(channels, channels, stride), nn.BatchNorm2d(channels)
        self.conv3, self.bn3 = nn.Conv2d(channels, out, 1, bias=False), nn.BatchNorm2d(out)
        self.residual = residual
        self.downsample = shortcut(in_channels, out, stride, shortcut_option) if residual else None

    def residual_branch(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))

    def forward(self, x):
        out = self.residual_branch(x)
        if self.residual:
            skip = x if self.downsample is None else self.downsample(x)
            out = out + skip
        return F.relu(out)


class PreActBlock(nn.Module):
    """y = x + F(x), F = conv(relu(bn(conv(relu(bn(x)))))): nothing follows the addition."""
    expansion = 1

    def __init__(self, in_channels, channels, stride=1, residual=True, shortcut_option="B"):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_channels), conv3x3(in_channels, channels, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(channels), conv3x3(channels, channels)
        self.residual = residual
        self.downsample = (shortcut(in_channels, channels, stride, shortcut_option, norm=False)
                           if residual else None)

    def residual_branch(self, x):
        return self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))

    def forward(self, x):
        out = self.residual_branch(x)
        if self.residual:
            skip = x if self.downsample is None else self.downsample(x)
            out = out + skip
        return out


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, in_channels=3, *, widths=(64, 128, 256, 512),
                 small_input=False, residual=True, shortcut="B", name="ResNet"):
        super().__init__()
        init_seed = int(torch.randint(2**62, (), device="cpu"))  # drawn before any layer, the same for a plain twin
        self.in_channels, self.name = in_channels, name
        c = widths[0]
        if small_input:  # 28x28 or 32x32: keep the resolution for the first stage
            self.stem = nn.Sequential(conv3x3(in_channels, c), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 7, 2, padding=3, bias=False), nn.BatchNorm2d(c),
                                      nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        stages = []
        for i, (width, n) in enumerate(zip(widths, layers)):
            stride = 1 if i == 0 else 2  # each later stage: half the map, twice the channels
            blocks = []
            for j in range(n):
                blocks.append(block(c, width, stride if j == 0 else 1, residual=residual, shortcut_option=shortcut))
                c = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True)) if block is PreActBlock else nn.Identity()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        self.min_size = min_input_size(nn.Sequential(self.stem, self.stages))
        self._init_weights(torch.Generator().manual_seed(init_seed))

    def _init_weights(self, g):
        # Shortcut projections last, so that from one seed a plain network gets exactly the
        # weights of its residual twin in every layer they share.
        shortcuts = [m for b in self.modules() if getattr(b, "downsample", None) is not None
                     for m in b.downsample.modules()]
        for m in [m for m in self.modules() if m not in shortcuts] + shortcuts:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):  # PyTorch's default for a Linear layer
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
                bound = 1 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound, generator=g)

    def forward(self, x):
        check_input(x, model=self.name, channels=self.in_channels, min_size=self.min_size)
        x = self.final(self.stages(self.stem(x)))
        return self.fc(self.avgpool(x).flatten(1))


def _widths(width):
    return tuple(max(1, round(c * width)) for c in (64, 128, 256, 512))


def _resnet(block, layers, depth, num_classes, in_channels, small_input, width, residual):
    name = f"{'ResNet' if residual else 'Plain'}-{depth}" + (" (small input)" if small_input else "")
    return ResNet(block, layers, num_classes, in_channels, widths=_widths(width), small_input=small_input,
                  residual=residual, name=name)


@register((3, 224, 224))
def resnet18(num_classes=1000, in_channels=3, *, small_input=False, width=1.0, residual=True):
    return _resnet(BasicBlock, [2, 2, 2, 2], 18, num_classes, in_channels, small_input, width, residual)


@register((3, 224, 224))
def resnet34(num_classes=1000, in_channels=3, *, small_input=False, width=1.0, residual=True):
    return _resnet(BasicBlock, [3, 4, 6, 3], 34, num_classes, in_channels, small_input, width, residual)


@register((3, 224, 224))
def resnet50(num_classes=1000, in_channels=3, *, small_input=False, width=1.0, residual=True):
    return _resnet(Bottleneck, [3, 4, 6, 3], 50, num_classes, in_channels, small_input, width, residual)


@register((1, 28, 28))
def resnet_cifar(depth=20, num_classes=10, in_channels=1, *, channels=16, residual=True, preact=False,
                 shortcut="A"):
    """He et al.'s CIFAR network: 6n + 2 layers, three stages of n blocks of `channels`, twice and
    four times as many; option A shortcuts as in the paper (so a plain twin has the same count)."""
    if not _is_int(depth) or depth < 8 or (depth - 2) % 6:  # n >= 1 block per stage
        raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth!r}")
    n = (depth - 2) // 6
    kind = ("PreAct" if preact else "") + ("ResNet" if residual else "Plain")
    return ResNet(PreActBlock if preact else BasicBlock, [n] * 3, num_classes, in_channels,
                  widths=(channels, 2 * channels, 4 * channels), small_input=True, residual=residual,
                  shortcut=shortcut, name=f"{kind}-{depth}")
