"""The regularisation pieces against the library: targets, mixing, dropout, batch norm."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2

from cnnlib import regularize as R


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(8, 3, 12, 10, generator=g), torch.randint(0, 5, (8,), generator=g)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothing_equals_torch(batch, eps):
    x, y = batch
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    targets = R.smooth_targets(y, 5, eps)
    assert torch.allclose(targets.sum(1), torch.ones(8))
    assert torch.allclose(R.soft_cross_entropy(logits, targets),
                          nn.CrossEntropyLoss(label_smoothing=eps)(logits, y))


@pytest.mark.parametrize("seed", range(4))
def test_mixup_equals_torchvision(batch, seed):
    x, y = batch
    torch.manual_seed(seed)
    lam = v2.MixUp(alpha=1.0, num_classes=5).make_params([x])["lam"]
    torch.manual_seed(seed)
    x_tv, t_tv = v2.MixUp(alpha=1.0, num_classes=5)(x, y)
    x_ours, t_ours = R.mixup(x, R.one_hot(y, 5), lam)
    assert torch.allclose(x_ours, x_tv, atol=1e-6) and torch.allclose(t_ours, t_tv, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_equals_torchvision(batch, seed):
    x, y = batch
    torch.manual_seed(seed)
    params = v2.CutMix(alpha=1.0, num_classes=5).make_params([x])
    torch.manual_seed(seed)
    x_tv, t_tv = v2.CutMix(alpha=1.0, num_classes=5)(x, y)
    x_ours, t_ours = R.cutmix(x, R.one_hot(y, 5), params["box"])
    assert torch.equal(x_ours, x_tv)
    assert torch.allclose(t_ours, t_tv, atol=1e-6)


def test_cutmix_target_weight_is_the_area_kept(batch):
    x, y = batch
    boxes = torch.tensor([[0, 0, 5, 6]] * 4 + [[2, 3, 4, 4]] * 4)   # 30 and 2 of 120 pixels
    partner = torch.arange(8).flip(0)
    mixed, t = R.cutmix(x, R.one_hot(y, 5), boxes, partner)
    own = 1 - torch.tensor([30 / 120] * 4 + [2 / 120] * 4)
    expected = own[:, None] * R.one_hot(y, 5) + (1 - own[:, None]) * R.one_hot(y[partner], 5)
    assert torch.allclose(t, expected)
    assert torch.equal(mixed[0, :, :6, :5], x[7, :, :6, :5]) and torch.equal(mixed[0, :, 6:], x[0, :, 6:])


def test_per_example_mixup_and_cutout(batch):
    x, y = batch
    lam = torch.linspace(0, 1, 8)
    partner = torch.randperm(8, generator=torch.Generator().manual_seed(2))
    mixed, t = R.mixup(x, R.one_hot(y, 5), lam, partner)
    assert torch.allclose(mixed[3], lam[3] * x[3] + (1 - lam[3]) * x[partner[3]])
    assert torch.allclose(t.sum(1), torch.ones(8))
    cut = R.cutout(x, torch.tensor([[1, 2, 4, 6]] * 8))
    assert (cut[:, :, 2:6, 1:4] == 0).all() and (cut == 0).sum() == 8 * 3 * 4 * 3


def test_random_boxes_stay_inside_and_cutmix_area_matches_lam():
    lam = torch.rand(500, generator=torch.Generator().manual_seed(0))
    boxes = R.random_boxes(500, 28, 28, lam=lam, generator=torch.Generator().manual_seed(1))
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 28).all() and (boxes[:, 3] <= 28).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).float() / 784
    assert (area <= 1 - lam + 1e-6).all()   # clipping and rounding only shrink the box


def test_inverted_dropout_scaling():
    torch.manual_seed(0)
    x = torch.rand(200_000) + 1
    for p in (0.2, 0.5, 0.8):
        out = R.dropout(x, p)
        kept = out != 0
        assert torch.allclose(out[kept], x[kept] / (1 - p))          # survivors scaled up
        assert abs(1 - kept.float().mean().item() - p) < 0.01        # a fraction p dropped
        assert abs(out.mean().item() / x.mean().item() - 1) < 0.01   # expectation kept
        lib = F.dropout(x, p)
        assert torch.allclose(lib[lib != 0], x[lib != 0] / (1 - p))  # the library scales the same way
    layer = R.Dropout(0.5).eval()
    assert torch.equal(layer(x), x)


def test_dropconnect_drops_weights_not_units():
    torch.manual_seed(0)
    layer = R.DropConnectLinear(50, 40, p=0.5)
    x = torch.randn(16, 50)
    out = layer(x)
    assert (out != 0).float().mean() > 0.95   # whole units survive; dropout would zero half
    layer.eval()
    assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias))
    layer.train()
    mean = torch.stack([layer(x) for _ in range(3000)]).mean(0)   # unbiased in expectation
    assert torch.allclose(mean, layer.eval()(x), atol=0.15)
    per = R.DropConnectLinear(50, 40, p=0.5, per_example=True)
    per.load_state_dict(layer.state_dict())
    same = torch.randn(1, 50).expand(16, 50)
    outs = per.train()(same)
    assert not torch.allclose(outs[0], outs[1])   # each example its own mask


@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_batchnorm_equals_torch(momentum):
    torch.manual_seed(0)
    ours, lib = R.BatchNorm2d(6, momentum=momentum), nn.BatchNorm2d(6, momentum=momentum)
    with torch.no_grad():
        for bn in (ours, lib):
            bn.weight.copy_(torch.linspace(0.5, 2, 6))
            bn.bias.copy_(torch.linspace(-1, 1, 6))
    for _ in range(3):
        x = torch.randn(4, 6, 5, 7) * 3 + 1
        assert torch.allclose(ours(x), lib(x), atol=1e-5)
    assert torch.allclose(ours.running_mean, lib.running_mean, atol=1e-6)
    assert torch.allclose(ours.running_var, lib.running_var, atol=1e-5)
    ours.eval(), lib.eval()
    x = torch.randn(2, 6, 5, 7)
    assert torch.allclose(ours(x), lib(x), atol=1e-5)
    one = x[:1]   # in evaluation an example's output does not depend on the rest of the batch
    assert torch.allclose(ours(one), ours(x)[:1], atol=1e-6)


def test_batchnorm_gradients_equal_torch():
    x = torch.randn(8, 3, 4, 4, requires_grad=True)
    ours, lib = R.BatchNorm2d(3), nn.BatchNorm2d(3)
    g1, = torch.autograd.grad((ours(x) ** 3).sum(), x)
    g2, = torch.autograd.grad((lib(x) ** 3).sum(), x)
    assert torch.allclose(g1, g2, atol=1e-4)


def test_mixing_loss_is_plain_cross_entropy_in_eval(batch):
    x, y = batch
    model = nn.Sequential(nn.Flatten(), nn.Linear(360, 5))
    loss_fn = R.mixing_loss(5, smoothing=0.2, mix=R.random_mixup(0.4))
    model.eval()
    loss, metrics = loss_fn(model, (x, y))
    assert torch.allclose(loss, F.cross_entropy(model(x), y))
    model.train()
    torch.manual_seed(0)
    assert not torch.allclose(loss_fn(model, (x, y))[0], loss)


def test_weight_noise_only_in_training():
    torch.manual_seed(0)
    model = R.add_weight_noise(nn.Sequential(nn.Linear(4, 3)), std=0.1)
    x = torch.randn(2, 4)
    assert not torch.allclose(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    clean = model[0].parametrizations.weight.original
    assert torch.allclose(model(x), F.linear(x, clean, model[0].bias))


def test_gaussian_noise_and_shift():
    x = torch.zeros(1000, 1, 8, 8)
    noisy = R.gaussian_noise(0.3)(x, torch.Generator().manual_seed(0))
    assert abs(noisy.std().item() - 0.3) < 0.01
    img = torch.arange(16.).view(1, 1, 4, 4)
    moved = R.shift(1, 0)(img)     # one pixel to the right
    assert torch.equal(moved[..., 1:], img[..., :-1]) and (moved[..., 0] == 0).all()
    moved = R.shift(0, -1)(img)    # one pixel up
    assert torch.equal(moved[..., :-1, :], img[..., 1:, :])


def test_small_cnn_and_ensemble():
    torch.manual_seed(0)
    models = [R.small_cnn(dropout=0.5, batchnorm=True, dropconnect=0.3, input_dropout=0.1) for _ in range(2)]
    x, y = torch.rand(6, 1, 28, 28), torch.randint(0, 10, (6,))
    probs = R.ensemble_probs(models, x, views=(None, R.hflip))
    assert probs.shape == (6, 10) and torch.allclose(probs.sum(1), torch.ones(6))
    expected = sum(F.softmax(m(v), 1) for m in models for v in (x, x.flip(-1))) / 4
    assert torch.allclose(probs, expected, atol=1e-6)
    acc = R.ensemble_accuracy(models, [(x, y)])
    assert acc == (R.ensemble_probs(models, x).argmax(1) == y).sum().item() / 6


@pytest.mark.parametrize("size", [(28, 28), (20, 32)])
def test_batched_affine_equals_torchvision_per_image(size):
    from torchvision.transforms.v2 import functional as TF
    x = torch.rand(4, 2, *size, generator=torch.Generator().manual_seed(0))
    angles, dxs, dys = torch.tensor([30., -20, 0, 12]), torch.tensor([0., 3, -2, 1]), torch.tensor([0., -1, 2, 3])
    ours = R.affine(x, angles, dxs, dys)
    for i in range(4):
        tv = TF.affine(x[i], angle=angles[i].item(), translate=[int(dxs[i]), int(dys[i])], scale=1.0,
                       shear=[0.0, 0.0], interpolation=v2.InterpolationMode.BILINEAR)
        assert torch.allclose(ours[i], tv, atol=1e-5)


def test_random_affine_draws_per_image():
    x = torch.rand(1, 1, 28, 28).expand(8, 1, 28, 28)
    out = R.random_affine(20, 0.1)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert len({round(v, 4) for v in out.flatten(1).sum(1).tolist()}) == 8   # eight different images


# ---- impossible settings and wrong target formats are refused ---------------------------------

def test_dropout_of_everything_gives_zeros_as_torch():
    x = torch.rand(50, 4) + 1
    assert torch.equal(R.dropout(x, 1.0), F.dropout(x, 1.0))
    assert torch.equal(R.Dropout(1.0)(x), nn.Dropout(1.0)(x))


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_dropout_probabilities_outside_0_1_are_refused_as_torch(p):
    if not math.isnan(p):  # torch's check, p < 0 or p > 1, lets NaN through
        with pytest.raises(ValueError):
            nn.Dropout(p)                               # the reference
    for build in (lambda: R.Dropout(p), lambda: R.dropout(torch.ones(3), p),
                  lambda: R.DropConnectLinear(3, 2, p=p)):
        with pytest.raises(ValueError, match=rf"probability p must be between 0 and 1, got {p}"):
            build()


@pytest.mark.parametrize("per_example", [False, True])
def test_dropconnect_of_every_weight_leaves_the_bias(per_example):
    layer = R.DropConnectLinear(5, 3, p=1.0, per_example=per_example)
    x = torch.randn(4, 5)
    assert torch.equal(layer(x), F.linear(x, torch.zeros(3, 5), layer.bias))


def test_dropconnect_per_example_names_the_input_it_expects():
    layer = R.DropConnectLinear(5, 3, per_example=True)
    assert layer(torch.randn(2, 5)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"per_example=True expects inputs \(N, in_features\), got shape \(2, 7, 5\)"):
        layer(torch.randn(2, 7, 5))


@pytest.mark.parametrize("eps", [1.5, -0.1])
def test_label_smoothing_outside_0_1_is_refused_as_torch(batch, eps):
    _, y = batch
    if eps > 1:  # torch lets a negative smoothing through (targets above 1)
        with pytest.raises(RuntimeError, match="label_smoothing"):
            F.cross_entropy(torch.randn(8, 5), y, label_smoothing=eps)   # the reference
    with pytest.raises(ValueError, match=rf"smoothing eps must be between 0 and 1, got {eps}"):
        R.smooth_targets(y, 5, eps)
    with pytest.raises(ValueError, match=rf"label smoothing must be between 0 and 1, got {eps}"):
        R.mixing_loss(5, smoothing=eps)


@pytest.mark.parametrize("mix", [lambda x, t: R.mixup(x, t, 0.7), lambda x, t: R.cutmix(x, t, [0, 0, 4, 4])])
def test_mixing_refuses_class_indices(batch, mix):
    x, y = batch
    with pytest.raises(ValueError, match=r"target probabilities of shape \(8, num_classes\).*one_hot.*int64.*\(8,\)"):
        mix(x, y)
    with pytest.raises(ValueError, match=r"shape \(8, num_classes\).*float32.*\(8,\)"):
        mix(x, y.float())
    _, targets = mix(x, R.one_hot(y, 5))
    assert targets.shape == (8, 5)


def test_soft_cross_entropy_refuses_class_indices():
    logits, y = torch.randn(4, 4), torch.tensor([0, 3, 1, 2])
    with pytest.raises(ValueError, match=r"soft_cross_entropy needs target probabilities of shape \(4, 4\)"):
        R.soft_cross_entropy(logits, y)


@pytest.mark.parametrize("lam,names", [(1.5, r"lam must be between 0 and 1, got 1\.5"),
                                       (-0.5, r"lam must be between 0 and 1, got -0\.5"),
                                       (torch.full((3,), 0.5), r"one per example, shape \(8,\); got shape \(3,\)")])
def test_mixup_refuses_weights_it_cannot_use(batch, lam, names):
    x, y = batch
    with pytest.raises(ValueError, match=names):
        R.mixup(x, R.one_hot(y, 5), lam)


def test_inverted_boxes_are_refused(batch):
    x, y = batch
    with pytest.raises(ValueError, match=r"x1 <= x2 and y1 <= y2, got \[\[6, 0, 2, 4\]\]"):
        R.cutmix(x, R.one_hot(y, 5), [6, 0, 2, 4])
    with pytest.raises(ValueError, match=r"x1 <= x2"):
        R.cutout(x, [0, 5, 3, 1])


def test_mixers_check_alpha_when_built_and_random_boxes_needs_a_size():
    with pytest.raises(ValueError, match=r"alpha must be > 0.*got 0"):
        R.random_mixup(alpha=0)
    with pytest.raises(ValueError, match=r"alpha must be > 0.*got -1"):
        R.random_cutmix(alpha=-1)
    with pytest.raises(ValueError, match=r"one of size \(cutout\) or lam \(CutMix\)"):
        R.random_boxes(4, 28, 28)


def test_mixing_loss_names_a_class_count_that_differs(batch):
    x, y = batch
    model = nn.Sequential(nn.Flatten(), nn.Linear(360, 12))
    with pytest.raises(ValueError, match=r"logits of shape \(N, 10\) \(num_classes=10\).*gives shape \(8, 12\)"):
        R.mixing_loss(10)(model, (x, y))


@pytest.mark.parametrize("shape,training,names", [
    ((1, 3, 1, 1), True, r"more than 1 value per channel when training"),
    ((4, 3), True, r"expects 4D input \(N, C, H, W\), got 2D input"),
    ((4, 5, 2, 2), False, r"built for 3 channels, got 5"),
])
def test_batchnorm_refuses_what_torch_refuses(shape, training, names):
    x = torch.randn(*shape)
    with pytest.raises((ValueError, RuntimeError)):
        nn.BatchNorm2d(3).train(training)(x)            # the reference
    with pytest.raises(ValueError, match=names):
        R.BatchNorm2d(3).train(training)(x)
    assert R.BatchNorm2d(3).eval()(torch.randn(1, 3, 1, 1)).shape == (1, 3, 1, 1)  # one value is fine in eval


def test_batchnorm_refuses_the_cumulative_average():
    with pytest.raises(ValueError, match=r"momentum must be a number between 0 and 1.*got None"):
        R.BatchNorm2d(3, momentum=None)


def test_batchnorm_statistics_are_float32_under_autocast():
    """After an autocast convolution the maps are bf16; the statistics must still be float32."""
    torch.manual_seed(0)
    conv, ours, lib = nn.Conv2d(2, 3, 3), R.BatchNorm2d(3), nn.BatchNorm2d(3)
    x = torch.randn(8, 2, 10, 10) * 4 + 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        assert h.dtype == torch.bfloat16
        out = ours(h)
    ref = lib(h.float())          # the reference: the same bf16 maps, normalised in float32
    assert ours.running_mean.dtype == ours.running_var.dtype == out.dtype == torch.float32
    torch.testing.assert_close(ours.running_mean, lib.running_mean)
    torch.testing.assert_close(ours.running_var, lib.running_var)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_small_cnn_names_the_image_size_and_channels_it_was_built_for():
    model = R.small_cnn(image_size=28)
    with pytest.raises(ValueError, match=r"built for 28x28 images, got 32x32 \(build it with image_size=32"):
        model(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"1-channel images, got 3 channels"):
        model(torch.zeros(2, 3, 28, 28))
    assert model(torch.zeros(2, 1, 29, 29)).shape == (2, 10)   # 29 // 4 = 7, as 28: it works


def test_ensembles_refuse_nothing_to_average():
    with pytest.raises(ValueError, match=r"at least one model and one view, got 0 models"):
        R.ensemble_probs([], torch.zeros(2, 1, 28, 28))
    with pytest.raises(ValueError, match=r"the loader gave no examples"):
        R.ensemble_accuracy([R.small_cnn()], [])


def _linear_probe():
    """A model that predicts class 1 when the first pixel is positive: noise flips it."""
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]]))
    return model


def test_noisy_accuracy_counts_the_same_noise_as_a_direct_computation():
    x = torch.full((64, 4), 0.5)
    y = torch.ones(64, dtype=torch.long)
    loader = [(x[:40], y[:40]), (x[40:], y[40:])]
    model = _linear_probe()
    assert R.noisy_accuracy(model, loader, 0.0) == 1.0
    g = torch.Generator().manual_seed(3)
    noisy = torch.cat([x[:40] + 2.0 * torch.randn(40, 4, generator=g), x[40:] + 2.0 * torch.randn(24, 4, generator=g)])
    expected = (noisy[:, 0] > 0).float().mean().item()
    assert 0.3 < expected < 0.9  # the noise does flip some answers
    assert R.noisy_accuracy(model, loader, 2.0, seed=3) == pytest.approx(expected)
    assert R.noisy_accuracy(model, loader, 2.0, seed=3) == R.noisy_accuracy(model, loader, 2.0, seed=3)


def test_noisy_accuracy_restores_training_mode_and_refuses_negative_std():
    model = nn.Sequential(_linear_probe(), nn.Dropout(0.5))
    model.train()
    R.noisy_accuracy(model, [(torch.ones(8, 4), torch.ones(8, dtype=torch.long))], 0.1)
    assert model.training
    with pytest.raises(ValueError, match="std must be a non-negative number, got -0.1"):
        R.noisy_accuracy(model, [], -0.1)
