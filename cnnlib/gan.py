"""Generative adversarial networks: the training step for fit, toy data and their metrics, FID.

    gan = GAN(generator, discriminator)
    step = GANStep(gan, opt_g, opt_d)
    history = fit(gan, loader, epochs=5, optimizer=[opt_g, opt_d], train_step=step)

The discriminator D outputs a logit; D(x) = sigmoid(logit) is its probability that x is real.
One step: D ascends log D(x) + log(1 - D(G(z))), then G descends either the minimax loss
log(1 - D(G(z))) or the non-saturating one -log D(G(z)) (Goodfellow et al., 2014).

Chapter 7 (chapters/07_gans) teaches these pieces.
"""
import contextlib
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._validate import _is_int, positive_int
from .checkpoint import rng_preserved


class GAN(nn.Module):
    """A generator and a discriminator in one module, so fit moves, checkpoints and resumes both."""

    def __init__(self, generator, discriminator):
        super().__init__()
        if not _is_int(getattr(generator, "latent_dim", None)):
            raise TypeError(f"the generator needs a latent_dim attribute (the size of its noise input), "
                             f"got {type(generator).__name__} with latent_dim={getattr(generator, 'latent_dim', None)!r}; "
                             "set generator.latent_dim = <size>")
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim = generator.latent_dim
        self.num_classes = getattr(generator, "num_classes", None)
        self._probe_generator()

    @torch.no_grad()
    def _probe_generator(self):
        """One forward pass on zero noise (eval mode: no statistics move), so a latent_dim that
        disagrees with the generator's first layer is named here, not inside a matmul."""
        G = self.generator
        device = next(G.parameters(), torch.empty(0)).device
        z = torch.zeros(2, self.latent_dim, device=device)
        y = torch.zeros(2, dtype=torch.long, device=device) if self.num_classes else None
        was_training = G.training
        G.eval()
        try:
            _call(G, z, y)
        except Exception as err:
            raise ValueError(f"the generator's latent_dim={self.latent_dim} does not fit its input: noise of "
                             f"shape {tuple(z.shape)} fails with: {err}") from err
        finally:
            G.train(was_training)

    def noise(self, n, generator=None):
        device = next(self.parameters()).device
        if generator is None:
            return torch.randn(n, self.latent_dim, device=device)
        return torch.randn(n, self.latent_dim, generator=generator).to(device)

    @torch.no_grad()
    def sample(self, n=None, z=None, y=None):
        """n samples (or one per row of z), in eval mode; y: class labels of a conditional G."""
        z = self.noise(n) if z is None else z.to(next(self.parameters()).device)
        was_training = self.generator.training
        self.generator.eval()
        x = self.generator(z) if y is None else self.generator(z, y.to(z.device))
        self.generator.train(was_training)
        return x


def _call(net, x, y):
    return net(x) if y is None else net(x, y)


class GANStep:
    """One GAN training step, a train_step for fit: k discriminator updates, then one of G.

    generator_loss: "non_saturating" (-log D(G(z)), the default) or "minimax" (log(1 - D(G(z)))).
    d_steps: discriminator updates per generator update.
    instance_noise: std of Gaussian noise added to both real and fake inputs of D.
    Batches are (x, y): y is ignored unless the GAN is conditional; image batches are expected
    in [-1, 1] (the generator's tanh range): pass `scale_images=True` to map [0, 1] to it
    (a warning says so once when a tanh generator meets real images that are all >= 0).
    `optimizers` is [opt_g, opt_d], the order the chapter passes them to fit, so fit can
    checkpoint both. The step runs in float32 on every device: fit's mixed precision (autocast)
    wraps only its own loss_fn steps, never a train_step.
    """

    def __init__(self, gan, opt_g, opt_d, *, generator_loss="non_saturating", d_steps=1,
                 instance_noise=0.0, scale_images=False):
        if generator_loss not in ("non_saturating", "minimax"):
            raise ValueError(f"generator_loss must be 'non_saturating' or 'minimax', got {generator_loss!r}")
        positive_int("d_steps", d_steps, also=" (discriminator updates per generator update)")
        self.gan, self.opt_g, self.opt_d = gan, opt_g, opt_d
        self.optimizers = [opt_g, opt_d]
        self.generator_loss, self.d_steps = generator_loss, d_steps
        self.instance_noise, self.scale_images = instance_noise, scale_images
        self._range_unchecked = not scale_images and _ends_in_tanh(gan.generator)

    def _noisy(self, x):
        return x + self.instance_noise * torch.randn_like(x) if self.instance_noise else x

    def __call__(self, batch):
        real, y = batch
        self._warn_once_if_unscaled(real)
        if self.scale_images:
            real = real * 2 - 1
        y = y if self.gan.num_classes else None
        G, D = self.gan.generator, self.gan.discriminator
        n = len(real)
        for _ in range(self.d_steps):
            fake = _call(G, self.gan.noise(n), y)
            logit_real = _call(D, self._noisy(real), y)
            logit_fake = _call(D, self._noisy(fake.detach()), y)
            loss_d = discriminator_loss(logit_real, logit_fake)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        logit_fake = _call(D, self._noisy(fake), y)
        loss_g = generator_loss(logit_fake, self.generator_loss)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
                # D's belief, before its update
                "d_real": torch.sigmoid(logit_real).mean().detach(),
                # after it: what G trained on
                "d_fake": torch.sigmoid(logit_fake).mean().detach()}


    def _warn_once_if_unscaled(self, real):
        if self._range_unchecked:  # one host sync, on the first batch only
            self._range_unchecked = False
            if real.min() >= 0:
                warnings.warn("the generator ends in tanh (outputs in [-1, 1]) but the real images are all "
                              ">= 0: pass GANStep(..., scale_images=True) to map [0, 1] images to [-1, 1]",
                              stacklevel=3)


def _ends_in_tanh(net):
    leaves = [m for m in net.modules() if not list(m.children())]
    return bool(leaves) and isinstance(leaves[-1], nn.Tanh)


def discriminator_loss(logit_real, logit_fake):
    """-[log D(x) + log(1 - D(G(z)))], averaged: binary cross-entropy with real = 1, fake = 0."""
    return (F.binary_cross_entropy_with_logits(logit_real, torch.ones_like(logit_real))
            + F.binary_cross_entropy_with_logits(logit_fake, torch.zeros_like(logit_fake)))


def generator_loss(logit_fake, kind="non_saturating"):
    """Minimax: mean log(1 - D(G(z))) (G minimises it). Non-saturating: mean -log D(G(z))."""
    if kind == "minimax":
        return -F.softplus(logit_fake).mean()  # log(1 - sigmoid(l)) = -softplus(l)
    return F.softplus(-logit_fake).mean()      # -log sigmoid(l) = softplus(-l)


def optimal_discriminator(p_data, p_g):
    """D*(x) = p_data(x) / (p_data(x) + p_g(x)): the best D against a fixed generator."""
    return p_data / (p_data + p_g)


def bce_loss(model, batch):
    """Binary cross-entropy of a batch (x, y) with y in {0, 1}: a loss_fn for fit (D alone)."""
    x, y = batch
    logits = model(x)
    loss = F.binary_cross_entropy_with_logits(logits, y.float())
    return loss, {"acc": ((logits > 0) == (y > 0.5)).float().mean()}


# ---- 2-D toy distributions and their metrics -------------------------------------------------

def ring_centers(modes=8, radius=2.0):
    angles = torch.arange(modes) * (2 * math.pi / modes)
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


def grid_centers(side=5, spacing=2.0):
    ticks = (torch.arange(side) - (side - 1) / 2) * spacing
    return torch.cartesian_prod(ticks, ticks)


def mixture_sample(centers, n, std, generator=None):
    """n points from an equal mixture of Gaussians of the given std around `centers`."""
    which = torch.randint(len(centers), (n,), generator=generator)
    return centers[which] + std * torch.randn(n, 2, generator=generator)


def toy_metrics(samples, centers, std, *, within=3.0, min_share=0.25):
    """The usual toy-GAN scores (as in VEEGAN and unrolled GANs).

    high_quality: the share of samples within `within` std of their nearest center.
    modes: how many centers received at least `min_share` of their fair share (n / modes) of
    high-quality samples.
    """
    samples, centers = samples.detach().float().cpu(), centers.float()
    dist, nearest = torch.cdist(samples, centers).min(dim=1)
    good = dist <= within * std
    counts = torch.bincount(nearest[good], minlength=len(centers))
    fair = len(samples) / len(centers)
    return {"modes": int((counts >= min_share * fair).sum()), "high_quality": good.float().mean().item()}


# ---- Frechet distance on a classifier's features ----------------------------------------------

class Features(nn.Module):
    """A classifier's penultimate activations, as the feature extractor of torchmetrics' FID.

    `body` maps images (in [0, 1]) to feature vectors, e.g. all layers of a classifier but the last.
    """

    def __init__(self, body, num_features):
        super().__init__()
        self.body, self.num_features = body.eval(), num_features

    def forward(self, x):
        return self.body(x.float()).flatten(1)


# The feature classifier's one setting, whatever the budget and device, so that Frechet distances
# and class shares from different budgets, devices and pages are read in the same feature space.
# The last `held_out` images of a fixed permutation of the training set are never trained on: real
# images the classifier did not see, for the Frechet distance's floor. Smoke (CI) trains a tiny one.
FEATURE_CLASSIFIER = dict(seed=0, epochs=4, batch_size=256, lr=2e-3, train_size=50_000, held_out=10_000)
FEATURE_CLASSIFIER_SMOKE = dict(FEATURE_CLASSIFIER, epochs=2, train_size=4_096, held_out=512)


@dataclass
class FeatureClassifier:
    """What feature_classifier() returns: the classifier, its features and what it was measured on."""
    model: nn.Module          # LeNet-5 (modern) in eval mode; takes images in [0, 1]
    features: Features        # its last hidden layer's 84 units
    test_accuracy: float      # on all 10,000 Fashion-MNIST test images
    held_out: torch.Tensor    # training images it never saw, float in [0, 1], on its device
    setting: dict

    def __str__(self):
        s = self.setting
        return (f"LeNet-5 (modern): seed {s['seed']}, {s['epochs']} epochs on {s['train_size']:,} training "
                f"images,\nAdam lr {s['lr']:g}, batch {s['batch_size']}; test accuracy {self.test_accuracy:.1%};\n"
                f"{s['held_out']:,} training images held out")


def feature_classifier(device=None, *, budget=None, root=None):
    """LeNet-5 (modern) trained on Fashion-MNIST at one fixed setting whatever the page's budget
    (FEATURE_CLASSIFIER; smoke: FEATURE_CLASSIFIER_SMOKE): chapter 7's eyes for the class shares
    of samples and the Frechet distance (07_gans/03_dcgan, 04_conditional_gan_and_fid)."""
    from . import config, data
    from .models import lenet5_modern
    from .train import evaluate, fit
    s = classifier_setting(budget or config.budget_name())
    device = torch.device(device or config.device())
    images, labels = data.load("FashionMNIST", train=True, root=root)
    train, held_out = classifier_split(len(labels), s)
    test_images, test_labels = data.load("FashionMNIST", train=False, root=root)
    train_loader = data.TensorLoader(images[train], labels[train], s["batch_size"], shuffle=True,
                                     drop_last=True, device=device, seed=s["seed"])
    test_loader = data.TensorLoader(test_images, test_labels, 1000, device=device)
    with _seeded(s["seed"]):
        model = lenet5_modern().to(device)
        fit(model, train_loader, epochs=s["epochs"], optimizer=torch.optim.Adam(model.parameters(), s["lr"]),
            device=device, amp=False, quiet=True)   # float32 on every device
    model.eval()
    features = Features(nn.Sequential(model.features, *model.classifier[:-1]), num_features=84)
    return FeatureClassifier(model, features, evaluate(model, test_loader, amp=False)["acc"],
                             images[held_out].float().div(255).to(device), s)


def classifier_setting(budget):
    """The feature classifier's setting: the same for cpu and full, a tiny one for smoke."""
    if budget not in ("smoke", "cpu", "full"):
        raise ValueError(f"budget must be 'smoke', 'cpu' or 'full', got {budget!r}")
    return dict(FEATURE_CLASSIFIER_SMOKE if budget == "smoke" else FEATURE_CLASSIFIER)


def classifier_split(n, setting):
    """(train, held_out) indices into the n training images: a fixed permutation's first
    train_size and last held_out, disjoint by construction."""
    if setting["train_size"] + setting["held_out"] > n:
        raise ValueError(f"train_size + held_out must be at most the {n} training images, got "
                         f"{setting['train_size']} + {setting['held_out']}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(setting["seed"]))
    return order[:setting["train_size"]], order[n - setting["held_out"]:]


@contextlib.contextmanager
def _seeded(seed):
    """Run with torch's global generators seeded, then put every generator back as it was, so
    the page's own random draws do not depend on whether it trained the classifier first."""
    with rng_preserved():
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def class_shares(classifier, images, num_classes=10, batch_size=1000):
    """The share of `images` (in [0, 1]) that `classifier` puts in each class: a tensor that sums to 1.

    Of unconditional samples, a class far below 1 / num_classes is one the generator drops."""
    device = next(classifier.parameters()).device
    predicted = torch.cat([classifier(chunk.to(device)).argmax(1).cpu() for chunk in images.split(batch_size)])
    return torch.bincount(predicted, minlength=num_classes).float() / len(predicted)


@torch.no_grad()
def generate(gan, n, *, seed=0, y=None, batch_size=1000):
    """n samples of a trained GAN as images in [0, 1], from noise seeded by `seed` (y: labels
    of a conditional GAN, one per sample)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, gan.latent_dim, generator=g)
    ys = [None] * len(z.split(batch_size)) if y is None else y.split(batch_size)
    return torch.cat([(gan.sample(z=chunk, y=labels) + 1) / 2 for chunk, labels in zip(z.split(batch_size), ys)])


@torch.no_grad()
def nearest_neighbours(samples, pool, batch_size=256):
    """(distances, indices): each sample's nearest image in `pool` by pixel L2 distance.

    A generator that memorised its training set returns near-copies (distance close to 0)."""
    pool = pool.flatten(1).float()
    best = [torch.cdist(chunk.flatten(1).float().to(pool.device), pool).min(dim=1) for chunk in samples.split(batch_size)]
    return torch.cat([b.values for b in best]), torch.cat([b.indices for b in best])


def period2_power(images, reference):
    """How many times more of their spectral power `images` put at period 2 pixels than the
    `reference` images do: at each of the three frequencies of period 2 (stripes along x,
    stripes along y, the checkerboard), the images' share of their power (each image's mean
    removed) over the reference's share; the largest of the three ratios.

    A stride-2 transposed convolution computes the even and the odd output pixels with
    different parts of its kernel, so an imbalance between them repeats every 2 pixels
    (Odena et al., 2016): a generator's grid artefacts show up as a ratio above 1 against real
    images (another sample of real images gives about 1)."""
    ratio = _period2_shares(images, "images") / _period2_shares(reference, "reference")
    return ratio.max().item()


def _period2_shares(images, name):
    if images.ndim != 4 or images.shape[-1] % 2 or images.shape[-2] % 2:
        raise ValueError(f"period2_power expects {name} (N, C, H, W) with even H and W, got {tuple(images.shape)}")
    x = images.detach().cpu().double()
    power = torch.fft.fft2(x - x.mean(dim=(-2, -1), keepdim=True)).abs().square().mean(dim=(0, 1))
    h, w = power.shape
    return power[[0, h // 2, h // 2], [w // 2, 0, w // 2]] / power.sum()


def frechet_score(features, real, fake, batch_size=500):
    """FID between two sets of images in [0, 1], on `features` (a Features module)."""
    for name, images in (("real", real), ("fake", fake)):
        low, high = images.min().item(), images.max().item()
        if low < 0 or high > 1:  # NaN passes this test, but torchmetrics' own check fails on it
            raise ValueError(f"frechet_score expects images in [0, 1]; the {name} images range over "
                             f"[{low:g}, {high:g}] (map [-1, 1] with (x + 1) / 2, 0..255 with x / 255)")
    from torchmetrics.image.fid import FrechetInceptionDistance
    fid = FrechetInceptionDistance(feature=features, normalize=True)
    device = next(features.parameters()).device
    fid.to(device)
    with torch.no_grad():
        for images, is_real in ((real, True), (fake, False)):
            for chunk in images.split(batch_size):
                fid.update(chunk.to(device), real=is_real)
    return fid.compute().item()


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), from scratch (float64).

    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which are real
    and non-negative for covariance matrices (S1 S2 is similar to S1^(1/2) S2 S1^(1/2)).
    Eigenvalues below 0 (rounding) are clamped to 0. Matrices that are not covariances (not
    symmetric, or with a clearly negative eigenvalue) are refused, and so are non-finite inputs
    (a covariance of fewer than 2 samples is NaN).
    """
    _check_statistics(mu1=mu1, sigma1=sigma1, mu2=mu2, sigma2=sigma2)
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    eig = torch.linalg.eigvals(sigma1 @ sigma2).real.clamp(min=0)
    return ((mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * eig.sqrt().sum()).item()


def _check_statistics(**stats):
    d = stats["mu1"].shape[-1]
    for name, t in stats.items():
        want = (d,) if name.startswith("mu") else (d, d)
        if tuple(t.shape) != want:
            raise ValueError(f"frechet_distance: {name} must have shape {want} (mu1 has {d} features), "
                             f"got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"frechet_distance: {name} holds NaN or infinite values (non-finite features, "
                             "or a covariance of fewer than 2 samples)")
        if name.startswith("sigma"):
            _check_covariance(name, t.double())


def _check_covariance(name, sigma, rtol=1e-4):
    """A covariance is symmetric with no negative eigenvalue beyond rounding (float32 statistics
    of many features round to eigenvalues a little below 0: rtol of the largest is allowed)."""
    if not torch.allclose(sigma, sigma.T, rtol=0, atol=rtol * sigma.abs().max().item()):
        raise ValueError(f"frechet_distance: {name} is not symmetric, so it is not a covariance matrix")
    eig = torch.linalg.eigvalsh(sigma)
    if eig.min() < -rtol * eig.abs().max():
        raise ValueError(f"frechet_distance: {name} has a negative eigenvalue ({eig.min().item():.3g}), so it is "
                         "not a covariance matrix")


def fit_with_snapshots(gan, loader, *, epochs, optimizers, train_step, snapshot, **fit_kwargs):
    """fit(), calling snapshot(epoch) after each epoch; returns (history, [snapshot(1), ...]).

    The caller looks at the generator between epochs (samples from fixed noise, metrics);
    fit's on_epoch_end undoes the random draws of looking, so the run is exactly fit's.
    """
    from .train import fit
    for quiet in ("verbose", "progress", "live_plot"):  # the snapshots are the display
        fit_kwargs.setdefault(quiet, False)
    snaps = []
    history = fit(gan, loader, epochs=epochs, optimizer=optimizers, train_step=train_step,
                  on_epoch_end=lambda epoch, _: snaps.append(snapshot(epoch)), **fit_kwargs)
    return history, snaps
