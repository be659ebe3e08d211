"""AlexNet, VGG, NiN and the DLfS deep CNN: parameter counts, shapes, size checks, grouping."""
import pytest
import torch
import torch.nn as nn
import torchvision

from cnnlib import models
from cnnlib.models.alexnet import paper_lrn


def count(model):
    return sum(p.numel() for p in model.parameters())


VGGS = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]


@pytest.mark.parametrize("name", ["alexnet", *VGGS])
def test_parameter_count_equals_torchvision(name):
    with torch.device("meta"):  # no memory, no initialisation: counting needs neither
        ours, theirs = getattr(models, name)(), getattr(torchvision.models, name)(weights=None)
    assert count(ours) == count(theirs)


@pytest.mark.parametrize("name", ["alexnet", *VGGS])
def test_same_layers_as_torchvision(name):
    with torch.device("meta"):
        ours, theirs = getattr(models, name)(), getattr(torchvision.models, name)(weights=None)
    shapes = lambda m: [tuple(p.shape) for p in m.parameters()]  # noqa: E731
    assert shapes(ours) == shapes(theirs)


def test_known_counts():
    with torch.device("meta"):
        assert count(models.alexnet()) == 61_100_840
        assert count(models.alexnet_paper()) == 60_965_224
        assert count(models.vgg16()) == 138_357_544
        assert count(models.vgg19()) == 143_667_240
        # the first dense layer of AlexNet reads 6x6x256, not 13x13x128x2
        assert models.alexnet().classifier[1].weight.numel() == 6 * 6 * 256 * 4096 == 37_748_736
    assert count(models.deep_convnet()) == 123_552


def test_vgg16_is_13_conv_and_3_dense():
    with torch.device("meta"):
        m = models.vgg16()
    assert sum(isinstance(x, nn.Conv2d) for x in m.modules()) == 13
    assert sum(isinstance(x, nn.Linear) for x in m.modules()) == 3
    assert {x.kernel_size for x in m.modules() if isinstance(x, nn.Conv2d)} == {(3, 3)}


def test_nin_has_no_dense_layers():
    for m in (models.nin(), models.nin_cifar()):
        assert not any(isinstance(x, nn.Linear) for x in m.modules())


# (builder, keyword arguments, input sizes that must work)
SHAPE_CASES = [
    (models.alexnet, {}, [63, 100, 224]),
    (models.alexnet, dict(small_input=True, width=0.25), [15, 28, 32, 64]),
    (models.alexnet, dict(small_input=True, width=0.25, overlap=False), [8, 28, 32]),
    (models.alexnet_paper, dict(width=0.25), [63, 224]),
    (models.alexnet_paper, dict(small_input=True, width=0.25), [15, 28, 32]),
    (models.alexnet_paper, dict(small_input=True, width=0.25, lrn=False), [15, 28, 32]),
    (models.vgg11, dict(width=0.125), [32, 64]),
    (models.vgg11, dict(small_input=True, width=0.25), [32, 48]),
    (models.vgg16_bn, dict(small_input=True, width=0.125), [32, 40]),
    (models.vgg19, dict(small_input=True, width=0.125), [32]),
    (models.nin, {}, [67, 96]),
    (models.nin_cifar, dict(width=0.25), [7, 28, 32]),
    (models.deep_convnet, {}, [28]),
]


@pytest.mark.parametrize("builder,kwargs,sizes", SHAPE_CASES,
                         ids=[f"{b.__name__}-{k}" for b, k, _ in SHAPE_CASES])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shape(builder, kwargs, sizes, in_channels):
    model = builder(num_classes=7, in_channels=in_channels, **kwargs).eval()
    for size in sizes:
        with torch.no_grad():
            out = model(torch.randn(2, in_channels, size, size))
        assert out.shape == (2, 7)


@pytest.mark.parametrize("builder,kwargs,sizes", SHAPE_CASES[:-1],
                         ids=[f"{b.__name__}-{k}" for b, k, _ in SHAPE_CASES[:-1]])
def test_too_small_input_names_the_minimum(builder, kwargs, sizes):
    model = builder(num_classes=10, in_channels=1, **kwargs).eval()
    smallest = model.min_size
    assert smallest == min(sizes)  # the documented minimum is the smallest size that works
    with pytest.raises(ValueError, match=f"at least {smallest}x{smallest}"):
        model(torch.randn(1, 1, smallest - 1, smallest - 1))
    with pytest.raises(ValueError, match=f"at least {smallest}x{smallest}"):
        model(torch.randn(1, 1, smallest, smallest - 1))


def test_minimum_sizes_of_the_full_networks():
    with torch.device("meta"):
        assert models.alexnet().min_size == 63
        assert models.vgg16().min_size == 32
    assert models.nin().min_size == 67
    assert models.nin_cifar().min_size == 7


def test_dlfs_net_refuses_other_sizes():
    model = models.deep_convnet()
    with pytest.raises(ValueError, match="28x28"):
        model(torch.randn(1, 1, 32, 32))


def test_wrong_channels_is_a_clear_error():
    with pytest.raises(ValueError, match="in_channels=3"):
        models.vgg11(10, 1, small_input=True, width=0.125)(torch.randn(1, 3, 32, 32))


def test_grouped_conv_equals_two_half_convs():
    """conv2 of the paper's AlexNet: each GPU's 128 filters see only its own 48 maps."""
    torch.manual_seed(0)
    with torch.device("meta"):
        conv = models.alexnet_paper().features[4]
    conv = conv.to_empty(device="cpu")
    conv.reset_parameters()
    assert conv.groups == 2 and (conv.in_channels, conv.out_channels) == (96, 256)
    x = torch.randn(2, 96, 27, 27)
    halves = []
    for g in range(2):
        half = nn.Conv2d(48, 128, kernel_size=5, padding=2)
        half.weight.data.copy_(conv.weight[128 * g:128 * (g + 1)])
        half.bias.data.copy_(conv.bias[128 * g:128 * (g + 1)])
        halves.append(half(x[:, 48 * g:48 * (g + 1)]))
    torch.testing.assert_close(conv(x), torch.cat(halves, dim=1), rtol=1e-4, atol=1e-5)


def test_paper_alexnet_groups():
    with torch.device("meta"):
        paper, single = models.alexnet_paper(), models.alexnet()
    convs = [m for m in paper.features if isinstance(m, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]  # conv3 sees both halves
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert sum(isinstance(m, nn.LocalResponseNorm) for m in paper.modules()) == 2
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in single.modules())


def test_lrn_matches_the_paper_formula():
    """b = a / (k + alpha * sum over 5 neighbouring channels of a^2)^beta, k=2, alpha=1e-4."""
    torch.manual_seed(0)
    a = torch.randn(1, 12, 3, 3) * 30
    squares = nn.functional.pad(a.pow(2), (0, 0, 0, 0, 2, 2))  # pad the channel axis by n/2
    sums = torch.stack([squares[:, i:i + 5].sum(1) for i in range(12)], dim=1)
    expected = a / (2 + 1e-4 * sums).pow(0.75)
    torch.testing.assert_close(paper_lrn()(a), expected)


def test_overlapping_pooling_switch():
    pools = lambda m: {p.kernel_size for p in m.modules() if isinstance(p, nn.MaxPool2d)}  # noqa: E731
    with torch.device("meta"):
        overlapping, disjoint = models.alexnet(), models.alexnet(overlap=False)
    assert pools(overlapping) == {3} and pools(disjoint) == {2}
    assert count(overlapping) == count(disjoint)  # pooling has no parameters
    # and at 224x224 the maps are the same size either way: 55 -> 27 -> 13 -> 6
    for model in (models.alexnet(10, 1, width=0.125), models.alexnet(10, 1, width=0.125, overlap=False)):
        assert model.features(torch.zeros(1, 1, 224, 224)).shape[-1] == 6


def test_width_keeps_groups_even():
    m = models.alexnet_paper(10, 1, small_input=True, width=0.3)
    for c in m.modules():
        if isinstance(c, nn.Conv2d) and c.groups == 2:
            assert c.in_channels % 2 == 0 and c.out_channels % 2 == 0


def test_dlfs_structure_and_he_init():
    torch.manual_seed(0)
    m = models.deep_convnet()
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64]
    assert [c.padding for c in convs] == [(1, 1)] * 3 + [(2, 2)] + [(1, 1)] * 2
    fc1 = m.classifier[1]
    assert (fc1.in_features, fc1.out_features) == (64 * 4 * 4, 50)
    w = convs[5].weight  # fan_in 64*9 = 576: std sqrt(2/576) = 0.0589
    assert abs(w.std().item() - (2 / 576) ** 0.5) < 0.003
    assert all((c.bias == 0).all() for c in convs)
    assert sum(isinstance(x, nn.Dropout) for x in m.modules()) == 2
    assert sum(isinstance(x, nn.Dropout) for x in models.deep_convnet(dropout_logits=False).modules()) == 1


def test_train_step_runs():
    """One optimiser step of each small model on a Fashion-MNIST-sized batch runs and gives a finite loss."""
    torch.manual_seed(0)
    for model, size in [(models.alexnet_paper(10, 1, small_input=True, width=0.125), 32),
                        (models.vgg11_bn(10, 1, small_input=True, width=0.125), 32),
                        (models.nin_cifar(10, 1, width=0.125), 28),
                        (models.deep_convnet(), 28)]:
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        loss = nn.functional.cross_entropy(model(torch.randn(8, 1, size, size)), torch.randint(0, 10, (8,)))
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)


def test_paper_alexnet_drops_the_outputs_of_fc6_and_fc7():
    """The paper zeroes hidden units' outputs; torchvision drops the inputs of fc6 and fc7."""
    kinds = lambda m: [type(x).__name__ for x in m.classifier]  # noqa: E731
    with torch.device("meta"):
        paper, single = models.alexnet_paper(), models.alexnet()
    assert kinds(paper) == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert kinds(single) == ["Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]
    # in training mode, a dropped hidden unit of fc6 contributes nothing to fc7
    torch.manual_seed(0)
    m = models.alexnet_paper(10, 1, small_input=True, width=0.125).train()
    fc6_out = m.classifier[:3](torch.randn(4, m.classifier[0].in_features))
    assert ((fc6_out == 0).float().mean() > 0.4)


def test_paper_init():
    torch.manual_seed(0)
    m = models.alexnet_paper(10, 3, small_input=True, width=0.5, init="paper")
    layers = [x for x in (*m.features, *m.classifier) if isinstance(x, (nn.Conv2d, nn.Linear))]
    assert [x.bias.unique().tolist() for x in layers] == [[0.0], [1.0], [0.0], [1.0], [1.0], [1.0], [1.0], [0.0]]
    big = layers[5].weight  # fc6: tens of thousands of weights
    assert abs(big.std().item() - 0.01) < 5e-4 and abs(big.mean().item()) < 5e-4
    with pytest.raises(ValueError, match="init"):
        models.alexnet_paper(init="xavier")



def test_lrn_runs_in_float32_under_float16_autocast():
    """Activations above 256 square past float16's largest number (65,504): torch's layer then
    divides by inf. cnnlib's computes in float32 and hands back the input's dtype."""
    conv = nn.Conv2d(8, 8, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(8).view(8, 8, 1, 1))
        conv.bias.zero_()
    x = (torch.rand(2, 8, 3, 3) * 600).requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        h = conv(x)  # float16, as after AlexNet's conv1 and ReLU on a GPU
        assert h.dtype == torch.float16
        torch_lrn = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(h)
        ours = paper_lrn()(h)
    assert (torch_lrn[h > 256] == 0).all()  # the failure this layer exists to avoid
    torch.testing.assert_close(ours.float(), paper_lrn()(x.detach()), rtol=2e-3, atol=1e-3)
    assert ours.dtype == torch.float16
    ours.float().sum().backward()
    assert torch.isfinite(x.grad).all()

