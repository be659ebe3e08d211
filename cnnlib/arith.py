"""Arithmetic of convolutional networks: output sizes, parameters, multiply-adds, receptive fields.

    conv_output_size(32, kernel=5)                   # 28 = floor((32 + 2*0 - 5) / 1) + 1
    conv_params(128, 64, kernel=3)                   # Params(weights=73728, biases=64)
    receptive_field([(3, 1), (3, 1), (3, 1)])        # ReceptiveField(size=7, stride=1)
    print(layer_table(model, (1, 3, 224, 224)))      # per layer: shape, parameters, MACs, field

Sizes are per spatial dimension (call once for the height, once for the width). A MAC is one
multiply-add: a conv layer costs out_elements * (in_channels / groups * kh * kw) of them and a
linear layer in_features * out_features per output vector. Biases add no multiplications, so
they are left out (torchinfo's "mult-adds" count them as one more each). Bad settings raise a
ValueError that says what is wrong, before torch would fail with a shape error.
Taught in: chapters/04_cnn_arithmetic (all three pages); used again in chapters 5 and 6.
"""
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from ._validate import _is_int
from ._validate import positive_int as _check  # the value as a Python int, if an integer >= minimum


class Params(NamedTuple):
    weights: int
    biases: int

    @property
    def total(self):
        return self.weights + self.biases


class ReceptiveField(NamedTuple):
    size: int | tuple   # input pixels one output pixel sees (an int when square)
    stride: int | tuple  # input pixels between neighbouring output pixels (effective stride)


def _pair(v, name="kernel"):
    """(h, w) from an int or a pair; anything else is a clear error."""
    if _is_int(v):
        return (v, v)
    if isinstance(v, (tuple, list, torch.Size)) and len(v) == 2:
        return tuple(v)
    raise ValueError(f"{name} must be an int or a pair (height, width), got {v!r}")


def _check_window(n, kernel, stride, padding, dilation, overhang=False):
    """(n, kernel, stride, padding, dilation, span) as Python ints, checked."""
    n, kernel, stride, dilation = (_check(name, v) for name, v in (
        ("input size", n), ("kernel", kernel), ("stride", stride), ("dilation", dilation)))
    padding = _check("padding", padding, minimum=0)
    span = dilation * (kernel - 1) + 1  # the input pixels one dilated kernel covers
    if span > n + 2 * padding + (stride - 1 if overhang else 0):
        dilated = f" (dilated to {span})" if dilation > 1 else ""
        raise ValueError(f"kernel {kernel}{dilated} is larger than the padded input "
                         f"({n} + 2*{padding} = {n + 2 * padding} pixels): the output would be empty")
    return n, kernel, stride, padding, dilation, span


def conv_output_size(n, kernel, stride=1, padding=0, dilation=1):
    """Output side of a convolution: floor((n + 2p - d(k-1) - 1) / s) + 1."""
    if padding == "valid":
        padding = 0
    elif padding == "same":  # torch allows it only with stride 1
        if stride != 1:
            raise ValueError(f"padding='same' needs stride 1, got stride {stride}")
        kernel, dilation = _check("kernel", kernel), _check("dilation", dilation)
        return _check_window(n, kernel, 1, dilation * (kernel - 1), dilation)[0]
    n, kernel, stride, padding, dilation, span = _check_window(n, kernel, stride, padding, dilation)
    return (n + 2 * padding - span) // stride + 1


def pool_output_size(n, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Output side of max or average pooling (stride defaults to the kernel, as in torch)."""
    stride = kernel if stride is None else stride
    # ceil_mode lets the last window hang over the right edge by up to stride - 1 pixels
    n, kernel, stride, padding, dilation, span = _check_window(n, kernel, stride, padding, dilation,
                                                               overhang=ceil_mode)
    if 2 * padding > kernel:  # torch's rule, on the kernel before dilation
        raise ValueError(f"padding {padding} is more than half the kernel {kernel}: "
                         "some windows would see only padding")
    steps = n + 2 * padding - span
    out = (-(-steps // stride) if ceil_mode else steps // stride) + 1
    if ceil_mode and (out - 1) * stride >= n + padding:
        out -= 1  # torch drops a last window that would start in the right padding
    return out


def conv_transpose_output_size(n, kernel, stride=1, padding=0, output_padding=0, dilation=1):
    """Output side of a transposed convolution: (n-1)s - 2p + d(k-1) + output_padding + 1."""
    n, kernel, stride, dilation = (_check(name, v) for name, v in (
        ("input size", n), ("kernel", kernel), ("stride", stride), ("dilation", dilation)))
    padding = _check("padding", padding, minimum=0)
    output_padding = _check("output_padding", output_padding, minimum=0)
    if output_padding >= max(stride, dilation):
        raise ValueError(f"output_padding {output_padding} must be smaller than the stride "
                         f"{stride} or the dilation {dilation}")
    out = (n - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1
    if out < 1:
        raise ValueError(f"padding {padding} crops away the whole output ({out} pixels)")
    return out


def conv_params(in_channels, out_channels, kernel, groups=1, bias=True):
    """Weights and biases of a conv layer: out * (in / groups) * kh * kw, plus out biases."""
    in_channels, out_channels, groups = (_check(name, v) for name, v in (
        ("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)))
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
        if v % groups:
            raise ValueError(f"{name}={v} is not divisible by groups={groups}")
    kh, kw = (_check("kernel", k) for k in _pair(kernel))
    return Params(out_channels * (in_channels // groups) * kh * kw, out_channels if bias else 0)


def num_params(model, trainable=False):
    """How many numbers a model learns: the sum of its parameters' sizes (shared ones once), or
    of those that require gradients only with trainable=True."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def conv_macs(in_channels, out_channels, kernel, output_size, groups=1):
    """Multiply-adds of a conv layer for one image: each output value costs (in/groups)*kh*kw."""
    oh, ow = (_check("output size", v) for v in _pair(output_size, "output_size"))
    return conv_params(in_channels, out_channels, kernel, groups, bias=False).weights * oh * ow


def linear_params(in_features, out_features, bias=True):
    """Weights and biases of a dense layer: in * out, plus out biases."""
    in_features, out_features = _check("in_features", in_features), _check("out_features", out_features)
    return Params(in_features * out_features, out_features if bias else 0)


def linear_macs(in_features, out_features):
    """Multiply-adds of a dense layer for one input vector."""
    return linear_params(in_features, out_features, bias=False).weights


# A field is (height, width, stride_h, stride_w) in input pixels; ALL means "the whole input"
# (after flattening or global pooling), None means "not computed" (no spatial input, resizing).
ALL = "all"
_WINDOWS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.LPPool2d)
# Layers that keep the map's size and each pixel's field (padding layers grow the map, not the field).
_KEEPS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
          nn.modules.instancenorm._InstanceNorm, nn.modules.dropout._DropoutNd, nn.Identity,
          nn.ChannelShuffle, nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
          nn.modules.padding._ReplicationPadNd)


def _window(layer):
    """(kernel, stride, dilation) of a conv or pooling layer (LPPool2d's stride defaults to its kernel)."""
    stride = layer.stride if layer.stride is not None else layer.kernel_size
    return layer.kernel_size, stride, getattr(layer, "dilation", 1)


def _grow(field, kernel, stride, dilation=1):
    """One more layer on top: the field grows by (k-1)*d input strides, the stride multiplies."""
    if field in (None, ALL):
        return field
    rh, rw, jh, jw = field
    (kh, kw), (sh, sw), (dh, dw) = [[_check(name, v) for v in _pair(value, name)] for name, value in
                                    (("kernel", kernel), ("stride", stride), ("dilation", dilation))]
    return rh + (kh - 1) * dh * jh, rw + (kw - 1) * dw * jw, jh * sh, jw * sw


def _keeps_field(layer):
    return isinstance(layer, _KEEPS) or type(layer).__module__ == "torch.nn.modules.activation"


def _layer_on_top(field, name, layer):
    """The field after one more module; a module whose effect on the size is unknown is an error."""
    where = f"layer {name} ({type(layer).__name__})"
    if isinstance(layer, _WINDOWS):
        return _grow(field, *_window(layer))
    if _keeps_field(layer):
        return field
    if isinstance(layer, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)):
        raise ValueError(f"{where} sees the whole input: no receptive field to compute")
    if isinstance(layer, (nn.ConvTranspose2d, nn.Upsample)):
        raise ValueError(f"{where} enlarges the map: receptive_field handles convolutions and pooling only")
    raise ValueError(f"receptive_field does not know {where}, which may change the map's size: it "
                     "handles 2-d convolutions and pooling, and layers that keep the size")


def _leaves(model):
    """(name, module) of the leaf modules, in the order they were defined."""
    return [(name or "0", m) for name, m in model.named_modules() if not list(m.children())]


def _own_forward(model):
    """The first container whose forward is its own (it may pool or reshape between its layers)."""
    for name, m in model.named_modules():
        if list(m.children()) and type(m).forward is not nn.Sequential.forward:
            return name or type(m).__name__
    return None


def _called_leaves(model, input_size):
    """(name, module, input size, output size) of each leaf call, in the order the forward runs."""
    calls, names = [], {m: name for name, m in _leaves(model)}

    def hook(module, inputs, output):
        calls.append((names[module], module, tuple(inputs[0].shape[2:]), tuple(output.shape[2:])))

    param = next(model.parameters(), None)
    x = torch.zeros(input_size, device=param.device if param is not None else "cpu")
    handles = [m.register_forward_hook(hook) for m in names]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return calls, tuple(x.shape[2:]), tuple(out.shape[2:])


def _size_str(shape):
    return "x".join(map(str, shape))


def _measured_field(model, input_size):
    """Follow the layers in the order the forward calls them, checking that they explain every size."""
    calls, size, final = _called_leaves(model, tuple(input_size))
    field, before = (1, 1, 1, 1), "the input"
    for name, layer, got, out in calls:
        where = f"{name} ({type(layer).__name__})"
        if got != size:
            raise ValueError(f"between {before} and {where} the map changes from {_size_str(size)} to "
                             f"{_size_str(got)} outside any layer (a functional call in forward, such as "
                             "F.avg_pool2d, or a branch): receptive_field follows a chain of layers; "
                             "layer_table(model, input_size) follows the forward pass")
        field, size, before = _layer_on_top(field, name, layer), out, where
    if final != size:
        raise ValueError(f"after {before} the map changes from {_size_str(size)} to {_size_str(final)} "
                         "outside any layer (a functional call in forward?): receptive_field cannot see it")
    return field


def receptive_field(layers, input_size=None):
    """Receptive field and effective stride at the top of a chain of layers.

    layers: (kernel, stride) or (kernel, stride, dilation) tuples, or a module: an nn.Sequential
    chain (conv and pooling layers count; activations, normalisation, dropout keep the field; any
    other layer is an error that names it). A model with its own forward() may resize the map in
    code its layers do not show: pass input_size=(1, C, H, W) and the forward pass is measured,
    every change of size checked against the layers that explain it.
    """
    if isinstance(layers, nn.Module):
        if input_size is not None:
            field = _measured_field(layers, input_size)
        else:
            own = _own_forward(layers)
            if own is not None:
                raise ValueError(f"{own} has its own forward(), which may resize the map in ways its layers "
                                 "do not show (F.avg_pool2d, reshapes): pass input_size=(1, C, H, W) to "
                                 "measure it")
            field = (1, 1, 1, 1)
            for name, layer in _leaves(layers):
                field = _layer_on_top(field, name, layer)
    else:
        field = (1, 1, 1, 1)
        for layer in layers:
            field = _grow(field, *layer)
    rh, rw, jh, jw = field
    return ReceptiveField(rh if rh == rw else (rh, rw), jh if jh == jw else (jh, jw))


def _field_str(field):
    if field in (None, ALL):
        return "-" if field is None else ALL
    size, stride = (a if a == b else f"{a}x{b}" for a, b in (field[:2], field[2:]))
    return f"{size}, stride {stride}"


def _tensors(obj):
    """The tensors in nested lists, tuples and dicts (an op's arguments or outputs)."""
    return [leaf for leaf in pytree.tree_leaves(obj) if isinstance(leaf, torch.Tensor)]


class _TensorTags(TorchFunctionMode):
    """Carries a tag on each tensor through the functional ops of a forward pass (additions,
    concatenations, flattening), so branches and skip connections are followed: the outputs of
    an op on tagged tensors get merge([(input, tag), ...], output)."""

    def __init__(self, merge):
        super().__init__()
        self.merge = merge
        self.tags = {}  # id(tensor) -> (tensor, tag); holding the tensor keeps its id unique

    def get(self, t, default=None):
        return self.tags.get(id(t), (None, default))[1]

    def set(self, t, tag):
        self.tags[id(t)] = (t, tag)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        known = [(t, self.tags[id(t)][1]) for t in _tensors((args, kwargs)) if id(t) in self.tags]
        if known:
            for t in _tensors(out):
                self.set(t, self.merge(known, t))
        return out


def _follow(inputs, out):
    """The field of a tensor made by some function of tensors with known fields."""
    fields = [f for _, f in inputs]
    if None in fields or out.ndim != 4:
        return ALL if out.ndim <= 2 and None not in fields else None
    if ALL in fields or (out.shape[2:] == (1, 1) and all(t.shape[2:] != (1, 1) for t, _ in inputs)):
        return ALL
    if any(t.ndim != 4 or t.shape[2:] != out.shape[2:] for t, _ in inputs):
        return None  # a functional resize we do not know the geometry of
    return tuple(max(f[i] for f in fields) for i in range(4))  # merged branches: the widest


@dataclass
class Row:
    name: str
    output_shape: tuple
    params: int
    macs: int
    receptive_field: object  # (h, w, stride_h, stride_w), "all" or None


@dataclass
class LayerTable:
    rows: list
    total_params: int
    total_macs: int
    input_size: tuple

    def __str__(self):
        head = ("layer", "output shape", "parameters", "MACs", "receptive field")
        cells = [(r.name, str(list(r.output_shape)), f"{r.params:,}", f"{r.macs:,}",
                  _field_str(r.receptive_field)) for r in self.rows]
        total = ("total", "", f"{self.total_params:,}", f"{self.total_macs:,}", "")
        widths = [max(len(c[i]) for c in [head, total, *cells]) for i in range(5)]

        def line(c):
            return "  ".join(s.ljust(w) if i in (0, 1, 4) else s.rjust(w)
                             for i, (s, w) in enumerate(zip(c, widths))).rstrip()

        rule = "-" * len(line(head))
        return "\n".join([f"input {list(self.input_size)}", line(head), rule,
                          *map(line, cells), rule, line(total)])

    __repr__ = __str__

    def frame(self):
        """The table as a pandas DataFrame, one row per layer and a last row of totals."""
        import pandas as pd
        rows = [(r.name, str(list(r.output_shape)), r.params, r.macs, _field_str(r.receptive_field))
                for r in self.rows] + [("total", "", self.total_params, self.total_macs, "")]
        return pd.DataFrame(rows, columns=["layer", "output shape", "parameters", "MACs",
                                           "receptive field"]).set_index("layer")

    def _repr_html_(self):
        """A notebook shows the table as HTML, which wraps to the page's column (print() keeps text)."""
        html = self.frame().to_html(formatters={"parameters": "{:,}".format, "MACs": "{:,}".format})
        return f"<p>input {list(self.input_size)}</p>{html}"


def _layer_macs(module, inputs, output):
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return module.weight[0].numel() * output.numel()  # (in/groups)*k*k per output value
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return module.weight[0].numel() * inputs[0].numel()  # each input value is scattered
    if isinstance(module, nn.Linear):
        return module.in_features * output.numel()
    return 0


def _layer_field(module, inputs, output, tracker):
    field = tracker.get(inputs[0]) if inputs else None
    if field in (None, ALL) or output.ndim != 4:
        return tracker.get(output)
    if isinstance(module, _WINDOWS):
        return _grow(field, *_window(module))
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        (ih, iw), (oh, ow) = inputs[0].shape[2:], output.shape[2:]
        if (oh, ow) == (1, 1):
            return ALL
        if ih % oh == 0 and iw % ow == 0:  # then it is a plain pooling layer
            return _grow(field, (ih // oh, iw // ow), (ih // oh, iw // ow))
        return None
    return tracker.get(output)


def layer_table(model, input_size, all_layers=False):
    """Output shape, parameters, MACs and receptive field of each layer of model on one input.

    input_size: the shape of the input batch, e.g. (1, 3, 224, 224); (3, 224, 224) means a
    batch of one. Figures are for the whole batch. The model runs once, in eval mode and
    without gradients. Rows are leaf modules in the order they run; all_layers=False leaves
    out those with no parameters that keep the shape (activations, dropout). A module that
    runs twice gets two rows, its parameters counted in the first. total_params counts every
    parameter of the model, also of layers that did not run (GoogLeNet's auxiliary heads).
    The receptive field follows branches and skip connections (the widest branch wins);
    "all" means the layer sees the whole input, "-" that the field is not computed there
    (no spatial input, transposed convolutions, resizing).
    """
    input_size = tuple(input_size)
    if len(input_size) == 3:
        input_size = (1, *input_size)
    param = next(model.parameters(), None)
    x = torch.zeros(input_size, device=param.device if param is not None else "cpu")
    names = {m: name or type(m).__name__ for name, m in model.named_modules()}
    rows, seen, tracker = [], set(), _TensorTags(_follow)

    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            return
        field = _layer_field(module, inputs, output, tracker)
        tracker.set(output, field)
        params = 0 if module in seen else sum(p.numel() for p in module.parameters())
        seen.add(module)
        changes_shape = not inputs or inputs[0].shape != output.shape
        macs = _layer_macs(module, inputs, output)
        if all_layers or params or macs or changes_shape:  # every call of a shared layer costs its MACs
            rows.append(Row(f"{names[module]} ({type(module).__name__})", tuple(output.shape),
                            params, macs, field))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        tracker.set(x, (1, 1, 1, 1) if x.ndim == 4 else None)
        with torch.no_grad(), tracker:
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    total_params = sum(p.numel() for p in model.parameters())
    return LayerTable(rows, total_params, sum(r.macs for r in rows), input_size)


def _deepest(inputs, out):
    """An op's output is as deep as its deepest input."""
    return max(depth for _, depth in inputs)


def longest_path(model, input_size, kinds=(nn.Conv2d, nn.Linear)):
    """The number of layers of the given kinds on the longest path from input to output.

    Follows branches, concatenations and additions (in eval mode: GoogLeNet's aux heads are not
    on the path). kinds=(nn.Conv2d, nn.Linear) counts the layers with weights; add
    nn.MaxPool2d, nn.AvgPool2d and nn.AdaptiveAvgPool2d to count the poolings too.
    """
    tracker = _TensorTags(_deepest)

    def hook(module, inputs, output):
        tracker.set(output, max(tracker.get(t, 0) for t in inputs) + 1)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), tracker:
            out = model(torch.zeros(input_size))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return tracker.get(out, 0)
