"""The losses readers run, checked against torch: cnnlib's where cnnlib has them, else chapter 1's.

cnnlib's own losses (``regularize.soft_cross_entropy``, ``train.classification_loss``,
``gan.bce_loss``, ``gan.discriminator_loss``), ``models.MLP`` and ``optim.SGD`` are tested as
they are. MSE, the softmax, the Gaussian NLL and the activations live only in the cells of
chapters/01_mlp: they are read from those cells (their definitions, nothing else of the page
runs), so a change to the page's formula is tested here, on more shapes and seeds than a
notebook shows.
"""
import ast
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlib import gan, optim
from cnnlib import regularize as R
from cnnlib.models import MLP
from cnnlib.train import classification_loss

SEEDS = [0, 1, 2]
CHAPTER_1 = Path(__file__).resolve().parents[1] / "chapters" / "01_mlp"


def from_notebook(page, name):
    """`name` as the page defines it: the imports and definitions of the cell that assigns it."""
    for cell in json.loads((CHAPTER_1 / page).read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        tree = ast.parse("".join(cell["source"]))
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)} | {
            t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        if name in defined:
            keep = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef))
                    or isinstance(n, ast.Assign) and any(getattr(t, "id", None) == name for t in n.targets)]
            namespace = {"torch": torch, "nn": nn, "F": F, "math": math}
            exec(compile(ast.Module(keep, type_ignores=[]), page, "exec"), namespace)
            return namespace[name]
    raise LookupError(f"chapters/01_mlp/{page} defines no {name}")


mse = from_notebook("03_losses.ipynb", "mse")
softmax = from_notebook("03_losses.ipynb", "softmax")
gaussian_nll = from_notebook("03_losses.ipynb", "gaussian_nll")
ACTIVATIONS = from_notebook("02_activations_and_mlps.ipynb", "ACTIVATIONS")


def test_the_linear_models_page_writes_the_same_mse():
    g = torch.Generator().manual_seed(0)
    y_hat, y = torch.randn(2, 32, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(from_notebook("01_linear_models.ipynb", "mse")(y_hat, y), F.mse_loss(y_hat, y))


def batch(seed, n=16, k=7, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, k, generator=g, dtype=torch.float64)
    labels = torch.randint(0, k, (n,), generator=g)
    return logits, labels


@pytest.mark.parametrize("seed", SEEDS)
def test_mse_matches_torch(seed):
    g = torch.Generator().manual_seed(seed)
    y_hat, y = torch.randn(2, 32, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(mse(y_hat, y), F.mse_loss(y_hat, y))
    torch.testing.assert_close(mse(y_hat, y), nn.MSELoss()(y_hat, y))


@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_matches_torch_and_survives_large_logits(seed):
    logits, _ = batch(seed)
    torch.testing.assert_close(softmax(logits), torch.softmax(logits, dim=1))
    huge = logits.float() + 1000.0  # exp(1000) is inf in float32; the shift keeps it finite
    assert torch.isfinite(softmax(huge)).all()
    torch.testing.assert_close(softmax(huge), torch.softmax(huge, dim=1))


@pytest.mark.parametrize("seed", SEEDS)
def test_soft_cross_entropy_matches_torch(seed):
    """cnnlib's cross-entropy on target probabilities (chapter 3 trains with it; it computes in float32)."""
    logits, labels = batch(seed)
    logits = logits.float()
    torch.testing.assert_close(R.soft_cross_entropy(logits, R.one_hot(labels, logits.shape[1])),
                               F.cross_entropy(logits, labels))
    soft = torch.softmax(torch.randn_like(logits), dim=1)   # torch takes probabilities too
    torch.testing.assert_close(R.soft_cross_entropy(logits, soft), F.cross_entropy(logits, soft))
    huge = logits + 1000.0                                   # log-softmax, never log of an overflowed exp
    torch.testing.assert_close(R.soft_cross_entropy(huge, soft), F.cross_entropy(huge, soft))


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_loss_is_cross_entropy_and_accuracy(seed):
    """fit's default loss: the same number as the soft version on one-hot targets."""
    torch.manual_seed(seed)
    model = nn.Linear(5, 7)
    x, labels = torch.randn(40, 5), torch.randint(0, 7, (40,))
    loss, metrics = classification_loss(model, (x, labels))
    logits = model(x)
    torch.testing.assert_close(loss, R.soft_cross_entropy(logits, R.one_hot(labels, 7)))
    assert metrics["acc"].item() == pytest.approx((logits.argmax(1) == labels).sum().item() / 40)


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_entropy_is_nll_of_softmax(seed):
    logits, labels = batch(seed)
    nll = -torch.log(softmax(logits)[torch.arange(len(labels)), labels]).mean()
    torch.testing.assert_close(nll, F.cross_entropy(logits, labels))


@pytest.mark.parametrize("seed", SEEDS)
def test_gaussian_nll_matches_torch(seed):
    g = torch.Generator().manual_seed(seed)
    mu, y = torch.randn(2, 64, generator=g, dtype=torch.float64)
    var = torch.rand(64, generator=g, dtype=torch.float64) + 0.1
    torch.testing.assert_close(gaussian_nll(mu, y, var), F.gaussian_nll_loss(mu, y, var, full=True))
    # without full=True torch leaves out the constant 0.5 * log(2 pi)
    torch.testing.assert_close(gaussian_nll(mu, y, var) - 0.5 * math.log(2 * math.pi),
                               F.gaussian_nll_loss(mu, y, var))


@pytest.mark.parametrize("seed", SEEDS)
def test_gaussian_nll_with_unit_variance_is_half_mse_plus_a_constant(seed):
    g = torch.Generator().manual_seed(seed)
    mu, y = torch.randn(2, 100, generator=g, dtype=torch.float64)
    nll = gaussian_nll(mu, y, torch.ones_like(mu))
    torch.testing.assert_close(nll, F.mse_loss(mu, y) / 2 + 0.5 * math.log(2 * math.pi))


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_cross_entropy_losses_are_bernoulli_nll(seed):
    """gan.bce_loss (D alone) and gan.discriminator_loss: -log p(y) of a Bernoulli with p = sigmoid."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(50, 1, generator=g)
    y = torch.randint(0, 2, (50,), generator=g)
    model = nn.Sequential(nn.Linear(1, 1), nn.Flatten(0))
    loss, metrics = gan.bce_loss(model, (x, y))
    p = torch.sigmoid(model(x))
    torch.testing.assert_close(loss, -(y * p.log() + (1 - y) * (1 - p).log()).mean())
    assert metrics["acc"].item() == pytest.approx(((p > 0.5) == (y == 1)).float().mean().item())
    real, fake = torch.randn(2, 30, generator=g, dtype=torch.float64)
    want = -torch.sigmoid(real).log().mean() - (1 - torch.sigmoid(fake)).log().mean()
    torch.testing.assert_close(gan.discriminator_loss(real, fake), want)


@pytest.mark.parametrize("seed", SEEDS)
def test_an_mlp_without_activations_collapses_to_one_linear_layer(seed):
    torch.manual_seed(seed)
    net = MLP(5, hidden=(8,), num_outputs=3, activation=nn.Identity).double()
    first, second = net.linear_layers
    x = torch.randn(20, 5, dtype=torch.float64)
    weight = second.weight @ first.weight
    bias = second.weight @ first.bias + second.bias
    torch.testing.assert_close(net(x), x @ weight.T + bias)


@pytest.mark.parametrize("sgd", [optim.SGD, torch.optim.SGD])
def test_hand_written_gradient_descent_equals_sgd(sgd):
    torch.manual_seed(0)
    x, y = torch.randn(64, 3), torch.randn(64, 2)
    eta, steps = 0.1, 25
    layer = nn.Linear(3, 2)
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    for _ in range(steps):
        loss = mse(x @ w.T + b, y)
        grad_w, grad_b = torch.autograd.grad(loss, [w, b])
        with torch.no_grad():
            w -= eta * grad_w
            b -= eta * grad_b
    optimizer = sgd(layer.parameters(), lr=eta)
    for _ in range(steps):
        optimizer.zero_grad()
        F.mse_loss(layer(x), y).backward()
        optimizer.step()
    torch.testing.assert_close(w, layer.weight)
    torch.testing.assert_close(b, layer.bias)


def test_mse_gradient_formula_matches_autograd():
    # L = mean over n examples and m outputs of (xW^T + b - y)^2  =>  dL/dW = 2/(n m) (y_hat - y)^T x
    torch.manual_seed(0)
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    y_hat = x @ w.T + b
    mse(y_hat, y).backward()
    scale = 2 / y.numel()
    torch.testing.assert_close(w.grad, scale * (y_hat - y).T @ x)
    torch.testing.assert_close(b.grad, scale * (y_hat - y).sum(dim=0))


def test_the_page_has_its_four_activations():
    assert list(ACTIVATIONS) == ["sigmoid", "tanh", "ReLU", "GELU"]


@pytest.mark.parametrize("name, formula, derivative, module",
                         [(name, *entry) for name, entry in ACTIVATIONS.items()])
def test_activations_and_their_derivatives(name, formula, derivative, module):
    x = torch.linspace(-5, 5, 201, dtype=torch.float64).requires_grad_()
    y = module()(x)
    torch.testing.assert_close(formula(x), y)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(derivative(x.detach()), grad)
