import math
import warnings

import pytest
import torch
import torch.nn as nn

from cnnlib import data, fit, gan
from cnnlib.models import dcgan


def test_generator_and_discriminator_shapes():
    torch.manual_seed(0)
    G, D = dcgan.dcgan_generator(latent_dim=16, channels=8), dcgan.dcgan_discriminator(channels=8)
    x = G(torch.randn(5, 16))
    assert x.shape == (5, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert D(x).shape == (5,)
    with pytest.raises(ValueError, match="28x28"):
        D(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ValueError, match="noise of shape"):
        G(torch.zeros(2, 15))


def test_dcgan_guidelines_no_pooling_and_batch_norm_where_due():
    G, D = dcgan.dcgan_generator(channels=8), dcgan.dcgan_discriminator(channels=8)
    kinds = {type(m) for m in [*G.modules(), *D.modules()]}
    assert not kinds & {nn.MaxPool2d, nn.AvgPool2d}
    assert isinstance(G.upsample[-1], nn.Tanh)
    assert isinstance(D.features[1], nn.LeakyReLU)  # no batch norm on D's input layer
    assert abs(D.features[0].weight.std().item() - 0.02) < 0.005


def test_conditional_variant_uses_the_label():
    torch.manual_seed(0)
    G = dcgan.dcgan_generator(latent_dim=16, channels=8, num_classes=10).eval()
    D = dcgan.dcgan_discriminator(channels=8, num_classes=10)
    z = torch.randn(4, 16)
    a, b = G(z, torch.zeros(4, dtype=torch.long)), G(z, torch.full((4,), 3))
    assert a.shape == (4, 1, 28, 28) and not torch.allclose(a, b)
    assert D(a, torch.zeros(4, dtype=torch.long)).shape == (4,)
    with pytest.raises(ValueError, match="labels"):
        G(z)


def test_toy_networks_shapes():
    G, D = dcgan.toy_generator(latent_dim=2), dcgan.toy_discriminator(minibatch_std=True)
    assert G(torch.randn(7, 2)).shape == (7, 2)
    assert D(torch.randn(7, 2)).shape == (7,)


def test_losses_match_their_formulas():
    logits = torch.tensor([-2.0, 0.3, 1.5])
    d = torch.sigmoid(logits)
    assert torch.allclose(gan.generator_loss(logits, "minimax"), torch.log(1 - d).mean())
    assert torch.allclose(gan.generator_loss(logits), -torch.log(d).mean())
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-1.0, 0.2])
    want = -(torch.log(torch.sigmoid(real)).mean() + torch.log(1 - torch.sigmoid(fake)).mean())
    assert torch.allclose(gan.discriminator_loss(real, fake), want)


def _normal_pdf(x, mean, std):
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def test_trained_discriminator_approaches_the_optimal_one():
    """Train D alone (through fit) to tell N(0, 1) from N(1.5, 0.8^2): D -> p_data / (p_data + p_g)."""
    torch.manual_seed(0)
    n = 32768
    x = torch.cat([torch.randn(n, 1), 1.5 + 0.8 * torch.randn(n, 1)])
    y = torch.cat([torch.ones(n), torch.zeros(n)])
    loader = data.TensorLoader(x, y, 1024, shuffle=True, drop_last=True, device="cpu")
    D = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1), nn.Flatten(0))
    fit(D, loader, epochs=6, optimizer=torch.optim.Adam(D.parameters(), 3e-3), loss_fn=gan.bce_loss,
        device="cpu", verbose=False, progress=False)
    grid = torch.linspace(-1.5, 2.5, 41)
    with torch.no_grad():
        learned = torch.sigmoid(D(grid[:, None]))
    best = gan.optimal_discriminator(_normal_pdf(grid, 0, 1), _normal_pdf(grid, 1.5, 0.8))
    assert (learned - best).abs().max() < 0.05


def test_toy_metrics_on_constructed_samples():
    centers = gan.ring_centers(8)
    assert torch.allclose(centers.norm(dim=1), torch.full((8,), 2.0))
    assert gan.grid_centers(5).shape == (25, 2)
    on_one = centers[[0]].repeat(400, 1)
    assert gan.toy_metrics(on_one, centers, 0.02) == {"modes": 1, "high_quality": 1.0}
    everywhere = gan.mixture_sample(centers, 4000, 0.02, torch.Generator().manual_seed(0))
    m = gan.toy_metrics(everywhere, centers, 0.02)
    assert m["modes"] == 8 and 0.99 < m["high_quality"] <= 1.0  # 3 std holds 98.9% of a 2-D Gaussian
    half_off = torch.cat([centers.repeat(50, 1), torch.zeros(400, 2)])  # the origin is 2 away from all
    assert gan.toy_metrics(half_off, centers, 0.02) == {"modes": 8, "high_quality": 0.5}


def _blobs(n, seed):
    """Images in [0, 1]: a bright disc at a random place, some noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    cy, cx = (8 + 12 * torch.rand(2, n, 1, 1, generator=g))
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < 25).float()
    return (0.9 * disc + 0.1 * torch.rand(n, 28, 28, generator=g)).unsqueeze(1)


def test_frechet_score_sanity_and_from_scratch():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
    features = gan.Features(body, num_features=32)
    real_a, real_b = _blobs(1000, 1), _blobs(1000, 2)
    noise = torch.rand(1000, 1, 28, 28)
    same = gan.frechet_score(features, real_a, real_b)
    different = gan.frechet_score(features, real_a, noise)
    assert 0 <= same < 0.05 * different
    with torch.no_grad():
        fa, fb = features(real_a).double(), features(noise).double()
    ours = gan.frechet_distance(fa.mean(0), fa.T.cov(), fb.mean(0), fb.T.cov())
    assert ours == pytest.approx(different, rel=1e-6)


def test_one_training_step_updates_both_networks_and_fit_runs_it():
    torch.manual_seed(0)
    pair = gan.GAN(dcgan.dcgan_generator(latent_dim=16, channels=8), dcgan.dcgan_discriminator(channels=8))
    opt_g = torch.optim.Adam(pair.generator.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(pair.discriminator.parameters(), 2e-4, betas=(0.5, 0.999))
    step = gan.GANStep(pair, opt_g, opt_d, scale_images=True)
    before = {k: v.clone() for k, v in pair.state_dict().items()}
    out = step((torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)))
    assert set(out) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(torch.isfinite(v) for v in out.values())
    for name in ("generator.project.0.weight", "discriminator.features.0.weight"):
        assert not torch.equal(before[name], pair.state_dict()[name])

    toy = gan.GAN(dcgan.toy_generator(), dcgan.toy_discriminator())
    opts = [torch.optim.Adam(toy.generator.parameters(), 1e-3), torch.optim.Adam(toy.discriminator.parameters(), 1e-3)]
    points = gan.mixture_sample(gan.ring_centers(), 512, 0.02)
    loader = data.TensorLoader(points, torch.zeros(512), 128, shuffle=True, drop_last=True, device="cpu")
    history = fit(toy, loader, epochs=2, optimizer=opts, train_step=gan.GANStep(toy, *opts),
                  device="cpu", verbose=False, progress=False)
    assert len(history) == 2 and {"train_loss_d", "train_loss_g", "train_d_real"} <= set(history.keys())


def _toy_run(seed=0):
    torch.manual_seed(seed)
    pair = gan.GAN(dcgan.toy_generator(), dcgan.toy_discriminator())
    opts = [torch.optim.Adam(pair.generator.parameters(), 1e-3), torch.optim.Adam(pair.discriminator.parameters(), 1e-3)]
    points = gan.mixture_sample(gan.grid_centers(), 512, 0.05, torch.Generator().manual_seed(seed))
    loader = data.TensorLoader(points, torch.zeros(512), 128, shuffle=True, drop_last=True, device="cpu")
    return pair, opts, loader


def test_fit_with_snapshots_is_the_same_run_as_fit(tmp_path):
    pair, opts, loader = _toy_run()
    fit(pair, loader, epochs=3, optimizer=opts, train_step=gan.GANStep(pair, *opts), device="cpu",
        verbose=False, progress=False)
    pair2, opts2, loader2 = _toy_run()
    history, snaps = gan.fit_with_snapshots(
        pair2, loader2, epochs=3, optimizers=opts2, train_step=gan.GANStep(pair2, *opts2),
        snapshot=lambda e: (e, pair2.sample(10)), checkpoint=tmp_path / "toy.pt", device="cpu")
    assert [e for e, _ in snaps] == [1, 2, 3] and len(history) == 3
    for a, b in zip(pair.state_dict().values(), pair2.state_dict().values()):
        assert torch.equal(a, b)


# ---- wrong inputs are named -------------------------------------------------------------------

def test_gan_step_refuses_no_discriminator_steps_and_lists_its_optimisers():
    pair, opts, _ = _toy_run()
    for d_steps in (0, -1, 1.5):
        with pytest.raises(ValueError, match=rf"d_steps must be a positive integer.*got {d_steps}"):
            gan.GANStep(pair, *opts, d_steps=d_steps)
    step = gan.GANStep(pair, *opts)
    assert step.optimizers == opts and step.optimizers[0] is step.opt_g   # [opt_g, opt_d], as fit's optimizer=


def test_gan_names_a_generator_without_latent_dim_or_with_a_wrong_one():
    D = dcgan.toy_discriminator()
    with pytest.raises(TypeError, match=r"needs a latent_dim attribute.*Sequential with latent_dim=None"):
        gan.GAN(nn.Sequential(nn.Linear(2, 2)), D)
    G = dcgan.toy_generator(latent_dim=2)
    G.latent_dim = 5
    with pytest.raises(ValueError, match=r"latent_dim=5 does not fit its input: noise of shape \(2, 5\)"):
        gan.GAN(G, D)


def test_the_probe_leaves_the_generator_as_it_was():
    torch.manual_seed(0)
    G = dcgan.dcgan_generator(latent_dim=16, channels=8, num_classes=10)
    D = dcgan.dcgan_discriminator(channels=8, num_classes=10)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    state = torch.get_rng_state()
    gan.GAN(G, D)
    assert G.training and torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())  # BN statistics too


def test_a_tanh_generator_on_unscaled_images_warns_once():
    torch.manual_seed(0)
    pair = gan.GAN(dcgan.dcgan_generator(latent_dim=16, channels=8), dcgan.dcgan_discriminator(channels=8))
    opts = [torch.optim.Adam(pair.generator.parameters()), torch.optim.Adam(pair.discriminator.parameters())]
    batch = (torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    step = gan.GANStep(pair, *opts)
    with pytest.warns(UserWarning, match=r"ends in tanh.*all >= 0.*scale_images=True"):
        step(batch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(batch)                                          # once only
        gan.GANStep(pair, *opts, scale_images=True)(batch)   # scaled: nothing to say
        gan.GANStep(pair, *opts)((batch[0] * 2 - 1, batch[1]))  # already in [-1, 1]


def test_frechet_distance_refuses_non_finite_statistics_and_single_samples():
    torch.manual_seed(0)
    f = torch.randn(50, 4, dtype=torch.float64)
    mu, cov = f.mean(0), f.T.cov()
    bad = mu.clone()
    bad[2] = float("nan")
    with pytest.raises(ValueError, match=r"mu2 holds NaN or infinite values"):
        gan.frechet_distance(mu, cov, bad, cov)
    one = f[:1]
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"sigma1 holds NaN.*fewer than 2 samples"):
        gan.frechet_distance(one.mean(0), one.T.cov(), mu, cov)
    with pytest.raises(ValueError, match=r"sigma2 must have shape \(4, 4\).*got \(3, 3\)"):
        gan.frechet_distance(mu, cov, mu, cov[:3, :3])


def test_frechet_distance_refuses_matrices_that_are_not_covariances():
    torch.manual_seed(0)
    f = torch.randn(50, 4, dtype=torch.float64)
    mu, cov = f.mean(0), f.T.cov()
    with pytest.raises(ValueError, match=r"sigma2 has a negative eigenvalue \(-1\)"):
        gan.frechet_distance(mu, cov, mu, -torch.eye(4, dtype=torch.float64))
    skew = cov.clone()
    skew[0, 1] += 1.0
    with pytest.raises(ValueError, match="sigma1 is not symmetric"):
        gan.frechet_distance(mu, skew, mu, cov)
    rank_deficient = f[:3].T.cov()   # 3 samples in 4 dimensions: a zero eigenvalue, rounded either way
    assert math.isfinite(gan.frechet_distance(mu, rank_deficient, mu, cov))


def test_frechet_score_refuses_images_outside_0_1():
    body = nn.Sequential(nn.Conv2d(1, 4, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    features = gan.Features(body, num_features=4)
    real = _blobs(20, 1)
    with pytest.raises(ValueError, match=r"images in \[0, 1\]; the fake images range over \[0\.\d+, 25\d"):
        gan.frechet_score(features, real, real * 255)
    with pytest.raises(ValueError, match=r"the real images range over \[-0\.99"):
        gan.frechet_score(features, real * 2 - 1, real)


# ---- resize-then-convolve upsampling, and the chapter's measures of samples ----------------------

@pytest.mark.parametrize("num_classes", [None, 10])
def test_resize_upsampling_gives_28x28_without_transposed_convolutions(num_classes):
    torch.manual_seed(0)
    G = dcgan.dcgan_generator(latent_dim=16, channels=8, num_classes=num_classes, upsample="resize")
    y = torch.arange(5) if num_classes else None
    x = G(torch.randn(5, 16), y) if num_classes else G(torch.randn(5, 16))
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    kinds = [type(m) for m in G.modules()]
    assert nn.ConvTranspose2d not in kinds and kinds.count(nn.Upsample) == 2
    assert isinstance(G.upsample[-1], nn.Tanh)
    assert [m.weight.shape[-1] for m in G.modules() if isinstance(m, nn.Conv2d)] == [3, 3]


def test_resize_then_convolve_equals_nearest_interpolation_then_conv2d():
    torch.manual_seed(0)
    layer = dcgan.UPSAMPLING["resize"](6, 4, bias=True)
    h = torch.randn(2, 6, 7, 7)
    conv = layer[1]
    want = nn.functional.conv2d(nn.functional.interpolate(h, scale_factor=2, mode="nearest"),
                                conv.weight, conv.bias, padding=1)
    assert torch.allclose(layer(h), want, atol=1e-6) and want.shape == (2, 4, 14, 14)


def test_upsampling_overlap_even_for_resize_and_kernel_4_uneven_for_kernel_3():
    """Odena et al. (2016): a stride-2 transposed convolution whose kernel the stride does not divide
    covers some output pixels more often than others; kernel 4 and resize-then-convolve do not."""
    ones = torch.ones(1, 1, 7, 7)
    def coverage(layer):
        conv = layer[1] if isinstance(layer, nn.Sequential) else layer
        nn.init.ones_(conv.weight)
        with torch.no_grad():
            return layer(ones)[0, 0, 4:-4, 4:-4]   # away from the borders
    uneven = coverage(nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, bias=False))
    assert set(uneven.unique().tolist()) == {1.0, 2.0, 4.0}
    assert coverage(dcgan.UPSAMPLING["transposed"](1, 1, bias=False)).unique().tolist() == [4.0]
    assert coverage(dcgan.UPSAMPLING["resize"](1, 1, bias=False)).unique().tolist() == [9.0]


def test_generator_names_an_unknown_upsampling():
    with pytest.raises(ValueError, match="upsample must be one of 'transposed', 'resize', got 'bilinear'"):
        dcgan.dcgan_generator(upsample="bilinear")


def test_generate_gives_seeded_images_in_0_1():
    torch.manual_seed(0)
    pair = gan.GAN(dcgan.dcgan_generator(latent_dim=8, channels=4), dcgan.dcgan_discriminator(channels=4))
    a, b = gan.generate(pair, 7, seed=3, batch_size=3), gan.generate(pair, 7, seed=3)
    assert a.shape == (7, 1, 28, 28) and 0 <= a.min() and a.max() <= 1
    assert torch.allclose(a, b, atol=1e-6)   # the same noise, in chunks or not
    assert not torch.allclose(a, gan.generate(pair, 7, seed=4))
    z = torch.randn(7, 8, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(a, (pair.sample(z=z) + 1) / 2, atol=1e-6)


def test_generate_passes_labels_to_a_conditional_gan():
    torch.manual_seed(0)
    pair = gan.GAN(dcgan.dcgan_generator(latent_dim=8, channels=4, num_classes=10),
                   dcgan.dcgan_discriminator(channels=4, num_classes=10))
    y = torch.tensor([0, 1, 2, 3, 4])
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(gan.generate(pair, 5, y=y, batch_size=2), (pair.sample(z=z, y=y) + 1) / 2, atol=1e-6)


class _ByBrightness(nn.Module):
    """A stand-in classifier: the class is the image's mean brightness in tenths."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return nn.functional.one_hot((x.mean((1, 2, 3)) * 10).long().clamp(0, 9), 10).float()


def test_class_shares_count_the_classifiers_predictions():
    brightness = torch.tensor([0.05] * 6 + [0.55] * 3 + [0.95])   # classes 0, 5 and 9
    images = brightness[:, None, None, None].expand(-1, 1, 28, 28)
    shares = gan.class_shares(_ByBrightness(), images, batch_size=4)
    want = torch.zeros(10)
    want[[0, 5, 9]] = torch.tensor([0.6, 0.3, 0.1])
    assert torch.allclose(shares, want) and shares.sum() == pytest.approx(1.0)


def test_nearest_neighbours_match_brute_force_and_find_copies():
    g = torch.Generator().manual_seed(0)
    pool, samples = torch.rand(50, 1, 28, 28, generator=g), torch.rand(9, 1, 28, 28, generator=g)
    samples[4] = pool[17]   # a memorised image
    dist, idx = gan.nearest_neighbours(samples, pool, batch_size=4)
    full = torch.cdist(samples.flatten(1), pool.flatten(1))
    assert torch.equal(idx, full.argmin(1))
    assert torch.allclose(dist, full.min(1).values, atol=1e-4)
    assert idx[4] == 17 and dist[4] < 1e-3


def test_feature_classifier_setting_is_the_same_for_cpu_and_full_and_tiny_for_smoke():
    assert gan.classifier_setting("cpu") == gan.classifier_setting("full") == gan.FEATURE_CLASSIFIER
    smoke = gan.classifier_setting("smoke")
    assert smoke["train_size"] < gan.FEATURE_CLASSIFIER["train_size"]
    with pytest.raises(ValueError, match="budget must be 'smoke', 'cpu' or 'full', got 'gpu'"):
        gan.classifier_setting("gpu")


def test_classifier_split_holds_out_images_the_classifier_never_sees():
    setting = gan.classifier_setting("cpu")
    train, held_out = gan.classifier_split(60_000, setting)
    assert len(train) == 50_000 and len(held_out) == 10_000
    assert not set(train.tolist()) & set(held_out.tolist())
    assert torch.equal(train, gan.classifier_split(60_000, setting)[0])   # fixed, not drawn anew
    with pytest.raises(ValueError, match="train_size \\+ held_out must be at most the 100 training images"):
        gan.classifier_split(100, setting)


def test_feature_classifier_at_the_smoke_setting():
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    fc = gan.feature_classifier("cpu", budget="smoke")
    assert torch.equal(torch.rand(3), before)   # the page's own random draws are left as they were
    s = gan.FEATURE_CLASSIFIER_SMOKE
    assert fc.setting == s and 0.5 < fc.test_accuracy <= 1   # 10 classes: chance is 0.1
    images, _ = data.load("FashionMNIST", train=True)
    held = gan.classifier_split(len(images), s)[1]
    assert torch.equal(fc.held_out, images[held].float() / 255)
    assert fc.features(fc.held_out[:5]).shape == (5, 84) and not fc.model.training
    again = gan.feature_classifier("cpu", budget="smoke")
    assert all(torch.equal(a, b) for a, b in zip(fc.model.state_dict().values(), again.model.state_dict().values()))
    assert f"{s['train_size']:,} training images" in str(fc)


def test_period2_power_finds_a_grid_against_the_reference_images():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(28), torch.arange(28), indexing="ij")
    checkerboard = ((yy + xx) % 2).float() - 0.5
    stripes = (xx % 2).float() - 0.5
    blurred = nn.functional.avg_pool2d(torch.rand(400, 1, 30, 30, generator=g), 3, stride=1)
    real_a, real_b = blurred[:200], blurred[200:]
    assert gan.period2_power(real_a, real_a) == pytest.approx(1.0)
    assert 0.7 < gan.period2_power(real_a, real_b) < 1.4          # two samples of the same kind
    assert gan.period2_power(real_a + 0.05 * checkerboard, real_b) > 10
    assert gan.period2_power(real_a + 0.05 * stripes, real_b) > 10  # any of the three frequencies
    x = real_a.double() - real_a.double().mean((-2, -1), keepdim=True)
    p = torch.fft.fft2(x).abs().square().mean((0, 1))
    y = real_b.double() - real_b.double().mean((-2, -1), keepdim=True)
    q = torch.fft.fft2(y).abs().square().mean((0, 1))
    by_hand = max((p[i, j] / p.sum()) / (q[i, j] / q.sum()) for i, j in [(0, 14), (14, 0), (14, 14)])
    assert gan.period2_power(real_a, real_b) == pytest.approx(by_hand.item())
    with pytest.raises(ValueError, match=r"expects reference \(N, C, H, W\) with even H and W, got \(2, 1, 27, 27\)"):
        gan.period2_power(real_a, torch.zeros(2, 1, 27, 27))
