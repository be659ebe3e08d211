"""GAN generators and discriminators: DCGAN (Radford et al., 2016) for 28x28 images, and MLPs
for 2-D toy distributions (chapter 7, chapters/07_gans).

DCGAN's five architecture guidelines, each visible below:
1. no pooling: strided convolutions in the discriminator, fractional-strided (transposed)
   convolutions in the generator, so both networks learn their own resampling;
2. batch norm in both networks, except the generator's output and the discriminator's input layer;
3. no fully connected hidden layers: the generator's first layer is one linear projection of z
   to a small stack of maps, the discriminator's last layer one linear read-out of its last maps;
4. ReLU in the generator, tanh at its output (images in [-1, 1]);
5. LeakyReLU (slope 0.2) in the discriminator.
The paper's training details add weights drawn from N(0, 0.02) (dcgan_init) and Adam with
lr 2e-4, beta1 0.5. It works at 64x64 with four stride-2 layers; 28x28 takes two (7 -> 14 -> 28).
`upsample="resize"` replaces the generator's transposed convolutions by a nearest-neighbour
resize and a 3x3 convolution (Odena, Dumoulin & Olah, 2016), against checkerboard artefacts.

A conditional variant (Mirza & Osindero, 2014) takes a class label: the generator reads
[z, embedding(y)], the discriminator reads the image with y as one-hot constant planes.

- dcgan_generator(), dcgan_discriminator(): 28x28 images, optionally conditional; `channels`
  is an absolute number of maps (14x14 maps; twice as many at 7x7).
- toy_generator(), toy_discriminator(): MLPs for 2-D points; minibatch_std=True gives the
  discriminator the spread of the batch as one more feature (a remedy for mode collapse).
"""
import torch
import torch.nn as nn

from ._checks import check_input
from ._registry import register


def _transposed(c_in, c_out, bias):
    """Kernel 4, stride 2, padding 1: (n - 1) * 2 - 2 + 4 = 2n."""
    return nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1,
                              bias=bias)


def _resize_then_convolve(c_in, c_out, bias):
    """Every output pixel comes from the same 3x3 kernel: no uneven
    overlap."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                         nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias))


UPSAMPLING = {"transposed": _transposed, "resize": _resize_then_convolve}


class Generator(nn.Module):
    """z (and a label y, if conditional) -> a 28x28 image in [-1, 1].

    channels: the maps at 14x14 (twice as many at 7x7), an absolute count.
    upsample: "transposed" (stride-2 transposed convolutions, kernel 4, as the paper) or
    "resize" (nearest-neighbour resize by 2, then a 3x3 convolution: the remedy of Odena,
    Dumoulin & Olah (2016) for the checkerboard artefacts of transposed convolutions).
    """

    def __init__(self, latent_dim=64, channels=32, out_channels=1,
                 num_classes=None, upsample="transposed"):
        super().__init__()
        _check_upsample(upsample)
        self.latent_dim, self.num_classes = latent_dim, num_classes
        if num_classes:  # a learned embedding of the label, appended to z
            self.embed = nn.Embedding(num_classes, num_classes)
        else:
            self.embed = None
        in_dim, c = latent_dim + (num_classes or 0), channels
        # z -> 2c maps of 7x7: one linear layer
        self.project = nn.Sequential(
            nn.Linear(in_dim, 2 * c * 7 * 7, bias=False),
            nn.Unflatten(1, (2 * c, 7, 7)), nn.BatchNorm2d(2 * c),
            nn.ReLU(),
        )
        # 7 -> 14 -> 28, no pooling, no unpooling
        double = UPSAMPLING[upsample]
        self.upsample = nn.Sequential(
            double(2 * c, c, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
            double(c, out_channels, bias=True),
            nn.Tanh(),  # no batch norm here
        )

    def forward(self, z, y=None):
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"the generator expects noise of shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        if self.embed is not None:
            _check_labels(y, self.num_classes, "generator")
            z = torch.cat([z, self.embed(y)], dim=1)
        return self.upsample(self.project(z))


class Discriminator(nn.Module):
    """Returns one logit per image: D(x) = sigmoid(logit) is the probability that x is real."""

    def __init__(self, channels=32, in_channels=1, num_classes=None):
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        c_in, c = in_channels + (num_classes or 0), channels
        # 28 -> 14 -> 7 by strided convolutions
        self.features = nn.Sequential(
            nn.Conv2d(c_in, c, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),  # no batch norm on the input layer
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2),
        )
        self.read_out = nn.Sequential(nn.Flatten(),
                                      nn.Linear(2 * c * 7 * 7, 1))

    def forward(self, x, y=None):
        check_input(x, model="the DCGAN discriminator", channels=self.in_channels, size=28)
        if self.num_classes:
            _check_labels(y, self.num_classes, "discriminator")
            planes = nn.functional.one_hot(y, self.num_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], dim=1)
        return self.read_out(self.features(x)).squeeze(1)


def _check_upsample(upsample):
    if upsample not in UPSAMPLING:
        raise ValueError(f"upsample must be one of {', '.join(map(repr, UPSAMPLING))}, got {upsample!r}")


def _check_labels(y, num_classes, network):
    """Class labels for a conditional network: present, integers, each in [0, num_classes)."""
    if y is None:
        raise ValueError(f"a conditional {network} needs class labels y")
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"class labels y must be integers, got dtype {y.dtype}")
    if ((y < 0) | (y >= num_classes)).any():  # on a GPU, nn.Embedding would fail with a device-side assert
        raise ValueError(f"class labels y must be in [0, {num_classes - 1}] (num_classes={num_classes}), "
                         f"got values from {y.min().item()} to {y.max().item()}")


def dcgan_init(model):
    """DCGAN's initialisation: conv and linear weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return model


@register((64,))
def dcgan_generator(latent_dim=64, channels=32, out_channels=1, num_classes=None, upsample="transposed"):
    """DCGAN's generator for 28x28 images (see Generator for channels and upsample)."""
    return dcgan_init(Generator(latent_dim, channels, out_channels, num_classes, upsample))


@register((1, 28, 28))
def dcgan_discriminator(channels=32, in_channels=1, num_classes=None):
    """DCGAN's discriminator for 28x28 images: channels maps at 14x14, twice as many at 7x7."""
    return dcgan_init(Discriminator(channels, in_channels, num_classes))


class MinibatchStd(nn.Module):
    """Append the batch's mean standard deviation of the features as one
    more feature.

    A generator that puts every sample in one place gives batches with
    almost no spread, which real batches never have: the discriminator can
    now see that, and punish it.
    """

    def forward(self, h):
        spread = h.std(dim=0, unbiased=False).mean().expand(len(h), 1)
        return torch.cat([h, spread], dim=1)


def _mlp(sizes, activation):
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), activation()]
    return layers + [nn.Linear(sizes[-2], sizes[-1])]


class ToyDiscriminator(nn.Module):
    def __init__(self, hidden=128, depth=3, minibatch_std=False):
        super().__init__()
        self.body = nn.Sequential(*_mlp([2] + [hidden] * depth, nn.LeakyReLU), nn.LeakyReLU())
        self.minibatch_std = MinibatchStd() if minibatch_std else nn.Identity()
        self.head = nn.Linear(hidden + int(minibatch_std), 1)

    def forward(self, x):
        return self.head(self.minibatch_std(self.body(x))).squeeze(1)


@register((2,))
def toy_generator(latent_dim=2, hidden=128, depth=3):
    """An MLP from `latent_dim`-D Gaussian noise to 2-D points."""
    g = nn.Sequential(*_mlp([latent_dim] + [hidden] * depth + [2], nn.ReLU))
    g.latent_dim = latent_dim
    return g


@register((2,))
def toy_discriminator(hidden=128, depth=3, minibatch_std=False):
    """An MLP from 2-D points to one logit (`minibatch_std`: see MinibatchStd)."""
    return ToyDiscriminator(hidden, depth, minibatch_std)
