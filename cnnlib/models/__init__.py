"""Model families, one module each, with a builder per variant, every builder in one registry.

    models.names()                            # every registered builder
    models.build("resnet18", num_classes=10)  # = models.resnet18(num_classes=10)
The families are taught in chapters 1 (MLPs), 5 (LeNet to DenseNet), 6 (YOLO, FCN) and 7 (GANs).
"""
from ._registry import build, input_size, names
from .lenet import LeNet, lenet5, lenet5_d2l, lenet5_modern, xavier_init
from .mlp import MLP, mlp, softmax_regression
from .alexnet import AlexNet, alexnet, alexnet_paper
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn
from .nin import NiN, nin, nin_cifar
from .dlfs import DeepConvNet, deep_convnet
from .googlenet import GoogLeNet, googlenet, googlenet_loss, googlenet_small
from .resnet import ResNet, resnet18, resnet34, resnet50, resnet_cifar
from .densenet import DenseNet, densenet121, densenet_small
from .dcgan import Discriminator, Generator, dcgan_discriminator, dcgan_generator, toy_discriminator, toy_generator
from . import fcn, rcnn, yolo
from .fcn import fcn_scenes
from .rcnn import faster_rcnn_scenes
from .yolo import yolo_scenes, yolo_voc
from ..arith import longest_path  # the models' pages count their depth with it

__all__ = [
    "build", "input_size", "names", "LeNet", "lenet5", "lenet5_d2l", "lenet5_modern",
    "xavier_init", "MLP", "mlp", "softmax_regression", "AlexNet", "alexnet", "alexnet_paper",
    "VGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "NiN", "nin", "nin_cifar", "DeepConvNet", "deep_convnet", "GoogLeNet", "googlenet",
    "googlenet_loss", "googlenet_small", "ResNet", "resnet18", "resnet34", "resnet50",
    "resnet_cifar", "DenseNet", "densenet121", "densenet_small", "Discriminator", "Generator",
    "dcgan_discriminator", "dcgan_generator", "toy_discriminator", "toy_generator", "fcn",
    "rcnn", "yolo", "fcn_scenes", "faster_rcnn_scenes", "yolo_scenes", "yolo_voc",
    "longest_path",
]
