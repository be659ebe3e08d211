"""Where cnnlib and torchvision build the same network, the same weights give the same outputs.

Equal parameter counts and shapes cannot see the wiring (a ReLU missing, batch norm after instead
of before, a stride on the wrong convolution): here torchvision's randomly initialised weights,
with random batch-norm statistics so that every normalisation matters, are copied into cnnlib's
model in order (the names differ, the order and shapes are the same) and the outputs compared in
eval mode. Where cnnlib's variant differs on purpose (the small-input stems, 1-channel images,
10 classes), torchvision's model is given the same change, and only that layer is replaced.
"""
import pytest
import torch
import torch.nn as nn
import torchvision

from cnnlib import models
from cnnlib.models.alexnet import paper_lrn


def randomise_batch_norm(model, g):
    """Random scales, shifts and running statistics: an identity-like fresh batch norm would hide its place."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model


def copy_in_order(source, target):
    """Load source's state_dict into target entry by entry in order, checking every shape."""
    ours, theirs = target.state_dict(), source.state_dict()
    assert len(ours) == len(theirs), f"{len(ours)} entries in cnnlib's model, {len(theirs)} in torchvision's"
    for (k_ours, v_ours), (k_theirs, v_theirs) in zip(ours.items(), theirs.items()):
        assert v_ours.shape == v_theirs.shape, f"{k_ours} {tuple(v_ours.shape)} vs {k_theirs} {tuple(v_theirs.shape)}"
    target.load_state_dict(dict(zip(ours, theirs.values())))
    return target


def assert_same_outputs(ours, theirs, input_size, seed=0):
    g = torch.Generator().manual_seed(seed)
    copy_in_order(randomise_batch_norm(theirs, g), ours)
    x = torch.randn(2, *input_size, generator=g)
    ours.eval(), theirs.eval()
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())


def torchvision_model(name, **kwargs):
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None, **kwargs)


def built_without_init(build):
    """cnnlib's model, uninitialised: every value is overwritten by torchvision's."""
    with torch.device("meta"):
        model = build()
    return model.to_empty(device="cpu")


VGGS = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]


@pytest.mark.parametrize("name, size", [("alexnet", 224), ("vgg11", 64), ("vgg16_bn", 64), ("resnet18", 224),
                                        ("resnet34", 96), ("resnet50", 96), ("densenet121", 64)])
def test_imagenet_networks_equal_torchvision(name, size):
    """At 1000 classes and 3 channels the two are the same network (VGG and DenseNet at a smaller
    input to keep the test short: the adaptive pooling in front of the classifier covers it)."""
    ours = built_without_init(getattr(models, name))
    assert_same_outputs(ours, torchvision_model(name), (3, size, size))


def test_googlenet_equals_torchvision():
    """torchvision's variant (batch norm, the 3x3 '5x5' branch); transform_input off, no aux heads."""
    ours = built_without_init(lambda: models.googlenet(aux_logits=False, variant="torchvision"))
    theirs = torchvision_model("googlenet", aux_logits=False, init_weights=True, transform_input=False)
    assert_same_outputs(ours, theirs, (3, 96, 96))


@pytest.mark.parametrize("name", VGGS)
def test_small_input_vgg_is_torchvision_with_a_1x1_classifier_input(name):
    """small_input=True on 1-channel 32x32 images: torchvision's VGG with a 1-channel first
    convolution, the adaptive pooling to 1x1 and fc6 reading 512 numbers, 10 classes."""
    theirs = torchvision_model(name, num_classes=10)
    theirs.features[0] = nn.Conv2d(1, 64, 3, padding=1)
    theirs.avgpool = nn.AdaptiveAvgPool2d(1)
    theirs.classifier[0] = nn.Linear(512, 4096)
    ours = built_without_init(lambda: getattr(models, name)(10, 1, small_input=True))
    assert_same_outputs(ours, theirs, (1, 32, 32))


def test_small_input_alexnet_is_torchvision_with_a_3x3_stem():
    """alexnet(small_input=True): a 3x3 stride-1 stem instead of 11x11 stride 4, pooling to 3x3."""
    theirs = torchvision_model("alexnet", num_classes=10)
    theirs.features[0] = nn.Conv2d(1, 64, 3, padding=1)
    theirs.avgpool = nn.AdaptiveAvgPool2d(3)
    theirs.classifier[1] = nn.Linear(256 * 3 * 3, 4096)
    ours = built_without_init(lambda: models.alexnet(10, 1, small_input=True))
    assert_same_outputs(ours, theirs, (1, 28, 28))


def test_alexnet_paper_without_groups_and_lrn_is_torchvision_at_the_paper_widths():
    """The paper's network is torchvision's with widths 96-256-384-384-256, groups=2 on conv2, 4, 5,
    LRN after conv1 and conv2 and dropout after fc6 and fc7: torchvision's layers given those."""
    theirs = torchvision_model("alexnet")
    f = theirs.features
    f[0], f[3] = nn.Conv2d(3, 96, 11, 4, 2), nn.Conv2d(96, 256, 5, padding=2, groups=2)
    f[6], f[8] = nn.Conv2d(256, 384, 3, padding=1), nn.Conv2d(384, 384, 3, padding=1, groups=2)
    f[10] = nn.Conv2d(384, 256, 3, padding=1, groups=2)
    theirs.features = nn.Sequential(*f[:2], paper_lrn(), *f[2:5], paper_lrn(), *f[5:])
    ours = built_without_init(models.alexnet_paper)
    assert_same_outputs(ours, theirs, (3, 224, 224))  # dropout's place differs only in training


def test_small_input_resnet18_is_torchvision_with_the_cifar_stem():
    """resnet18(small_input=True): the usual CIFAR change, a 3x3 stride-1 stem and no max pool."""
    theirs = torchvision_model("resnet18", num_classes=10)
    theirs.conv1 = nn.Conv2d(1, 64, 3, padding=1, bias=False)
    theirs.maxpool = nn.Identity()
    ours = built_without_init(lambda: models.resnet18(10, 1, small_input=True))
    assert_same_outputs(ours, theirs, (1, 28, 28))


def test_one_channel_densenet121_is_torchvision_with_a_one_channel_stem():
    theirs = torchvision_model("densenet121", num_classes=10)
    theirs.features.conv0 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    ours = built_without_init(lambda: models.densenet121(10, 1))
    assert_same_outputs(ours, theirs, (1, 64, 64))


def test_the_comparison_sees_a_missing_relu():
    """The check this file exists for: one ReLU taken out of cnnlib's ResNet makes it fail."""
    ours = built_without_init(lambda: models.resnet18(10, 1, small_input=True))
    ours.stem[2] = nn.Identity()
    theirs = torchvision_model("resnet18", num_classes=10)
    theirs.conv1, theirs.maxpool = nn.Conv2d(1, 64, 3, padding=1, bias=False), nn.Identity()
    with pytest.raises(AssertionError):
        assert_same_outputs(ours, theirs, (1, 28, 28))
