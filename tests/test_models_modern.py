"""GoogLeNet, ResNet and DenseNet: parameter counts against torchvision, shapes, aux heads, shortcuts."""
import pytest
import torch
import torch.nn as nn
import torchvision

from cnnlib import models
from cnnlib.models import densenet as dn
from cnnlib.models.googlenet import Inception
from cnnlib.models import resnet as rn


def count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("aux", [False, True])
def test_googlenet_parameters_equal_torchvision(aux):
    ours = models.googlenet(aux_logits=aux, variant="torchvision")
    theirs = torchvision.models.googlenet(weights=None, aux_logits=aux, init_weights=False)
    assert count(ours) == count(theirs)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "densenet121"])
def test_parameters_equal_torchvision(name):
    assert count(getattr(models, name)()) == count(getattr(torchvision.models, name)(weights=None))


def test_googlenet_depth_and_single_dense_layer():
    m = models.googlenet(aux_logits=False)
    assert models.longest_path(m, (1, 3, 224, 224)) == 22
    pools = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
    assert models.longest_path(m, (1, 3, 224, 224), pools) == 27
    assert count(m.fc) == 1024 * 1000 + 1000
    assert len([x for x in m.modules() if isinstance(x, Inception)]) == 9


def test_googlenet_aux_heads_only_in_training():
    m = models.googlenet_small(aux_logits=True)
    x = torch.randn(2, 1, 28, 28)
    m.train()
    out = m(x)
    assert isinstance(out, tuple) and len(out) == 3 and all(o.shape == (2, 10) for o in out)
    m.eval()
    assert m(x).shape == (2, 10)
    assert not isinstance(models.googlenet_small(aux_logits=False).train()(x), tuple)


def test_googlenet_loss_weights_aux_by_0_3():
    torch.manual_seed(0)
    m = models.googlenet_small(aux_logits=True).train()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    torch.manual_seed(1)
    loss, _ = models.googlenet_loss(m, (x, y))
    torch.manual_seed(1)
    main, a1, a2 = m(x)
    ce = nn.functional.cross_entropy
    assert torch.allclose(loss, ce(main, y) + 0.3 * (ce(a1, y) + ce(a2, y)))
    m.eval()
    loss, _ = models.googlenet_loss(m, (x, y))
    assert torch.allclose(loss, ce(m(x), y))


def test_inception_concatenates_four_branches():
    block = Inception(192, 64, 96, 128, 16, 32, 32)
    assert block(torch.randn(1, 192, 28, 28)).shape == (1, 64 + 128 + 32 + 32, 28, 28)


@pytest.mark.parametrize("build, sizes", [
    (lambda: models.googlenet(10, aux_logits=False), [31, 64, 224]),   # the 2014 network's 3x3/2 pool4
    (lambda: models.googlenet(10, aux_logits=False, variant="torchvision"), [15, 64, 224]),
    (lambda: models.resnet18(10), [32, 64, 224]),
    (lambda: models.resnet50(10), [32, 100]),
    (lambda: models.densenet121(10), [32, 64]),
])
def test_output_shapes_imagenet_models(build, sizes):
    m = build().eval()
    for s in sizes:
        assert m(torch.randn(1, 3, s, s)).shape == (1, 10)


@pytest.mark.parametrize("build", [
    lambda: models.googlenet_small(width=0.125),
    lambda: models.resnet18(10, 1, small_input=True, width=0.125),
    lambda: models.densenet_small(growth=4, blocks=(2, 2, 2)),
    lambda: models.resnet_cifar(8, channels=4),
])
@pytest.mark.parametrize("size", [28, 32, 17])
def test_output_shapes_small_models(build, size):
    assert build().eval()(torch.randn(2, 1, size, size)).shape == (2, 10)


@pytest.mark.parametrize("variant", ["torchvision", "paper"])
def test_googlenet_minimum_input_size_is_exact(variant):
    m = models.googlenet(10, aux_logits=False, variant=variant).eval()
    size = m.min_size
    m(torch.randn(1, 3, size, size))        # the smallest size runs
    m.min_size = 1  # switch the check off: one pixel less must fail inside the network
    with pytest.raises(RuntimeError):
        m(torch.randn(1, 3, size - 1, size - 1))
    with pytest.raises(ValueError, match=f"at least {size}x{size}"):
        models.googlenet(10, aux_logits=False, variant=variant).eval()(torch.randn(1, 3, size - 1, size - 1))


def test_small_resnet_keeps_resolution_in_first_stage():
    m = models.resnet18(10, 1, small_input=True, width=0.25)
    assert m.stem(torch.randn(1, 1, 28, 28)).shape[-1] == 28
    assert not any(isinstance(x, nn.MaxPool2d) for x in m.stem)


def test_bottleneck_shapes():
    b = rn.Bottleneck(256, 128, stride=2)
    assert b.conv1.out_channels == 128 and b.conv3.out_channels == 512
    assert b(torch.randn(1, 256, 16, 16)).shape == (1, 512, 8, 8)
    assert rn.Bottleneck(256, 64).downsample is None  # 256 -> 64 -> 256: identity shortcut
    stage_outputs = [s[-1].conv3.out_channels for s in models.resnet50().stages]
    assert stage_outputs == [256, 512, 1024, 2048]


def test_downsampling_halves_map_and_doubles_channels():
    m = models.resnet18()
    x = m.stem(torch.randn(1, 3, 64, 64))
    shapes = []
    for stage in m.stages:
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]


@pytest.mark.parametrize("block", [rn.BasicBlock, rn.Bottleneck, rn.PreActBlock])
def test_plain_and_residual_differ_only_by_the_shortcut(block):
    torch.manual_seed(0)
    res = block(16, 32, stride=2).eval()
    plain = block(16, 32, stride=2, residual=False).eval()
    shortcut = {k for k in res.state_dict() if k.startswith("downsample.")}
    assert shortcut and not any(k.startswith("downsample.") for k in plain.state_dict())
    plain.load_state_dict({k: v for k, v in res.state_dict().items() if k not in shortcut})  # strict
    x = torch.randn(2, 16, 8, 8)
    after_add = torch.relu if block is not rn.PreActBlock else (lambda t: t)
    assert torch.allclose(res(x), after_add(plain.residual_branch(x) + res.downsample(x)), atol=1e-6)
    assert torch.allclose(plain(x), after_add(plain.residual_branch(x)), atol=1e-6)


def test_plain_network_has_the_same_layers_but_no_shortcuts():
    res, plain = models.resnet_cifar(20, channels=8), models.resnet_cifar(20, channels=8, residual=False)
    keys = lambda m: {k for k in m.state_dict() if ".downsample." not in k}  # noqa: E731
    assert keys(res) == keys(plain)
    assert count(res) - count(plain) == sum(count(b.downsample) for s in res.stages for b in s
                                            if b.downsample is not None)
    assert plain.name == "Plain-20" and res.name == "ResNet-20"


def test_plain_and_residual_start_from_the_same_weights():
    torch.manual_seed(0)
    res = models.resnet_cifar(20, channels=8)
    torch.manual_seed(0)
    plain = models.resnet_cifar(20, channels=8, residual=False)
    shared = plain.state_dict()
    assert all(torch.equal(v, shared[k]) for k, v in res.state_dict().items() if k in shared)


def test_preact_block_jacobian_is_identity_plus_residual_jacobian():
    torch.manual_seed(0)
    block = rn.PreActBlock(2, 2).eval()
    x = torch.randn(1, 2, 4, 4)
    jac = torch.autograd.functional.jacobian(block, x).reshape(32, 32)
    jac_f = torch.autograd.functional.jacobian(block.residual_branch, x).reshape(32, 32)
    assert torch.allclose(jac, torch.eye(32) + jac_f, atol=1e-6)


def test_densenet_channels_grow_by_the_growth_rate():
    block = dn.DenseBlock(4, 24, growth=12)
    assert [layer.conv1.in_channels for layer in block.layers] == [24, 36, 48, 60]
    x = torch.randn(1, 24, 7, 7)
    out = block(x)
    assert out.shape == (1, 72, 7, 7)
    assert torch.equal(out[:, :24], x)  # concatenation passes the input on unchanged


def test_resnet_cifar_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="6n"):
        models.resnet_cifar(19)
    assert models.longest_path(models.resnet_cifar(20, channels=4, residual=False), (1, 1, 28, 28)) == 20


@pytest.mark.parametrize("layers", [
    [nn.Conv2d(1, 1, 7, 2, padding=3), nn.MaxPool2d(3, 2, ceil_mode=True), nn.MaxPool2d(3, 2, ceil_mode=True)],
    [nn.Conv2d(1, 1, 3), nn.AvgPool2d(3, 2, ceil_mode=True), nn.Conv2d(1, 1, 2)],
    [nn.Conv2d(1, 1, 5, 3, padding=1), nn.MaxPool2d(2), nn.AvgPool2d(3, 2, padding=1)],
])
def test_min_input_size_is_the_smallest_size_torch_accepts(layers):
    """One rule for plain and ceil-mode poolings (it replaced GoogLeNet's own copy)."""
    from cnnlib.models._checks import min_input_size

    def works(n):
        try:
            return nn.Sequential(*layers)(torch.zeros(1, 1, n, n)).shape[-1] >= 1
        except RuntimeError:
            return False
    smallest = next(n for n in range(1, 100) if works(n))
    assert min_input_size(nn.Sequential(*layers)) == smallest


@pytest.mark.parametrize("depth", [2, -4, 20.0, "20"])
def test_resnet_cifar_refuses_a_depth_without_blocks(depth):
    with pytest.raises(ValueError, match=rf"depth must be 6n \+ 2 with n >= 1 .*got {depth!r}"):
        models.resnet_cifar(depth)


@pytest.mark.parametrize("compression", [0, -0.5, 1.5])
def test_densenet_refuses_a_compression_outside_0_1(compression):
    with pytest.raises(ValueError, match=rf"compression must be in \(0, 1\], got {compression!r}"):
        dn.DenseNet(4, (2, 2), 8, 10, 1, compression=compression, small_input=True)


def test_densenet_refuses_a_compression_that_leaves_no_channel():
    with pytest.raises(ValueError, match="compression=0.01 leaves no channel of the 16 after dense block 1"):
        dn.DenseNet(4, (2, 2), 8, 10, 1, compression=0.01, small_input=True)
    assert dn.DenseNet(4, (2, 2), 8, 10, 1, compression=1.0, small_input=True)(torch.zeros(1, 1, 8, 8)).shape == (1, 10)


@pytest.mark.parametrize("five", [4, 2, 0, 3.0])
def test_googlenet_refuses_an_even_or_odd_looking_kernel(five):
    with pytest.raises(ValueError, match=rf"five must be an odd kernel size such as 3 or 5, got {five!r}"):
        models.googlenet_small(five=five)
    assert models.googlenet_small(five=5, width=0.125).eval()(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def _paper_googlenet_parameters(num_classes=1000, aux=False):
    """Table 1 of Szegedy et al. (2015) counted by hand: convolutions with biases, no batch norm."""
    from cnnlib.models.googlenet import INCEPTIONS
    conv = lambda cin, cout, k: cin * cout * k * k + cout
    total = conv(3, 64, 7) + conv(64, 64, 1) + conv(64, 192, 3)                   # the stem
    for cin, c1, r3, c3, r5, c5, pool in INCEPTIONS.values():
        total += conv(cin, c1, 1) + conv(cin, r3, 1) + conv(r3, c3, 3) + conv(cin, r5, 1) + conv(r5, c5, 5)
        total += conv(cin, pool, 1)
    total += 1024 * num_classes + num_classes                                       # the one dense layer
    if aux:  # after 4a (512 channels) and 4d (528): 1x1 conv to 128, FC 2048 -> 1024, FC 1024 -> classes
        for cin in (512, 528):
            total += conv(cin, 128, 1) + 2048 * 1024 + 1024 + 1024 * num_classes + num_classes
    return total


@pytest.mark.parametrize("aux", [False, True])
def test_googlenet_paper_variant_has_table_1s_parameters_5x5_kernels_and_no_batch_norm(aux):
    net = models.googlenet(aux_logits=aux, variant="paper")
    assert sum(p.numel() for p in net.parameters()) == _paper_googlenet_parameters(aux=aux)
    assert _paper_googlenet_parameters() == 6_998_552          # the audit's count, by another road
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in net.modules()) == 2
    assert net.inception3a.branch3[1][0].kernel_size == (5, 5) and net.maxpool4.kernel_size == 3
    out = net.eval()(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1000)


def test_googlenet_refuses_an_unknown_variant():
    with pytest.raises(ValueError, match="variant must be one of 'torchvision', 'paper', got 'caffe'"):
        models.googlenet(variant="caffe")


def resnet_cifar_by_hand(n, in_channels=1, classes=10):
    """He et al.'s CIFAR net counted from its description: 3x3 convolutions without bias, a batch
    norm (2 numbers a channel) after each, option A shortcuts (no parameters), a linear layer."""
    conv = lambda c_in, c_out: 9 * c_in * c_out + 2 * c_out  # noqa: E731
    total = conv(in_channels, 16)
    for c_in, c in [(16, 16), (16, 32), (32, 64)]:
        total += conv(c_in, c) + conv(c, c) + (n - 1) * 2 * conv(c, c)
    return total + 64 * classes + classes


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_resnet_cifar_counts_equal_the_paper_and_its_plain_twin(depth):
    n = (depth - 2) // 6
    res, plain = models.resnet_cifar(depth), models.resnet_cifar(depth, residual=False)
    assert count(res) == count(plain) == resnet_cifar_by_hand(n)
    paper = {20: 0.27e6, 32: 0.46e6, 56: 0.85e6}[depth]   # Table 6, on 3-channel CIFAR-10
    assert round(count(models.resnet_cifar(depth, in_channels=3)), -4) == paper


def test_option_a_shortcut_is_the_subsampled_input_padded_with_zeros():
    block = rn.BasicBlock(4, 8, stride=2, shortcut_option="A")
    x = torch.randn(2, 4, 6, 6)
    out = block.downsample(x)
    assert out.shape == (2, 8, 3, 3)
    assert torch.equal(out[:, :4], x[:, :, ::2, ::2]) and not out[:, 4:].any()
    assert sum(p.numel() for p in block.downsample.parameters()) == 0


def test_shortcut_options_b_and_c_project():
    counts = {o: count(models.resnet_cifar(8, channels=4, shortcut=o)) for o in "ABC"}
    b_extra = (4 * 8 + 2 * 8) + (8 * 16 + 2 * 16)                  # two projections with batch norm
    c_extra = b_extra + (4 * 4 + 2 * 4)                            # and one on the first stage's block
    assert counts["B"] - counts["A"] == b_extra and counts["C"] - counts["A"] == c_extra
    assert isinstance(rn.BasicBlock(8, 8, shortcut_option="C").downsample, nn.Sequential)
    assert rn.BasicBlock(8, 8, shortcut_option="B").downsample is None
    with pytest.raises(ValueError, match="shortcut must be one of \\('A', 'B', 'C'\\), got 'D'"):
        models.resnet_cifar(8, shortcut="D")
    with pytest.raises(TypeError):
        models.resnet_cifar(8, width=4)   # one name per meaning: channels is a count, width a multiplier
