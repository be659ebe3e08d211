"""cnnlib.arith against what torch and torchinfo actually do, over generated configurations."""
import pytest
import torch
import torch.nn as nn
import torchinfo
import torchvision
from hypothesis import given, settings, strategies as st

from cnnlib import arith

small = st.integers(1, 4)
grid = settings(max_examples=150, deadline=None, database=None)  # no example files in the repo


def torch_shape(make, n):
    """The output sides torch gives for an n x (n+1) input, or None where torch refuses the
    configuration or returns an empty tensor."""
    try:
        shape = make()(torch.zeros(1, 1, n, n + 1)).shape[2:]
    except RuntimeError:
        return None
    return None if 0 in shape else shape


def ours(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ValueError:
        return None


# Output sizes: our formula gives torch's shape, and refuses exactly what torch refuses.
@grid
@given(n=st.integers(1, 16), k=st.integers(1, 7), s=small, p=st.integers(0, 3), d=st.integers(1, 3))
def test_conv_output_size_matches_torch(n, k, s, p, d):
    got = torch_shape(lambda: nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d), n)
    mine = [ours(arith.conv_output_size, m, k, s, p, d) for m in (n, n + 1)]
    if got is None:  # torch refuses: so do we, for at least one side
        assert None in mine
    else:
        assert tuple(mine) == tuple(got)


@grid
@given(n=st.integers(1, 16), k=st.integers(1, 6), s=st.none() | small, p=st.integers(0, 3),
       d=st.integers(1, 3), ceil=st.booleans(), avg=st.booleans())
def test_pool_output_size_matches_torch(n, k, s, p, d, ceil, avg):
    if avg:
        d = 1  # average pooling has no dilation
        make = lambda: nn.AvgPool2d(k, stride=s, padding=p, ceil_mode=ceil)
    else:
        make = lambda: nn.MaxPool2d(k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    got = torch_shape(make, n)
    mine = [ours(arith.pool_output_size, m, k, s, p, d, ceil) for m in (n, n + 1)]
    if got is None:  # torch refuses: so do we, for at least one side
        assert None in mine
    else:
        assert tuple(mine) == tuple(got)


@grid
@given(n=st.integers(1, 10), k=st.integers(1, 5), s=small, p=st.integers(0, 3),
       op=st.integers(0, 3), d=st.integers(1, 3))
def test_conv_transpose_output_size_matches_torch(n, k, s, p, op, d):
    got = torch_shape(lambda: nn.ConvTranspose2d(1, 1, k, stride=s, padding=p,
                                                 output_padding=op, dilation=d), n)
    mine = [ours(arith.conv_transpose_output_size, m, k, s, p, op, d) for m in (n, n + 1)]
    if got is None:
        assert None in mine
    else:
        assert tuple(mine) == tuple(got)


def test_padding_strings():
    assert arith.conv_output_size(10, 3, padding="same") == 10
    assert arith.conv_output_size(10, 3, padding="valid") == 8


# Parameters and multiply-adds: against numel() and torchinfo.
@grid
@given(g=small, cin=small, cout=small, kh=st.integers(1, 5), kw=st.integers(1, 5), bias=st.booleans())
def test_conv_params_match_numel(g, cin, cout, kh, kw, bias):
    conv = nn.Conv2d(cin * g, cout * g, (kh, kw), groups=g, bias=bias)
    p = arith.conv_params(cin * g, cout * g, (kh, kw), groups=g, bias=bias)
    assert p.weights == conv.weight.numel()
    assert p.biases == (conv.bias.numel() if bias else 0)
    assert p.total == sum(t.numel() for t in conv.parameters())


def test_syllabus_examples():
    assert arith.conv_params(128, 64, 3) == (73_728, 64)
    assert arith.conv_params(128, 64, 3).total == 73_792
    assert arith.conv_params(128, 32, 1).weights == 128 * 32
    assert arith.linear_params(4 * 4 * 16, 10) == (2_560, 10)
    assert arith.linear_params(6 * 6 * 256, 4096).weights == 37_748_736


def torchinfo_layer(module, input_size):
    summary = torchinfo.summary(module, input_size, verbose=0)
    return summary.summary_list[0]


@pytest.mark.parametrize("cin,cout,k,s,p,g,n", [
    (3, 96, 11, 4, 0, 1, 227), (96, 256, 5, 1, 2, 2, 27), (16, 32, 3, 2, 1, 1, 15),
    (8, 8, 3, 1, 1, 8, 9), (128, 32, 1, 1, 0, 1, 16), (12, 6, (1, 3), 1, 0, 3, 7),
])
def test_conv_macs_match_torchinfo(cin, cout, k, s, p, g, n):
    conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, groups=g)
    kh, kw = (k, k) if isinstance(k, int) else k
    oh, ow = arith.conv_output_size(n, kh, s, p), arith.conv_output_size(n, kw, s, p)
    macs = arith.conv_macs(cin, cout, k, (oh, ow), groups=g)
    info = torchinfo_layer(conv, (1, cin, n, n))
    assert info.output_size == [1, cout, oh, ow]
    assert info.macs == macs + cout * oh * ow  # torchinfo adds one per bias and position


@pytest.mark.parametrize("fin,fout", [(4096, 1000), (256, 10), (1, 1)])
def test_linear_macs_match_torchinfo(fin, fout):
    info = torchinfo_layer(nn.Linear(fin, fout), (1, fin))
    assert info.macs == arith.linear_macs(fin, fout) + fout
    assert info.num_params == arith.linear_params(fin, fout).total


# Receptive field: known values, modules == tuples, and the gradient of one output pixel.
def test_receptive_field_known_values():
    assert arith.receptive_field([(3, 1)] * 2) == (5, 1)
    assert arith.receptive_field([(3, 1)] * 3) == (7, 1)
    assert arith.receptive_field([((1, 3), 1), ((3, 1), 1)]) == (3, 1)
    assert arith.receptive_field([((1, 3), 1)]) == ((1, 3), 1)
    assert arith.receptive_field([(3, 1, 2)]) == (5, 1)
    alexnet = torchvision.models.alexnet().features
    assert arith.receptive_field(alexnet) == (195, 32)


def stack_from(spec):
    layers = []
    for kind, k, s, d in spec:
        if kind == "conv":
            layers.append(nn.Conv2d(1, 1, k, stride=s, dilation=d, bias=False))
        else:
            layers.append(nn.AvgPool2d(k, stride=s))  # max pooling's gradient picks one pixel
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


layer_spec = st.tuples(st.sampled_from(["conv", "pool"]), st.integers(1, 4), st.integers(1, 3), st.integers(1, 2))


@settings(max_examples=40, deadline=None, database=None)
@given(spec=st.lists(layer_spec, min_size=1, max_size=4))
def test_receptive_field_matches_gradient(spec):
    model = stack_from(spec)
    for m in model:
        if isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1.0)  # positive weights: no gradient cancels out
    rf, stride = arith.receptive_field(model)
    assert (rf, stride) == arith.receptive_field([(k, s, d if kind == "conv" else 1) for kind, k, s, d in spec])
    n = rf + 2 * stride  # room for the first two output pixels along each side
    x = torch.ones(1, 1, n, n, requires_grad=True)
    y = model(x)
    for i in range(2):  # output pixel (i, i) sees the input from i*stride to i*stride + rf - 1
        grad, = torch.autograd.grad(y[0, 0, i, i], x, retain_graph=True)
        rows = grad[0, 0].abs().sum(1).nonzero().flatten()
        assert (rows.min().item(), rows.max().item()) == (i * stride, i * stride + rf - 1)


# The per-layer table: every figure against torchinfo and the real tensors.
def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, groups=4), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Linear(32 * 6 * 6, 10))


@pytest.mark.parametrize("make,size", [
    (small_cnn, (1, 3, 32, 32)),
    (torchvision.models.alexnet, (1, 3, 227, 227)),
    (lambda: torchvision.models.resnet18(num_classes=10), (2, 3, 64, 64)),
])
def test_layer_table_matches_torchinfo(make, size):
    model = make()
    table = arith.layer_table(model, size, all_layers=True)
    info = torchinfo.summary(model, size, verbose=0)
    leaves = [layer for layer in info.summary_list if layer.is_leaf_layer]
    assert [r.output_shape for r in table.rows] == [tuple(layer.output_size) for layer in leaves]
    assert table.total_params == info.total_params
    for row, layer in zip(table.rows, leaves):
        assert row.params == layer.num_params
        bias = getattr(layer.module, "bias", None)
        if isinstance(layer.module, (nn.Conv2d, nn.Linear)):
            positions = row.output_shape[0] * (row.output_shape[2] * row.output_shape[3] if isinstance(layer.module, nn.Conv2d) else 1)
            assert layer.macs == row.macs + (bias.numel() * positions if bias is not None else 0)
        else:
            assert row.macs == 0


def test_layer_table_fields_and_shapes():
    model = small_cnn()
    table = arith.layer_table(model, (3, 32, 32))  # (C, H, W): a batch of one
    assert table.input_size == (1, 3, 32, 32)
    assert [r.name for r in table.rows] == ["0 (Conv2d)", "2 (MaxPool2d)", "3 (Conv2d)",
                                            "4 (BatchNorm2d)", "6 (MaxPool2d)", "7 (Flatten)", "8 (Linear)"]
    assert table.rows[-2].output_shape == (1, 32 * 6 * 6)
    assert [r.receptive_field for r in table.rows[:3]] == [(5, 5, 1, 1), (6, 6, 2, 2), (10, 10, 2, 2)]
    assert table.rows[-1].receptive_field == "all"
    assert arith.receptive_field(model[:7]) == (14, 4) == table.rows[4].receptive_field[1::2]
    assert table.total_macs == sum(r.macs for r in table.rows)
    text = str(table)
    assert text.splitlines()[1].split() == ["layer", "output", "shape", "parameters", "MACs", "receptive", "field"]
    assert f"{table.total_params:,}" in text.splitlines()[-1]
    assert repr(table) == text
    assert model.training  # the table runs the model in eval mode and restores the mode


def test_layer_table_follows_branches():
    # ResNet's shortcut: the 1x1 stride-2 projection sees what the block's input sees.
    table = arith.layer_table(torchvision.models.resnet18(), (1, 3, 64, 64))
    rows = {r.name.split()[0]: r.receptive_field for r in table.rows}
    assert rows["layer2.0.downsample.0"] == (43, 43, 8, 8)
    assert rows["layer2.0.conv2"] == (67, 67, 8, 8)
    assert rows["layer2.1.conv1"] == (83, 83, 8, 8)  # after the addition: the wider branch


# Clear errors.
@pytest.mark.parametrize("call,message", [
    (lambda: arith.conv_output_size(5, 7), "larger than the padded input"),
    (lambda: arith.conv_output_size(5, 3, dilation=3), "dilated to 7"),
    (lambda: arith.conv_output_size(5, 3, stride=0), "stride must be a positive integer"),
    (lambda: arith.conv_output_size(5, 3, stride=-2), "stride must be a positive integer"),
    (lambda: arith.conv_output_size(5, 3, padding=-1), "padding must be an integer >= 0"),
    (lambda: arith.conv_output_size(5, 3, stride=2, padding="same"), "needs stride 1"),
    (lambda: arith.conv_output_size(0, 1), "input size must be a positive integer"),
    (lambda: arith.pool_output_size(4, 2, padding=2), "more than half the kernel"),
    (lambda: arith.pool_output_size(2, 3), "output would be empty"),
    (lambda: arith.pool_output_size(4, 2, stride=0), "stride must be a positive integer"),
    (lambda: arith.conv_transpose_output_size(4, 3, stride=2, output_padding=2), "output_padding 2 must be smaller"),
    (lambda: arith.conv_transpose_output_size(1, 1, padding=1), "crops away the whole output"),
    (lambda: arith.conv_params(6, 4, 3, groups=4), "in_channels=6 is not divisible by groups=4"),
    (lambda: arith.conv_params(8, 6, 3, groups=4), "out_channels=6 is not divisible by groups=4"),
    (lambda: arith.conv_params(8, 8, 0), "kernel must be a positive integer"),
    (lambda: arith.linear_params(0, 3), "in_features must be a positive integer"),
    (lambda: arith.receptive_field([(3, 0)]), "stride must be a positive integer"),
    (lambda: arith.receptive_field(nn.Sequential(nn.Flatten(), nn.Linear(4, 2))), "sees the whole input"),
    (lambda: arith.receptive_field(nn.Sequential(nn.ConvTranspose2d(1, 1, 2, 2))), "enlarges the map"),
])
def test_errors_say_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# Never wrong in silence.
@pytest.mark.parametrize("layer,name", [
    (nn.PixelUnshuffle(2), "PixelUnshuffle"),
    (nn.FractionalMaxPool2d(2, output_size=4), "FractionalMaxPool2d"),
    (nn.Conv1d(1, 1, 3), "Conv1d"),
    (nn.Conv3d(1, 1, 3), "Conv3d"),
])
def test_receptive_field_names_layers_it_does_not_know(layer, name):
    with pytest.raises(ValueError, match=rf"layer 1 \({name}\)"):
        arith.receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3), layer, nn.Conv2d(1, 1, 3)))


def test_receptive_field_of_lp_pooling_is_that_of_its_window():
    with_lp = nn.Sequential(nn.Conv2d(1, 1, 3), nn.LPPool2d(2, 2), nn.Conv2d(1, 1, 3))
    assert arith.receptive_field(with_lp) == arith.receptive_field([(3, 1), (2, 2), (3, 1)]) == (8, 2)


class FunctionalPooling(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return self.conv2(torch.nn.functional.avg_pool2d(self.conv1(x), 2))


def test_receptive_field_does_not_take_functional_pooling_for_identity():
    with pytest.raises(ValueError, match="own forward.*input_size"):
        arith.receptive_field(FunctionalPooling())
    with pytest.raises(ValueError, match=r"between conv1 \(Conv2d\) and conv2 \(Conv2d\).*14x14 to 7x7"):
        arith.receptive_field(FunctionalPooling(), input_size=(1, 1, 16, 16))


def test_receptive_field_measured_on_a_plain_chain_agrees():
    chain = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3))
    assert arith.receptive_field(chain, input_size=(1, 1, 20, 20)) == arith.receptive_field(chain) == (8, 2)


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(48, 48)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))


def test_layer_table_counts_every_call_of_a_shared_layer():
    table = arith.layer_table(Twice(), (1, 48))
    assert [r.macs for r in table.rows] == [2_304, 2_304] and table.total_macs == 4_608
    assert [r.params for r in table.rows] == [48 * 48 + 48, 0]


def test_integer_like_sizes_are_accepted():
    import numpy as np
    assert arith.conv_output_size(np.int64(32), np.int64(5)) == 28
    assert type(arith.conv_output_size(np.int64(32), 5)) is int
    assert arith.pool_output_size(np.int32(28), 2) == 14
    assert arith.conv_params(np.int64(3), 6, np.int64(5)) == (450, 6)
    assert arith.conv_macs(3, 6, 5, (np.int64(28), 28)) == 450 * 28 * 28
    assert arith.linear_params(np.int64(4), 2) == (8, 2)
    with pytest.raises(ValueError, match="must be a positive integer, got 2.5"):
        arith.conv_output_size(2.5, 1)


@pytest.mark.parametrize("call", [
    lambda: arith.conv_params(3, 6, (3,)),
    lambda: arith.conv_macs(3, 6, (3, 3, 3), 4),
    lambda: arith.receptive_field([((3,), 1)]),
])
def test_a_kernel_of_the_wrong_shape_says_what_is_expected(call):
    with pytest.raises(ValueError, match=r"kernel must be an int or a pair \(height, width\), got \(3"):
        call()


def test_longest_path_follows_branches_and_lives_in_arith():
    """One tensor tracker serves layer_table and longest_path; models re-exports it for the pages."""
    from cnnlib import models

    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.deep = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1))
            self.shallow = nn.Conv2d(1, 2, 1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            a, b = torch.cat([self.deep(x), self.shallow(x)], 1).chunk(2, dim=1)  # a tuple of outputs
            return self.fc((a + b).mean((2, 3)).repeat(1, 2))

    assert arith.longest_path(TwoBranches(), (1, 1, 5, 5)) == 3
    assert models.longest_path is arith.longest_path


def test_layer_table_as_a_frame_and_html_holds_the_same_numbers():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    table = arith.layer_table(net, (1, 1, 8, 8))
    frame = table.frame()
    assert list(frame.index) == [r.name for r in table.rows] + ["total"]
    assert frame.loc["total", "parameters"] == table.total_params == sum(p.numel() for p in net.parameters())
    assert frame["MACs"].iloc[:-1].sum() == table.total_macs
    html = table._repr_html_()
    assert "input [1, 1, 8, 8]" in html and f"{table.total_macs:,}" in html and "<table" in html


def test_num_params_counts_each_parameter_once_and_can_skip_frozen_ones():
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(3, 2))
    assert arith.num_params(net) == 12 + 8
    net[3].weight.requires_grad_(False)
    assert arith.num_params(net, trainable=True) == 12 + 2
    import torchvision
    resnet = torchvision.models.resnet18()
    assert arith.num_params(resnet) == 11_689_512   # torchvision's documented count
