"""Every registered model builder, one parametrised test each (timm's tests/test_models.py pattern):
the parameter count against a published or hand-counted figure, forward and backward at the
smallest and the usual input, the output shape; and the registry's own behaviour."""
import inspect

import pytest
import torch
import torchvision

from cnnlib import models


def conv(cin, cout, k, bias=True):
    return cout * cin * k * k + (cout if bias else 0)


def conv_bn(cin, cout):  # 3x3 convolution without bias, then batch norm (scale and shift)
    return conv(cin, cout, 3, bias=False) + 2 * cout


def linear(i, o):
    return i * o + o


def torchvision_figure(name):
    """The num_params torchvision publishes with its ImageNet weights (read from the enum, no download)."""
    return torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]


TORCHVISION = "torchvision's published num_params of its ImageNet weights"
# name: (builder keyword arguments, parameter count, where the figure comes from)
FIGURES = {
    "lenet5": ({}, 61_706, "the book: 00_introduction/01_the_course and 02_lenet_end_to_end print it"),
    "lenet5_d2l": ({}, 156 + 2_416 + 48_120 + 10_164 + 850, "hand count of LeNet-5's five layers"),
    "lenet5_modern": ({}, 156 + 2_416 + 48_120 + 10_164 + 850, "hand count of LeNet-5's five layers"),
    "softmax_regression": ({}, linear(784, 10), "d2l 4.1 (784 x 10 + 10); the book: 01_mlp/04_fashion_mnist"),
    "mlp": ({}, 203_530, "the book: 01_mlp/02_activations_and_mlps and 04_fashion_mnist print it"),
    "alexnet": ({}, torchvision_figure("alexnet"), TORCHVISION),
    "alexnet_paper": ({}, 60_965_224, "the book: 04_cnn_arithmetic/02_parameters_and_macs (the paper: "
                                      "'60 million parameters')"),
    **{name: ({}, torchvision_figure(name), TORCHVISION)
       for name in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")},
    "nin": ({}, (conv(3, 96, 11) + 2 * conv(96, 96, 1) + conv(96, 256, 5) + 2 * conv(256, 256, 1)
                 + conv(256, 384, 3) + 2 * conv(384, 384, 1) + conv(384, 1000, 3) + 2 * conv(1000, 1000, 1)),
            "hand count of d2l's NiN (8.3): blocks of 96, 256, 384 and 1000 channels"),
    "nin_cifar": ({}, (conv(3, 192, 5) + conv(192, 160, 1) + conv(160, 96, 1) + conv(96, 192, 5)
                       + 2 * conv(192, 192, 1) + conv(192, 192, 3) + conv(192, 192, 1) + conv(192, 10, 1)),
                  "hand count of the paper's CIFAR-10 NiN (192-160-96, 192-192-192, 192-192-10)"),
    "deep_convnet": ({}, (conv(1, 16, 3) + conv(16, 16, 3) + conv(16, 32, 3) + conv(32, 32, 3)
                          + conv(32, 64, 3) + conv(64, 64, 3) + linear(64 * 4 * 4, 50) + linear(50, 10)),
                     "hand count of Deep Learning from Scratch's chapter 8 network"),
    "googlenet": (dict(aux_logits=False), 6_998_552, "hand count of the 2014 paper's Table 1 "
                  "(tests/test_models_modern.py; torchvision's variant is checked against torchvision there)"),
    "googlenet_small": ({}, 347_906, "the book: 05_modern_cnns/06_googlenet ('width 0.25: 347,906')"),
    "resnet18": ({}, torchvision_figure("resnet18"), TORCHVISION),
    "resnet34": ({}, torchvision_figure("resnet34"), TORCHVISION),
    "resnet50": ({}, torchvision_figure("resnet50"), TORCHVISION),
    "resnet_cifar": ({}, 269_434, "hand count of the paper's ResNet-20 with option A shortcuts "
                                  "(tests/test_models_modern.py; the paper's Table 6: 0.27M)"),
    "densenet121": ({}, torchvision_figure("densenet121"), TORCHVISION),
    "densenet_small": ({}, 175_690, "the book: 05_modern_cnns/08_densenet ('DenseNet-BC-40 (k=12, small "
                                    "input): 175,690')"),
    "dcgan_generator": ({}, 234_177, "the book: 07_gans/03_dcgan (torchinfo's summary of G)"),
    "dcgan_discriminator": ({}, 36_577, "the book: 07_gans/03_dcgan (torchinfo's summary of D)"),
    "toy_generator": ({}, linear(2, 128) + 2 * linear(128, 128) + linear(128, 2), "hand count: 2-128-128-128-2"),
    "toy_discriminator": ({}, linear(2, 128) + 2 * linear(128, 128) + linear(128, 1), "hand count: 2-128-128-128-1"),
    "yolo_scenes": ({}, (conv_bn(1, 16) + conv_bn(16, 32) + conv_bn(32, 64) + conv_bn(64, 64) + conv_bn(64, 128)
                         + conv_bn(128, 128) + conv(128, 2 * 5 + 10, 1)),
                    "hand count of yolo.py's stages (16), (32), (64, 64), (128, 128) and the 1x1 head"),
    "yolo_voc": ({}, (conv_bn(3, 8) + conv_bn(8, 8) + conv_bn(8, 16) + conv_bn(16, 16) + conv_bn(16, 32)
                      + conv_bn(32, 32) + conv_bn(32, 64) + conv(64, 2 * 5 + 20, 1)),
                 "hand count of yolo.py's seven stages and the 7 x 7 x 30 head"),
    "fcn_scenes": ({}, (conv_bn(1, 16) + conv_bn(16, 32) + conv_bn(32, 32) + conv_bn(32, 64) + conv_bn(64, 64)
                        + conv_bn(64, 128) + conv_bn(128, 128) + conv(128, 11, 1) + conv(64, 11, 1)
                        + conv(32, 11, 1) + conv(16, 11, 1) + 3 * 11 * 11 * 4 * 4),
                   "hand count of fcn.py: four stages, four 1x1 scores, three 4x4 transposed convolutions"),
    "faster_rcnn_scenes": ({}, 282_096 + 153_389 + 1_685_815,
                           "the book: 06_detection_segmentation/04_faster_rcnn (backbone, RPN, RoI heads)"),
}


def test_every_builder_is_registered_and_has_a_figure():
    assert set(models.names()) == set(FIGURES)
    builders = {"lenet5", "resnet18", "vgg16_bn", "faster_rcnn_scenes", "fcn_scenes", "yolo_voc", "toy_generator"}
    assert builders <= set(models.names())


def test_build_is_the_builder():
    torch.manual_seed(0)
    a = models.build("resnet_cifar", depth=8, num_classes=3, channels=4)
    torch.manual_seed(0)
    b = models.resnet_cifar(8, 3, channels=4)
    assert type(a) is type(b) and all(torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                                          b.state_dict().values()))
    assert models.input_size("resnet18") == (3, 224, 224)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model 'resnet81' \(did you mean 'resnet18'\?\); "
                                         r"known models: alexnet, alexnet_paper, .*yolo_voc"):
        models.build("resnet81")
    with pytest.raises(ValueError, match="unknown model"):
        models.input_size("LeNet")


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_parameter_count_equals_the_published_figure(name):
    kwargs, figure, source = FIGURES[name]
    with torch.device("meta"):  # no memory, no initialisation: counting needs neither
        model = models.build(name, **kwargs)
    assert sum(p.numel() for p in model.parameters()) == figure, f"{name}: figure from {source}"


def smallest(model, usual):
    """The smallest input of the same shape kind: min_size where the model has one."""
    size = getattr(model, "min_size", None)
    return usual if size is None or len(usual) != 3 else (usual[0], size, size)


def default(name, argument):
    """The builder's own default for an argument (the model is not asked about itself)."""
    return inspect.signature(getattr(models, name)).parameters[argument].default


def expected_shape(name, model, batch, size):
    if name == "fcn_scenes":
        return (batch, default(name, "num_classes"), *size[1:])
    if name.startswith("yolo"):
        grid = size[-1] // model.min_size
        return (batch, grid, grid, default(name, "boxes_per_cell") * 5 + default(name, "num_classes"))
    if name == "dcgan_generator":
        return (batch, 1, 28, 28)
    if name == "toy_generator":
        return (batch, 2)
    if name in ("dcgan_discriminator", "toy_discriminator"):
        return (batch,)
    return (batch, default(name, "num_classes"))  # a classifier: one score per class


def fake_scenes(batch, size):
    """Images and one or two boxes each, the target format torchvision's detectors take."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(batch, *size, generator=g)
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 40.0, 50.0], [50.0, 20.0, 80.0, 60.0]][:1 + i % 2]),
                "labels": torch.tensor([3, 7][:1 + i % 2])} for i in range(batch)]
    return images, targets


def forward_loss(name, model, x):
    """A scalar to backpropagate, after checking the output's shape."""
    if name == "faster_rcnn_scenes":
        images, targets = fake_scenes(len(x), tuple(x.shape[1:]))
        losses = model(list(images), targets)
        assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
        return sum(losses.values())
    out = model(x)
    outs = out if isinstance(out, tuple) else (out,)  # GoogLeNet in training: logits and the aux heads
    assert outs[0].shape == expected_shape(name, model, len(x), tuple(x.shape[1:]))
    return sum(o.float().sum() for o in outs)


def built_for_a_pass(name):
    """The default model. Those over 50M parameters (AlexNet, VGG) are built on the meta device and
    filled with each output the mean of its inputs: drawing 100M random weights took most of this
    test's time, and the pass checks the wiring, not the values."""
    if FIGURES[name][1] < 50_000_000:
        return models.build(name)
    with torch.device("meta"):
        model = models.build(name)
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1 / p[0].numel() if p.ndim > 1 else 0.0)
    return model


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_forward_and_backward_at_the_smallest_and_usual_input(name):
    torch.manual_seed(0)
    model = built_for_a_pass(name).train()
    usual = models.input_size(name)
    for size in sorted({smallest(model, usual), usual}):
        model.zero_grad(set_to_none=True)
        loss = forward_loss(name, model, torch.randn(2, *size))
        loss.backward()
        assert torch.isfinite(loss)
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"{name} at {size}: no gradient reaches {missing[:5]}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_faster_rcnn_eval_returns_detections_per_image():
    torch.manual_seed(0)
    model = models.faster_rcnn_scenes().eval()
    images, _ = fake_scenes(3, (1, 96, 96))
    with torch.no_grad():
        out = model(list(images))
    assert len(out) == 3
    for det in out:
        n = len(det["boxes"])
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == det["labels"].shape == (n,)
        assert ((det["labels"] >= 1) & (det["labels"] <= 10)).all()  # class 0 is the background
