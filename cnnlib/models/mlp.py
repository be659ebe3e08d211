"""Multilayer perceptrons: fully connected layers, each hidden one followed by an activation.

    MLP(num_inputs=784, hidden=(256, 128), num_outputs=10, activation=nn.ReLU, dropout=0.2)

Layers: Flatten - [Linear - activation - (Dropout)] per hidden width - Linear.

- softmax_regression(): no hidden layer, one affine map from pixels to class scores.
- mlp():                one or more hidden layers (default: one of 256 ReLU units).

The models return logits (unnormalised scores): the softmax lives in the loss
(``F.cross_entropy``), which computes log-softmax in one numerically stable step.
Taught in: chapters/01_mlp.
"""
import math

import torch.nn as nn
from ._registry import register


class MLP(nn.Module):
    """An MLP on inputs of any shape (N, ...) whose per-example size is `num_inputs`.

    activation: a module class (or any callable returning a module), called once per hidden
    layer, so each layer gets its own instance (nn.PReLU, say, has its own parameters).
    dropout: probability of zeroing a hidden unit in training (0 adds no Dropout layers).
    """

    def __init__(self, num_inputs=784, hidden=(256,), num_outputs=10, activation=nn.ReLU, dropout=0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_inputs = num_inputs
        widths = [num_inputs, *hidden]
        layers = [nn.Flatten()]
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), activation()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(widths[-1], num_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.num_inputs:
            raise ValueError(
                f"MLP expects a batch (N, ...) of {self.num_inputs} values per example, got a "
                f"tensor of shape {tuple(x.shape)}" + (" (add a batch dimension)" if x.ndim < 2 else
                f" ({math.prod(x.shape[1:])} values per example; build it with "
                f"num_inputs={math.prod(x.shape[1:])}, or resize the data)"))
        return self.layers(x)

    @property
    def linear_layers(self):
        """The nn.Linear layers in order, input side first (to inspect weights or gradients)."""
        return [m for m in self.layers if isinstance(m, nn.Linear)]


@register((1, 28, 28))
def softmax_regression(num_inputs=784, num_classes=10):
    """Multinomial logistic regression: one linear layer; the softmax is in the loss."""
    return MLP(num_inputs, hidden=(), num_outputs=num_classes)


@register((1, 28, 28))
def mlp(num_inputs=784, hidden=(256,), num_classes=10, activation=nn.ReLU, dropout=0.0):
    """An MLP classifier with the given hidden widths (one hidden layer of 256 by default)."""
    return MLP(num_inputs, hidden, num_classes, activation, dropout)
