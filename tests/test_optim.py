import io
import math

import pytest
import torch
import torch.nn as nn

from cnnlib import data, optim

# Settings where the details matter: large eps (inside or outside the root), weight decay,
# Adadelta's lr, momentum values other than the default.
CASES = [
    ("SGD", 0.05, {}), ("SGD", 0.05, {"weight_decay": 0.1}),
    ("Momentum", 0.02, {}), ("Momentum", 0.02, {"momentum": 0.5, "weight_decay": 0.01}),
    ("Nesterov", 0.02, {}), ("Nesterov", 0.02, {"momentum": 0.99, "weight_decay": 0.01}),
    ("Adagrad", 0.1, {}), ("Adagrad", 0.1, {"eps": 0.3, "weight_decay": 0.01}),
    ("Adadelta", 1.0, {}), ("Adadelta", 0.5, {"rho": 0.5, "eps": 0.1, "weight_decay": 0.01}),
    ("RMSprop", 0.01, {}), ("RMSprop", 0.01, {"alpha": 0.9, "eps": 0.3, "weight_decay": 0.01}),
    ("Adam", 0.01, {}), ("Adam", 0.01, {"betas": (0.5, 0.9), "eps": 0.3, "weight_decay": 0.01}),
]


def random_problem(seed):
    """A small MLP regression with random sizes and data (float64, so rounding cannot hide a bug)."""
    g = torch.Generator().manual_seed(seed)
    n_in, n_hidden = torch.randint(2, 8, (2,), generator=g).tolist()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_in, n_hidden), nn.Tanh(), nn.Linear(n_hidden, 1)).double()
    x = torch.randn(64, n_in, generator=g, dtype=torch.float64)
    y = torch.randn(64, 1, generator=g, dtype=torch.float64)
    return model, x, y


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name,lr,kwargs", CASES)
def test_rule_takes_the_same_steps_as_torch_optim(name, lr, kwargs, seed):
    ours_cls, theirs_fn = optim.OPTIMIZERS[name]
    model, x, y = random_problem(seed)
    twin = random_problem(seed)[0]
    ours, theirs = ours_cls(model.parameters(), lr=lr, **kwargs), theirs_fn(twin.parameters(), lr, **kwargs)
    for step in range(60):
        for m, opt in ((model, ours), (twin, theirs)):
            opt.zero_grad()
            batch = slice(step % 4 * 16, step % 4 * 16 + 16)  # minibatches: the gradient changes
            ((m(x[batch]) - y[batch]) ** 2).mean().backward()
            opt.step()
        for a, b in zip(model.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=f"{name} differs at step {step}")
    moved = sum((a - b).abs().sum() for a, b in zip(model.parameters(), random_problem(seed)[0].parameters()))
    assert moved > 1e-3  # the comparison is not between two models that never moved


def test_eps_placement_matters_so_the_test_can_tell():
    """With eps inside the root (the study notes' Adagrad) the steps differ from torch's."""
    w_torch = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adagrad([w_torch], lr=0.1, eps=0.3)
    w_notes = w_torch.detach().clone()
    G = torch.zeros_like(w_notes)
    for _ in range(5):
        opt.zero_grad()
        (w_torch ** 2).sum().backward()
        opt.step()
        g = 2 * w_notes
        G += g * g
        w_notes -= 0.1 * g / torch.sqrt(G + 0.3)
    assert not torch.allclose(w_torch.detach(), w_notes, rtol=1e-4)


def test_parameters_without_gradients_are_left_alone():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = optim.Adam([a, b], lr=0.1)
    a.sum().backward()
    opt.step()
    assert torch.equal(b.detach(), torch.ones(3)) and not torch.equal(a.detach(), torch.ones(3))
    assert b not in opt.state


def test_state_dict_round_trip_continues_identically():
    model, x, y = random_problem(0)
    opt = optim.Adam(model.parameters(), lr=0.01)
    loss = lambda: ((model(x) - y) ** 2).mean()
    for _ in range(3):
        opt.zero_grad(); loss().backward(); opt.step()
    twin = random_problem(0)[0]
    twin.load_state_dict(model.state_dict())
    opt2 = optim.Adam(twin.parameters(), lr=0.01)
    saved = io.BytesIO()                      # as a checkpoint file would hold it
    torch.save(opt.state_dict(), saved)
    saved.seek(0)
    opt2.load_state_dict(torch.load(saved))
    for m, o in ((model, opt), (twin, opt2)):
        o.zero_grad(); ((m(x) - y) ** 2).mean().backward(); o.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_negative_learning_rate_is_refused():
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD([nn.Parameter(torch.ones(1))], lr=-1)


class NoisyQuadratic(nn.Module):
    """f(w) = 1/2 sum_i c_i (w_i - z_i)^2, z a fresh noisy target each batch.

    Gradient descent on it is stable exactly when lr < 2 / L, L = max c_i: beyond that the
    stiffest coordinate is multiplied by |1 - lr L| > 1 every step, and the noise keeps it from
    ever settling at zero.
    """

    def __init__(self, curvatures):
        super().__init__()
        self.curvatures = torch.tensor(curvatures)
        self.w = nn.Parameter(torch.ones(len(curvatures)))

    def loss(self, _model, batch):
        targets = batch[0].flatten()
        return 0.5 * (self.curvatures * (self.w - targets) ** 2).sum()


@pytest.mark.parametrize("L", [10.0, 1000.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lr_range_test_finds_the_divergence_threshold_of_a_quadratic(L, seed):
    torch.manual_seed(seed)
    model = NoisyQuadratic([L, L / 2])
    targets = 0.1 * torch.randn(300, 2)
    loader = data.TensorLoader(targets, torch.zeros(300, dtype=torch.long), 1, shuffle=True, device="cpu")
    before = model.w.detach().clone()
    lrs, losses = optim.lr_range_test(model, loader, optim.SGD, start=1e-3 / L, end=100 / L,
                                      steps=100, loss_fn=model.loss, device="cpu")
    assert torch.equal(model.w.detach(), before)          # the weights are put back
    assert lrs[0] == pytest.approx(1e-3 / L)
    assert math.isclose(lrs[1] / lrs[0], 1e5 ** (1 / 99), rel_tol=1e-9)
    assert len(lrs) < 100                                  # it diverged and stopped early
    assert 2 / L < lrs[-1] < 3 * 2 / L                     # ... soon after lr passed 2 / L
    assert 2 / L / 20 < optim.suggest_lr(lrs, losses) < 2 / L   # a stable, not timid, rate


def test_smooth_is_an_unbiased_moving_average():
    assert optim.smooth([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])  # no pull towards 0
    assert optim.smooth([0.0, 10.0], beta=0.5) == pytest.approx([0.0, 5 / 0.75])


def test_lr_range_test_on_a_classifier_runs_all_steps_when_nothing_diverges():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    images = torch.randint(0, 255, (64, 1, 4, 4), dtype=torch.uint8)
    loader = data.TensorLoader(images, torch.randint(0, 2, (64,)), 16, shuffle=True, device="cpu")
    lrs, losses = optim.lr_range_test(model, loader, optim.Adam, start=1e-7, end=1e-5, steps=10,
                                      device="cpu")
    assert len(lrs) == len(losses) == 10
    assert all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("name", ["Adagrad", "Adadelta", "RMSprop", "Adam"])
def test_eps_zero_is_accepted_as_torch_accepts_it(name):
    """Left as torch has it on purpose: eps = 0 shows Adam's first step is lr * sign(g) (the
    optimisers page's exercise); a parameter whose gradients are all zero then steps to NaN in
    both, as 0 / 0."""
    ours, theirs = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    for w, opt in ((ours, getattr(optim, name)([ours], eps=0.0)),
                   (theirs, getattr(torch.optim, name)([theirs], eps=0.0))):
        w.grad = torch.zeros(3)
        opt.step()
    assert ours.isnan().all() and theirs.isnan().all()


def tiny_classifier():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    images = torch.randint(0, 255, (64, 1, 4, 4), dtype=torch.uint8)
    return model, data.TensorLoader(images, torch.randint(0, 2, (64,)), 16, device="cpu")


@pytest.mark.parametrize("kwargs, words", [
    (dict(steps=0), "steps must be an integer of at least 2"),
    (dict(steps=1), "steps must be an integer of at least 2"),
    (dict(start=0), "0 < start < end"),
    (dict(start=1.0, end=0.1), "0 < start < end"),
    (dict(end=float("nan")), "0 < start < end"),
])
def test_lr_range_test_refuses_a_range_it_cannot_walk(kwargs, words):
    model, loader = tiny_classifier()
    with pytest.raises(ValueError, match=words):
        optim.lr_range_test(model, loader, optim.SGD, device="cpu", **kwargs)


def test_lr_range_test_names_a_loader_without_a_length_or_batches():
    model, loader = tiny_classifier()
    with pytest.raises(TypeError, match="needs a loader with a length.*generator"):
        optim.lr_range_test(model, (b for b in loader), optim.SGD, steps=5, device="cpu")
    with pytest.raises(ValueError, match="0 batches"):
        optim.lr_range_test(model, [], optim.SGD, steps=5, device="cpu")


@pytest.mark.parametrize("loss_fn, error, words", [
    (lambda m, b: nn.functional.cross_entropy(m(b[0].float()), b[1]).item(), TypeError, "not a number"),
    (lambda m, b: nn.functional.cross_entropy(m(b[0].float()), b[1]).detach(), TypeError, "detached"),
    (lambda m, b: nn.functional.cross_entropy(m(b[0].float()), b[1], reduction="none"), ValueError,
     r"one loss.*shape \(16,\)"),
])
def test_lr_range_test_names_a_loss_it_cannot_use(loss_fn, error, words):
    model, loader = tiny_classifier()
    with pytest.raises(error, match=words):
        optim.lr_range_test(model, loader, optim.SGD, steps=5, loss_fn=loss_fn, device="cpu")


def test_lr_range_test_leaves_mode_and_gradients_as_they_were():
    model, loader = tiny_classifier()
    model.eval()
    before = [p.detach().clone() for p in model.parameters()]
    optim.lr_range_test(model, loader, optim.SGD, start=1e-3, end=1.0, steps=8, device="cpu")
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_a_loss_that_is_not_finite_at_the_first_rate_is_said():
    model, loader = tiny_classifier()

    def infinite(m, b):
        return nn.functional.cross_entropy(m(b[0].float()), b[1]) * float("inf")
    with pytest.warns(UserWarning, match="first rate already"):
        lrs, losses = optim.lr_range_test(model, loader, optim.SGD, steps=5, loss_fn=infinite, device="cpu")
    assert len(losses) == 1
    with pytest.raises(ValueError, match="at least 3 points"):
        optim.suggest_lr(lrs, losses)


def test_suggest_lr_refuses_a_curve_that_only_rises():
    with pytest.raises(ValueError, match="never fell"):
        optim.suggest_lr([1e-3, 1e-2, 1e-1, 1.0], [1.0, 2.0, 4.0, 8.0])
    # smoothed (beta 0.9): 2.0, 1.47, 1.11, 3.41: lowest at the third rate, a tenth of it
    assert optim.suggest_lr([1e-3, 1e-2, 1e-1, 1.0], [2.0, 1.0, 0.5, 9.0]) == pytest.approx(1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("name", list(optim.OPTIMIZERS))
def test_rules_can_be_captured_in_fits_cuda_graph(name):
    """fit replays the whole step as a CUDA graph: state (Adam's step count too) must be tensors."""
    from cnnlib.models import lenet5
    from cnnlib.train import fit
    results = []
    for graph in (False, True):
        torch.manual_seed(0)
        model = lenet5()
        images, labels = torch.randint(0, 256, (512, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (512,))
        loader = data.TensorLoader(images, labels, 64, shuffle=True, drop_last=True, device="cuda")
        opt = optim.OPTIMIZERS[name][0](model.parameters(), lr=1e-3)
        fit(model, loader, epochs=2, optimizer=opt, cuda_graph=graph, amp=False, progress=False, device="cuda")
        results.append([p.detach().float().cpu() for p in model.parameters()])
    for eager, graphed in zip(*results):
        torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-5)


# ---- impossible settings, sparse and complex gradients, foreign states ------------------------

NAN = float("nan")
# (optimiser, lr, other settings, what the message must name): each refused by torch.optim too
REFUSED_BY_TORCH = [
    *[(name, NAN, {}, r"lr.*nan") for name in ("Adagrad", "Adadelta", "RMSprop", "Adam")],
    *[(name, 0.1, {"weight_decay": -1.0}, r"weight_decay.*-1") for name in optim.OPTIMIZERS],
    ("Momentum", 0.1, {"momentum": -0.5}, r"momentum.*-0\.5"),
    ("Nesterov", 0.1, {"momentum": -0.5}, r"momentum.*-0\.5"),
    ("Nesterov", 0.1, {"momentum": 0.0}, r"Nesterov.*momentum.*0"),
    ("Adam", 0.1, {"betas": (1.0, 0.999)}, r"betas\[0\].*1\.0"),
    ("Adam", 0.1, {"betas": (0.9, 1.0)}, r"betas\[1\].*1\.0"),
    ("Adam", 0.1, {"betas": (-0.1, 0.999)}, r"betas\[0\].*-0\.1"),
    ("Adam", 0.1, {"eps": -1e-8}, r"eps.*-1e-08"),
    ("Adagrad", 0.1, {"eps": -1.0}, r"eps.*-1"),
    ("Adadelta", 1.0, {"rho": 1.5}, r"rho.*1\.5"),
    ("Adadelta", 1.0, {"rho": -0.1}, r"rho.*-0\.1"),
    ("Adadelta", 1.0, {"eps": -1.0}, r"eps.*-1"),
    ("RMSprop", 0.1, {"alpha": -0.5}, r"alpha.*-0\.5"),
    ("RMSprop", 0.1, {"eps": -1.0}, r"eps.*-1"),
]


@pytest.mark.parametrize("name,lr,kwargs,names", REFUSED_BY_TORCH)
def test_settings_torch_refuses_are_refused_with_the_argument_and_value(name, lr, kwargs, names):
    ours_cls, theirs_fn = optim.OPTIMIZERS[name]
    with pytest.raises(ValueError):                  # the reference: torch refuses it
        theirs_fn([nn.Parameter(torch.ones(2))], lr, **kwargs)
    with pytest.raises(ValueError, match=names):
        ours_cls([nn.Parameter(torch.ones(2))], lr=lr, **kwargs)


@pytest.mark.parametrize("name,kwargs,error,names", [
    *[(name, {"lr": NAN}, ValueError, r"lr.*nan") for name in ("SGD", "Momentum", "Nesterov")],  # torch's
    ("SGD", {"lr": float("inf")}, ValueError, r"lr.*finite.*inf"),       # SGD takes them: w -> NaN, -inf
    ("RMSprop", {"alpha": 1.5}, ValueError, r"alpha.*1\.5"),              # G goes negative: NaN
    ("Adam", {"betas": (0.9,)}, ValueError, r"betas.*pair.*\(0\.9,\)"),
    ("Adam", {"betas": 0.9}, ValueError, r"betas.*pair.*0\.9"),
    ("SGD", {"lr": "0.1"}, TypeError, r"lr must be a number.*'0\.1'"),
])
def test_settings_that_cannot_train_are_refused_at_construction(name, kwargs, error, names):
    with pytest.raises(error, match=names):
        optim.OPTIMIZERS[name][0]([nn.Parameter(torch.ones(2))], **kwargs)


def test_a_parameter_groups_own_settings_are_checked_too():
    with pytest.raises(ValueError, match=r"lr.*nan"):
        optim.Adam([{"params": [nn.Parameter(torch.ones(2))], "lr": NAN}])
    opt = optim.SGD([nn.Parameter(torch.ones(2))], lr=0.1)
    with pytest.raises(ValueError, match=r"weight_decay.*-1"):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], "weight_decay": -1.0})
    assert len(opt.param_groups) == 1


def _sparse_step(opt_cls, **kwargs):
    torch.manual_seed(0)
    emb = nn.Embedding(6, 3, sparse=True)
    opt = opt_cls(emb.parameters(), **kwargs)
    for ids in ([1, 2], [2, 4]):
        opt.zero_grad()
        (emb(torch.tensor(ids)) ** 2).sum().backward()
        opt.step()
    return emb.weight.detach()


@pytest.mark.parametrize("name", ["Nesterov", "Adagrad", "Adadelta", "RMSprop", "Adam"])
def test_sparse_gradients_are_refused_by_name(name):
    with pytest.raises(RuntimeError, match=rf"{name} does not support sparse gradients"):
        _sparse_step(optim.OPTIMIZERS[name][0], lr=0.1)


def test_sparse_gradients_step_sgd_and_momentum_as_torch_and_refuse_weight_decay():
    torch.testing.assert_close(_sparse_step(optim.SGD, lr=0.1), _sparse_step(torch.optim.SGD, lr=0.1))
    torch.testing.assert_close(_sparse_step(optim.Momentum, lr=0.1, momentum=0.5),
                               _sparse_step(torch.optim.SGD, lr=0.1, momentum=0.5))
    with pytest.raises(RuntimeError, match=r"SGD does not support sparse gradients with weight_decay.*0\.1"):
        _sparse_step(optim.SGD, lr=0.1, weight_decay=0.1)


@pytest.mark.parametrize("name,lr,kwargs", CASES)
def test_complex_parameters_take_torchs_steps(name, lr, kwargs):
    """torch steps a complex parameter as a pair of reals (|g|^2, not g * g, in the averages)."""
    ours_cls, theirs_fn = optim.OPTIMIZERS[name]
    start = torch.tensor([1 + 0.5j, -2 + 1j, 0.3 - 0.7j], dtype=torch.complex128)
    target = torch.tensor([0.2j, 1 - 1j, -0.5 + 0.1j], dtype=torch.complex128)
    a, b = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    ours, theirs = ours_cls([a], lr=lr, **kwargs), theirs_fn([b], lr, **kwargs)
    for _ in range(20):
        for w, opt in ((a, ours), (b, theirs)):
            opt.zero_grad()
            (w - target).abs().pow(2).sum().backward()
            opt.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(a.detach(), start)


def test_loading_another_optimisers_state_is_refused_with_the_keys():
    model, x, y = random_problem(0)
    momentum = optim.Momentum(model.parameters(), lr=0.01)
    theirs = torch.optim.Adam(model.parameters(), lr=0.01)
    for opt in (momentum, theirs):
        opt.zero_grad(); ((model(x) - y) ** 2).mean().backward(); opt.step()
    adam = optim.Adam(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match=r"not Adam's.*lack.*betas"):
        adam.load_state_dict(momentum.state_dict())
    with pytest.raises(ValueError, match=r"not Adam's.*exp_avg.*Adam keeps.*'m'"):
        adam.load_state_dict(theirs.state_dict())
    fresh = optim.Momentum(model.parameters(), lr=0.01)
    fresh.load_state_dict(momentum.state_dict())       # its own state still loads
    assert torch.equal(fresh.state_dict()["state"][0]["velocity"], momentum.state_dict()["state"][0]["velocity"])
