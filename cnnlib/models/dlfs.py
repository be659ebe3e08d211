"""The deep CNN of *Deep Learning from Scratch* (Saito, 2016), chapter 8.
Taught in: chapters/05_modern_cnns/05_dlfs_deep_cnn.ipynb.

A small VGG-like network for 28x28 MNIST digits, trained with Adam (lr 0.001):

    conv3x3(16) - relu - conv3x3(16) - relu - pool -
    conv3x3(32) - relu - conv3x3(32, pad 2) - relu - pool -
    conv3x3(64) - relu - conv3x3(64) - relu - pool -
    fc(50) - relu - dropout(0.5) - fc(classes) - dropout(0.5)

The fourth convolution pads by 2 (14x14 -> 16x16), so the maps are 28, 14, 8 and finally 4x4:
the hidden layer reads 64 * 4 * 4 = 1,024 numbers. The weights start with He's
initialisation, a normal with std sqrt(2 / fan_in), biases at zero, exactly as the book's
``weight_init_scales``. The book's second dropout acts on the logits; keep it (``dropout_logits``)
to reproduce the book, or drop it.

The book scales by (1 - p) at test time, PyTorch by 1 / (1 - p) during training ("inverted"
dropout). The two describe the same functions: the constant factor 1/(1 - p) (not the dropout
itself) can be folded into the weights and bias of the layer before the dropout, through its
ReLU (relu(c x) = c relu(x) for c > 0); for the dropout on the logits that layer is the output
layer itself. Their training trajectories under Adam differ slightly, since Adam is not
invariant to rescaling the parameters.
The network is built for 28x28 images (its hidden layer reads a 4x4 map); other sizes are refused.
"""
import math

import torch.nn as nn

from ._checks import check_input
from ._registry import register


class DeepConvNet(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, hidden=50, dropout=0.5, dropout_logits=True):
        super().__init__()
        self.in_channels = in_channels

        def conv(cin, cout, padding=1):
            return [nn.Conv2d(cin, cout, kernel_size=3, padding=padding), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv(in_channels, 16), *conv(16, 16), nn.MaxPool2d(2),
            *conv(16, 32), *conv(32, 32, padding=2), nn.MaxPool2d(2),
            *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
            nn.Dropout(dropout) if dropout_logits else nn.Identity(),
        )
        he_init(self)

    def forward(self, x):
        check_input(x, model="DLfS deep CNN", channels=self.in_channels, size=28)
        return self.classifier(self.features(x))


def he_init(model):
    """N(0, 2 / fan_in) weights and zero biases, as the book's weight_init_scales."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
            nn.init.zeros_(m.bias)
    return model


@register((1, 28, 28))
def deep_convnet(num_classes=10, in_channels=1, hidden=50, dropout=0.5, dropout_logits=True):
    """The DLfS chapter 8 network (hidden 50, dropout 0.5 as in the book)."""
    return DeepConvNet(num_classes, in_channels, hidden, dropout, dropout_logits)
