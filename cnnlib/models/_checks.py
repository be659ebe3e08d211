"""Input checks shared by the model families: a clear error instead of a shape mismatch.

Used by every model family of chapters 1 and 5 to 7."""
import torch.nn as nn


def check_input(x, *, model, channels, min_size=None, size=None):
    """Raise ValueError unless x is (N, channels, H, W) with H, W >= min_size (or == size)."""
    if x.ndim != 4:
        raise ValueError(f"{model} expects a batch of images (N, C, H, W), got a tensor of shape {tuple(x.shape)}")
    _, c, h, w = x.shape
    if c != channels:
        raise ValueError(f"{model} was built for {channels}-channel images, got {c} channels "
                         f"(build it with in_channels={c}, or convert the images)")
    if size is not None and (h, w) != (size, size):
        raise ValueError(f"{model} expects {size}x{size} images, got {h}x{w} (resize the data)")
    if min_size is not None and (h < min_size or w < min_size):
        raise ValueError(f"{model} needs images of at least {min_size}x{min_size}, got {h}x{w} "
                         f"(resize the data, e.g. resize={min_size} in cnnlib.data)")


def min_input_size(layers):
    """The smallest square input that leaves every map at least 1x1 after `layers`.

    Walks the convolutions and poolings backwards: to get n outputs, a layer with kernel k,
    stride s and padding p needs (n - 1) * s + k - 2p inputs (and at least 1); a pooling that
    rounds up (ceil_mode) lets its last window hang over the edge, so it needs s - 1 fewer.
    """
    need = 1
    for m in reversed([m for m in layers.modules() if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))]):
        k, s, p = (_height(getattr(m, a)) for a in ("kernel_size", "stride", "padding"))
        overhang = s - 1 if getattr(m, "ceil_mode", False) else 0
        need = max(1, (need - 1) * s + k - 2 * p - overhang)
    return need


def _height(v):
    """The vertical value of an int-or-(h, w) layer setting (the models here are square)."""
    return v[0] if isinstance(v, tuple) else v
