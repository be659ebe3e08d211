"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012), as in the paper and as torchvision ships it.

Five convolutions and three fully connected layers; ReLU everywhere; max pooling after conv1,
conv2 and conv5; dropout (p = 0.5) in the first two fully connected layers.

- alexnet_paper(): the 2012 network. Its widths (96-256-384-384-256), local response
  normalisation after conv1 and conv2 (after the ReLU, before the pooling), and its two-GPU
  split written as grouped convolutions: conv2, conv4 and conv5 have groups=2 (each GPU's
  half of the filters sees only that GPU's half of the maps), conv3 and the fully connected
  layers see both halves. 60,965,224 parameters at 1000 classes. Dropout acts on the outputs
  of fc6 and fc7, as the paper describes it ("setting to zero the output of each hidden neuron
  with probability 0.5"). ``init="paper"`` starts from the paper's initialisation (see
  ``paper_init``); the default is PyTorch's, with which Adam trains the small networks here.
- alexnet(): the single-tower network torchvision ships ("one weird trick", Krizhevsky 2014):
  widths 64-192-384-256-256, no LRN, no groups. 61,100,840 parameters at 1000 classes,
  exactly torchvision's ``alexnet``, with its layout: dropout on the *inputs* of fc6 and fc7.
  The two layouts have the same parameters and differ only in where the masks fall.

Both pad conv1 by 2, so a 224x224 image (the paper's stated size) gives the 55x55 maps of the
paper's figure; an adaptive average pool in front of the classifier makes any input at least
``min_size`` wide work, and is the identity at 224x224 (the map is already 6x6).

Small inputs (28x28 or 32x32): ``small_input=True`` swaps the 11x11 stride-4 stem, which would
shrink a 32x32 image to 7x7 before the first pooling, for a 3x3 stride-1 convolution, and lets
the classifier read a 3x3 map instead of 6x6. ``width`` scales every channel count and the
hidden layers (0.25: a 16x cheaper network) so that it trains on a CPU.

Two switches exist for ablations: ``lrn`` and ``overlap`` (3x3 stride-2 pooling, the paper's
"overlapping pooling", versus 2x2 stride 2).

Note on LRN: the paper divides by (k + alpha * sum of squares)^beta with k=2, n=5,
alpha=1e-4, beta=0.75; torch.nn.LocalResponseNorm divides alpha by n, so the paper's layer is
LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2).
Taught in: chapters/05_modern_cnns/02_alexnet.ipynb.
"""
import torch
import torch.nn as nn

from ._checks import check_input, min_input_size
from ._registry import register

TORCHVISION_WIDTHS = (64, 192, 384, 256, 256)
PAPER_WIDTHS = (96, 256, 384, 384, 256)


class LocalResponseNorm(nn.LocalResponseNorm):
    """torch's LocalResponseNorm, computed in float32 also under autocast: it squares its input,
    and in float16 (largest number 65,504) a ReLU output above 256 squares to inf."""

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float()).to(x.dtype)


def paper_lrn():
    """The paper's local response normalisation (see the module note on alpha)."""
    return LocalResponseNorm(size=5, alpha=5e-4, beta=0.75, k=2.0)


def paper_init(model):
    """The paper's initialisation (its section 5): weights from N(0, 0.01); biases 1 in conv2, conv4,
    conv5 and the two hidden fully connected layers ("accelerates the early stages of learning by
    providing the ReLUs with positive inputs"), 0 in the remaining layers (conv1, conv3, output)."""
    layers = [m for m in (*model.features, *model.classifier) if isinstance(m, (nn.Conv2d, nn.Linear))]
    ones = {1, 3, 4, 5, 6}  # conv2, conv4, conv5, fc6, fc7 (0-based among the 8 layers)
    for i, m in enumerate(layers):
        nn.init.normal_(m.weight, 0.0, 0.01)
        nn.init.constant_(m.bias, 1.0 if i in ones else 0.0)
    return model


class AlexNet(nn.Module):
    def __init__(self, num_classes=1000, in_channels=3, *, widths=TORCHVISION_WIDTHS, hidden=4096,
                 groups=1, lrn=False, overlap=True, small_input=False, width=1.0, dropout=0.5,
                 dropout_after=False):
        super().__init__()
        self.in_channels = in_channels
        # Scale the channels, keeping each a multiple of `groups` so the split stays even.
        c1, c2, c3, c4, c5 = (max(groups, round(c * width / groups) * groups) for c in widths)
        hidden = max(1, round(hidden * width))
        pool = (lambda: nn.MaxPool2d(3, stride=2)) if overlap else (lambda: nn.MaxPool2d(2, stride=2))
        norm = paper_lrn if lrn else nn.Identity
        if small_input:
            stem = nn.Conv2d(in_channels, c1, kernel_size=3, stride=1, padding=1)
        else:
            stem = nn.Conv2d(in_channels, c1, kernel_size=11, stride=4, padding=2)
        self.features = nn.Sequential(
            stem, nn.ReLU(inplace=True), norm(), pool(),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2, groups=groups), nn.ReLU(inplace=True), norm(), pool(),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1), nn.ReLU(inplace=True),  # sees both halves
            nn.Conv2d(c3, c4, kernel_size=3, padding=1, groups=groups), nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1, groups=groups), nn.ReLU(inplace=True),
            pool(),
        )
        side = 3 if small_input else 6
        self.avgpool = nn.AdaptiveAvgPool2d((side, side))
        if dropout_after:  # the paper: drop the outputs of fc6 and fc7
            self.classifier = nn.Sequential(
                nn.Linear(c5 * side * side, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )
        else:  # torchvision: drop the inputs of fc6 and fc7
            self.classifier = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(c5 * side * side, hidden), nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
                nn.Linear(hidden, num_classes),
            )
        self.name = "AlexNet"
        self.min_size = min_input_size(self.features)

    def forward(self, x):
        check_input(x, model=self.name, channels=self.in_channels, min_size=self.min_size)
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


@register((3, 224, 224))
def alexnet(num_classes=1000, in_channels=3, *, small_input=False, width=1.0, lrn=False, overlap=True):
    """torchvision's single-tower AlexNet (exactly its parameters at width 1, full stem)."""
    return AlexNet(num_classes, in_channels, widths=TORCHVISION_WIDTHS, groups=1, lrn=lrn,
                   overlap=overlap, small_input=small_input, width=width)


@register((3, 224, 224))
def alexnet_paper(num_classes=1000, in_channels=3, *, small_input=False, width=1.0, lrn=True, overlap=True,
                  init="default"):
    """The 2012 paper's AlexNet: two towers as groups=2, LRN after conv1 and conv2, dropout on the
    outputs of fc6 and fc7; init="paper" for the paper's initialisation (``paper_init``)."""
    if init not in ("default", "paper"):
        raise ValueError(f"init must be 'default' or 'paper', got {init!r}")
    model = AlexNet(num_classes, in_channels, widths=PAPER_WIDTHS, groups=2, lrn=lrn,
                    overlap=overlap, small_input=small_input, width=width, dropout_after=True)
    model.name = "AlexNet (paper)"
    return paper_init(model) if init == "paper" else model
