"""Regularisation, batched on the device: each piece short, each checked against the library.

Targets as probabilities (they stay one-hot unless a technique softens them):
- ``smooth_targets``: label smoothing, (1 - eps) * one_hot + eps / K. Only the target changes.
- ``mixup``: a convex mix of two images and of their targets.
- ``cutmix``: a box of one image pasted into another; targets mixed by the box's area.
- ``cutout``: a box of the image zeroed; the target is left alone.
``soft_cross_entropy`` is the loss for such targets and ``mixing_loss`` wraps them for ``fit``.
Mixing takes probabilities (N, K) and refuses class indices (N,): ``one_hot`` them first.

Layers and noise: ``dropout`` / ``Dropout`` (units), ``DropConnectLinear`` (weights),
``BatchNorm2d`` from scratch, ``gaussian_noise`` on inputs (a loader augmentation) and
``add_weight_noise`` on weights (``noisy_accuracy`` measures robustness to input noise).
``small_cnn`` is the chapter's test bed; ``ensemble_probs`` averages models and test-time views.

Chapter 3 (chapters/03_regularisation) teaches these pieces.
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from .models._checks import check_input


def _check_probability(name, value):
    """torch's check for dropout's p and label smoothing: 0 <= value <= 1 (NaN fails too)."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


def _on_host(t):
    """Whether a value can be checked without waiting for the GPU (a sync per batch)."""
    return t.device.type == "cpu"


# ---- targets -------------------------------------------------------------------------------

def one_hot(y, num_classes):
    return F.one_hot(y, num_classes).float()


def smooth_targets(y, num_classes, eps):
    """Label smoothing: the true class 1 - eps + eps/K, the others eps/K."""
    _check_probability("label smoothing eps", eps)
    return one_hot(y, num_classes) * (1 - eps) + eps / num_classes


def soft_cross_entropy(logits, targets):
    """Cross-entropy against target probabilities (N, K), batch mean."""
    _check_soft_targets("soft_cross_entropy", targets, len(logits),
                        logits.shape[-1])
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(targets * log_p).sum(dim=1).mean()


def _check_soft_targets(who, targets, n, num_classes=None):
    """Mixing needs target probabilities (N, K): blending class indices blends class numbers."""
    want = (n, targets.shape[-1] if num_classes is None else num_classes)
    if not targets.is_floating_point() or tuple(targets.shape) != want:
        shape = f"({n}, {'num_classes' if num_classes is None else num_classes})"
        raise ValueError(f"{who} needs target probabilities of shape {shape}, e.g. one_hot(y, num_classes) "
                         f"for class indices; got {targets.dtype} targets of shape {tuple(targets.shape)}")


def _partner(x, partner):
    """Each example's partner: `partner` indices, or the previous example (torchvision's roll)."""
    return x.roll(1, 0) if partner is None else x[partner]


def _mixing_weight(lam, x):
    """lam as a tensor on x's device: one number in [0, 1], or one per example (N,)."""
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    if lam.ndim and lam.shape != (len(x),):
        raise ValueError(f"lam must be one number or one per example, shape ({len(x)},); "
                         f"got shape {tuple(lam.shape)}")
    if _on_host(lam) and not ((lam >= 0) & (lam <= 1)).all():  # beyond [0, 1] extrapolates
        raise ValueError(f"lam must be between 0 and 1, got {lam.tolist()}")
    return lam


def mixup(x, targets, lam, partner=None):
    """lam * x + (1 - lam) * partner's x, and the same mix of the targets.

    targets: probabilities (N, K), e.g. one_hot(y, K); class indices are
    refused (torchvision's v2.MixUp, which knows num_classes, one-hots them
    itself). lam: a number in [0, 1] or one per example (N,); partner:
    indices (default: torchvision's pairing, each example with the one
    before it).
    """
    _check_soft_targets("mixup", targets, len(x))
    lam = _mixing_weight(lam, x)
    lam_x = lam.view(-1, *[1] * (x.ndim - 1)) if lam.ndim else lam
    lam_t = lam.view(-1, 1) if lam.ndim else lam
    mixed = lam_x * x + (1 - lam_x) * _partner(x, partner)
    return mixed, lam_t * targets + (1 - lam_t) * _partner(targets, partner)


def _box_mask(boxes, height, width, device):
    """(N, 1, H, W) boolean mask, true inside each box (x1, y1, x2, y2), x2/y2 exclusive."""
    boxes = torch.as_tensor(boxes, device=device).view(-1, 4)
    if _on_host(boxes) and ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        raise ValueError(f"boxes must be (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2, got {boxes.tolist()}")
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    x1, y1, x2, y2 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    return ((rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)).unsqueeze(1)


def cutmix(x, targets, boxes, partner=None):
    """Paste the partner's pixels inside each box; targets mix by area kept.

    boxes: one (x1, y1, x2, y2) for the whole batch (as torchvision) or one
    per example (N, 4). The weight of an image's own target is
    1 - box area / image area. targets: probabilities (N, K), as for mixup.
    """
    _check_soft_targets("cutmix", targets, len(x))
    h, w = x.shape[-2:]
    inside = _box_mask(boxes, h, w, x.device)
    mixed = torch.where(inside, _partner(x, partner), x)
    area = inside.flatten(1).float().mean(dim=1, keepdim=True)  # (N|1, 1)
    lam = 1 - area
    return mixed, lam * targets + (1 - lam) * _partner(targets, partner)


def cutout(x, boxes, value=0.0):
    """Fill each box with `value`; the target is left as it is."""
    return x.masked_fill(_box_mask(boxes, *x.shape[-2:], x.device), value)


def random_boxes(n, height, width, *, size=None, lam=None, generator=None, device=None):
    """n boxes (x1, y1, x2, y2) centred uniformly at random and clipped to the image.

    Give `size` (a square side, cutout) or `lam` (n values; the side is sqrt(1 - lam) of the
    image, CutMix). Clipping makes some boxes smaller, as in both papers.
    """
    if (size is None) == (lam is None):
        raise ValueError(f"random_boxes needs one of size (cutout) or lam (CutMix), got size={size!r}, lam={lam!r}")
    cy = torch.randint(0, height, (n,), generator=generator, device=device)
    cx = torch.randint(0, width, (n,), generator=generator, device=device)
    if size is not None:
        half_h = half_w = torch.full((n,), size // 2, device=device)
    else:
        r = 0.5 * (1 - lam).clamp(min=0).sqrt()
        half_h, half_w = (r * height).long(), (r * width).long()
    return torch.stack([(cx - half_w).clamp(min=0), (cy - half_h).clamp(min=0),
                        (cx + half_w).clamp(max=width), (cy + half_h).clamp(max=height)], dim=1)


def sample_beta(alpha, n, device=None):
    """n draws of Beta(alpha, alpha), the mixing weight of mixup and CutMix."""
    _check_alpha(alpha)
    dist = torch.distributions.Beta(torch.tensor(float(alpha), device=device),
                                    torch.tensor(float(alpha), device=device))
    return dist.sample((n,))


def _check_alpha(alpha):
    if not alpha > 0:  # checked when the mixer is built, not at the first batch inside fit
        raise ValueError(f"alpha must be > 0 (the mixing weight is drawn from Beta(alpha, alpha)), got {alpha!r}")


def random_mixup(alpha=0.2):
    """A mixer for mixing_loss: mixup with one Beta(alpha, alpha) weight per example."""
    _check_alpha(alpha)
    def mix(x, targets):
        lam = sample_beta(alpha, len(x), x.device)
        return mixup(x, targets, lam, torch.randperm(len(x), device=x.device))
    return mix


def random_cutmix(alpha=1.0):
    """A mixer for mixing_loss: CutMix with one box per example."""
    _check_alpha(alpha)
    def mix(x, targets):
        lam = sample_beta(alpha, len(x), x.device)
        boxes = random_boxes(len(x), *x.shape[-2:], lam=lam, device=x.device)
        return cutmix(x, targets, boxes, torch.randperm(len(x), device=x.device))
    return mix


def random_cutout(size):
    """A mixer for mixing_loss: cutout of a size x size square per example."""
    def mix(x, targets):
        return cutout(x, random_boxes(len(x), *x.shape[-2:], size=size, device=x.device)), targets
    return mix


def mixing_loss(num_classes=10, *, smoothing=0.0, mix=None):
    """A loss_fn for fit: targets smoothed and/or mixed in training only;
    accuracy on the labels.

    In evaluation (model.eval()) it is the plain cross-entropy, so
    validation numbers compare across techniques.
    """
    _check_probability("label smoothing", smoothing)

    def loss_fn(model, batch):
        x, y = batch
        targets = one_hot(y, num_classes)
        if model.training:
            if smoothing:
                targets = smooth_targets(y, num_classes, smoothing)
            if mix is not None:
                x, targets = mix(x, targets)
        logits = model(x)
        _check_classes(logits, num_classes)
        acc = (logits.argmax(dim=1) == y).float().mean()
        return soft_cross_entropy(logits, targets), {"acc": acc}
    return loss_fn


def _check_classes(logits, num_classes):
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"mixing_loss expects logits of shape (N, {num_classes}) (num_classes={num_classes}), "
                         f"the model gives shape {tuple(logits.shape)}")


# ---- noise ---------------------------------------------------------------------------------

def gaussian_noise(std):
    """A loader augmentation (x, generator) -> x + N(0, std^2) noise on every pixel."""
    def noise(x, g):
        return x + std * torch.randn(x.shape, generator=g, device=x.device)
    return noise


class _WeightNoise(nn.Module):
    def __init__(self, std):
        super().__init__()
        self.std = std

    def forward(self, weight):
        return weight + self.std * torch.randn_like(weight) if self.training else weight


def add_weight_noise(model, std, kinds=(nn.Conv2d, nn.Linear)):
    """Every forward pass in training sees the weights plus fresh N(0, std^2) noise.

    A parametrization: the optimiser updates the clean weights with the gradient taken at the
    noisy ones; in eval mode the weights are clean.
    """
    for m in model.modules():
        if isinstance(m, kinds):
            parametrize.register_parametrization(m, "weight", _WeightNoise(std))
    return model


# ---- dropout, DropConnect, batch norm ----------------------------------------------------

def dropout(x, p, training=True):
    """Zero each unit with probability p and scale the survivors by 1/(1-p)
    (inverted dropout): the expected value is unchanged, and evaluation
    needs no rescaling."""
    _check_probability("dropout probability p", p)
    if not training or p == 0:
        return x
    keep = torch.rand_like(x) >= p
    # p = 1 gives zeros, as torch does (not 0 / 0)
    return x * keep / (1 - p) if p < 1 else x * keep


class Dropout(nn.Module):
    def __init__(self, p=0.5):
        super().__init__()
        _check_probability("dropout probability p", p)
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class DropConnectLinear(nn.Linear):
    """A linear layer whose *weights* are dropped in training (Wan et al., 2013).

    per_example=False draws one weight mask per batch (as cheap as dropout); True draws one
    per example, as in the paper, which costs a (N, out, in) mask and a batched product.
    Evaluation uses the full weights (inverted scaling in training keeps the expectation);
    the paper's Gaussian moment-matching inference is left out. Biases are kept.
    """

    def __init__(self, in_features, out_features, p=0.5, bias=True, per_example=False):
        super().__init__(in_features, out_features, bias)
        _check_probability("DropConnect probability p", p)
        self.p, self.per_example = p, per_example

    def forward(self, x):
        if not self.training or self.p == 0:
            return super().forward(x)
        if not self.per_example:
            return F.linear(x, dropout(self.weight, self.p), self.bias)
        if x.ndim != 2:
            raise ValueError(f"per_example=True expects inputs (N, "
                             f"in_features), got shape {tuple(x.shape)}")
        # one mask per example: (N, out, in)
        weights = self.weight.expand(len(x), *self.weight.shape)
        weights = dropout(weights, self.p)
        out = torch.bmm(weights, x.unsqueeze(-1)).squeeze(-1)
        return out if self.bias is None else out + self.bias

    def extra_repr(self):
        return super().extra_repr() + f", p={self.p}, per_example={self.per_example}"


class BatchNorm2d(nn.Module):
    """Batch normalisation over (N, H, W) per channel, written out.

    Training: normalise by the batch's mean and (biased) variance and move the running
    statistics towards them (the running variance uses the unbiased estimate, as torch does).
    Evaluation: normalise by the running statistics; the batch plays no part.
    The statistics are computed in the buffers' dtype (float32), also under autocast, where a
    convolution's bf16 or fp16 output would lose digits (torch's batch norm runs in float32 too).
    momentum=None (torch's cumulative average) is not supported: give a number in [0, 1].
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be a number between 0 and 1 (the weight of each batch in the "
                             f"running statistics), got {momentum!r}")
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        _check_batch_norm_input(x, len(self.weight), self.training)
        if self.training:
            # float32 statistics, even under autocast
            stats_x = x.to(self.running_mean.dtype)
            mean = stats_x.mean(dim=(0, 2, 3))
            var = stats_x.var(dim=(0, 2, 3), unbiased=False)
            n = x.numel() // x.shape[1]
            with torch.no_grad():
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / (n - 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        shape = (1, -1, 1, 1)
        x_hat = (x - mean.view(shape)) / torch.sqrt(var.view(shape)
                                                    + self.eps)
        return x_hat * self.weight.view(shape) + self.bias.view(shape)


def _check_batch_norm_input(x, channels, training):
    """torch's checks: a 4-D batch, the channels it was built for, in training > 1 value per channel."""
    if x.ndim != 4:
        raise ValueError(f"BatchNorm2d expects 4D input (N, C, H, W), got {x.ndim}D input of shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"BatchNorm2d was built for {channels} channels, got {x.shape[1]} "
                         f"(input of shape {tuple(x.shape)})")
    if training and x.numel() // channels < 2:  # the variance of one value is 0: the output all zeros
        raise ValueError(f"BatchNorm2d expects more than 1 value per channel when training, "
                         f"got input of shape {tuple(x.shape)}")


# ---- the chapter's test bed and its ensembles ------------------------------------------

def small_cnn(num_classes=10, *, width=16, hidden=128, dropout=0.0, input_dropout=0.0,
              dropconnect=0.0, batchnorm=False, in_channels=1, image_size=28):
    """CONV(w)-POOL-CONV(2w)-POOL-FC(hidden)-FC, 3x3 convs: small enough to train many times.

    dropout: on the hidden FC units; input_dropout: on the pixels; dropconnect: on the hidden
    FC layer's weights (one mask per batch); batchnorm: after each convolution.
    """
    def conv(c_in, c_out):
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm)]
        return layers + ([nn.BatchNorm2d(c_out)] if batchnorm else []) + [nn.ReLU(), nn.MaxPool2d(2)]

    flat = 2 * width * (image_size // 4) ** 2
    fc = DropConnectLinear(flat, hidden, dropconnect) if dropconnect else nn.Linear(flat, hidden)
    model = nn.Sequential(
        *([nn.Dropout(input_dropout)] if input_dropout else []),
        *conv(in_channels, width), *conv(width, 2 * width),
        nn.Flatten(), fc, nn.ReLU(),
        *([nn.Dropout(dropout)] if dropout else []),
        nn.Linear(hidden, num_classes),
    )
    model.register_forward_pre_hook(partial(_check_small_cnn_input, channels=in_channels, image_size=image_size))
    return model


def _check_small_cnn_input(model, args, *, channels, image_size):
    """The flattened size is fixed by image_size: name a wrong image size, not a matmul."""
    x = args[0]
    check_input(x, model="small_cnn", channels=channels)
    if tuple(side // 4 for side in x.shape[-2:]) != (image_size // 4,) * 2:
        raise ValueError(f"small_cnn was built for {image_size}x{image_size} images, got "
                         f"{x.shape[-2]}x{x.shape[-1]} (build it with image_size={x.shape[-1]}, or resize the data)")


def hflip(x):
    return x.flip(-1)


def shift(dx, dy):
    """A test-time view: the image moved by (dx, dy) pixels, the border filled with zeros."""
    def view(x):
        h, w = x.shape[-2:]
        padded = F.pad(x, (abs(dx), abs(dx), abs(dy), abs(dy)))
        top, left = abs(dy) - dy, abs(dx) - dx
        return padded[..., top:top + h, left:left + w]
    return view


@torch.no_grad()
def noisy_accuracy(model, loader, std, *, seed=0):
    """Accuracy on `loader` with Gaussian noise of `std` added to every input (one generator, so
    every model sees the same noise for the same seed)."""
    if not std >= 0:
        raise ValueError(f"std must be a non-negative number, got {std!r}")
    device = next(model.parameters()).device
    generator = torch.Generator(device=getattr(loader, "device", "cpu")).manual_seed(seed)
    was_training = model.training
    model.eval()
    correct, seen = torch.zeros((), device=device), 0   # one host sync, as ensemble_accuracy
    for x, y in loader:
        noise = torch.randn(x.shape, generator=generator, device=generator.device)
        x = (x + std * noise.to(x.device)).to(device)
        correct += (model(x).argmax(1) == y.to(device)).sum()
        seen += len(y)
    model.train(was_training)
    return correct.item() / seen


@torch.no_grad()
def ensemble_probs(models, x, views=(None,)):
    """Mean softmax over models and test-time views (None: the image)."""
    if not models or not views:
        raise ValueError(f"ensemble_probs needs at least one model and one "
                         f"view, got {len(models)} models and {len(views)} "
                         f"views")
    total = 0
    for model in models:
        model.eval()
        for view in views:
            logits = model(x if view is None else view(x))
            total = total + F.softmax(logits.float(), dim=1)
    return total / (len(models) * len(views))


@torch.no_grad()
def ensemble_accuracy(models, loader, views=(None,)):
    """Accuracy of the averaged prediction over a whole loader (one host sync)."""
    if not models:
        raise ValueError("ensemble_accuracy needs at least one model, got none")
    device = next(models[0].parameters()).device
    correct, seen = torch.zeros((), device=device), 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        correct += (ensemble_probs(models, x, views).argmax(dim=1) == y).sum()
        seen += len(y)
    if not seen:
        raise ValueError("ensemble_accuracy: the loader gave no examples")
    return correct.item() / seen


# ---- batched geometric augmentation -----------------------------------------------------

def affine(x, degrees, dx, dy):
    """Rotate each image by degrees[i] (counter-clockwise) about its centre, then move it by
    (dx[i], dy[i]) pixels: one grid_sample call for the whole batch, zeros outside."""
    n, _, h, w = x.shape
    angle = torch.deg2rad(torch.as_tensor(degrees, dtype=x.dtype, device=x.device)).expand(n)
    cos, sin = angle.cos(), angle.sin()
    dx = torch.as_tensor(dx, dtype=x.dtype, device=x.device).expand(n)
    dy = torch.as_tensor(dy, dtype=x.dtype, device=x.device).expand(n)
    # affine_grid wants the inverse map, output pixel -> input pixel, in coordinates scaled to
    # [-1, 1]: p_in = A (p_out - t), with A the inverse rotation (y points down in an image)
    a = torch.stack([torch.stack([cos, sin * h / w], 1), torch.stack([-sin * w / h, cos], 1)], 1)
    t = torch.stack([2 * dx / w, 2 * dy / h], 1).unsqueeze(-1)
    theta = torch.cat([a, -a @ t], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(degrees=15, translate=0.1):
    """A loader augmentation: each image its own rotation in [-degrees, degrees] and shift up
    to `translate` of its size, drawn on the device (torchvision's v2.RandomAffine draws one
    for the whole batch when given a batch)."""
    def aug(x, g):
        n, _, h, w = x.shape
        u = torch.rand(3, n, generator=g, device=x.device) * 2 - 1
        return affine(x, u[0] * degrees, (u[1] * translate * w).round(), (u[2] * translate * h).round())
    return aug
