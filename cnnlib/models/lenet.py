"""LeNet-5 (LeCun et al., 1998) and two variants.

The paper's network reads 32x32 images; on 28x28 MNIST-style images the first convolution
pads by 2, which gives the same 28x28 map after it. Layers: CONV(6, 5x5) - POOL(2) -
CONV(16, 5x5) - POOL(2) - FC(120) - FC(84) - FC(classes).

- lenet5():       the paper's choices that matter today: tanh and average pooling.
                  ``scaled_tanh=True`` uses the paper's own squashing function,
                  f(a) = 1.7159 tanh(2a/3) (its Appendix A), instead of plain tanh.
- lenet5_d2l():   sigmoid and average pooling, as in d2l's LeNet (the benchmark's peer).
- lenet5_modern(): ReLU and max pooling, today's defaults. At LeNet's scale they train about
                  as fast as tanh and average pooling (the LeNet page measures both); the
                  AlexNet page tests the claim that they pay in deeper networks (under Adam,
                  tanh is not slower there).

Three details of the paper are simplified, as everyone does: its C3 layer connects each of
the 16 maps to only some of the 6 input maps (1,516 weights instead of 2,416 here), its
subsampling layers have a trainable scale and bias, and its output is a layer of Euclidean
RBF units instead of a linear layer.
Taught in: chapters/05_modern_cnns/01_lenet.ipynb (first trained in chapters/00_introduction).
"""
import torch
import torch.nn as nn

from ._checks import check_input
from ._registry import register


class ScaledTanh(nn.Module):
    """LeCun's f(a) = 1.7159 tanh(2a/3): f(1) = 1 and f(-1) = -1, with the largest gain near there."""

    def forward(self, x):
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class LeNet(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, activation=nn.Tanh, pool=nn.AvgPool2d):
        super().__init__()
        self.in_channels = in_channels
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2), activation(), pool(2),
            nn.Conv2d(6, 16, kernel_size=5), activation(), pool(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120), activation(),
            nn.Linear(120, 84), activation(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        check_input(x, model="LeNet-5", channels=self.in_channels, size=28)
        return self.classifier(self.features(x))


@register((1, 28, 28))
def lenet5(num_classes=10, in_channels=1, scaled_tanh=False):
    return LeNet(num_classes, in_channels, ScaledTanh if scaled_tanh else nn.Tanh, nn.AvgPool2d)


@register((1, 28, 28))
def lenet5_d2l(num_classes=10, in_channels=1):
    return LeNet(num_classes, in_channels, nn.Sigmoid, nn.AvgPool2d)


@register((1, 28, 28))
def lenet5_modern(num_classes=10, in_channels=1):
    return LeNet(num_classes, in_channels, nn.ReLU, nn.MaxPool2d)


def xavier_init(model):
    """Xavier-uniform weights and zero biases for every conv and linear layer (d2l's init)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
