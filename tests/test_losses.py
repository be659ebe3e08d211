"""Chapter 1's from-scratch formulas, restated and checked against torch.

The notebooks in chapters/01_mlp write these same formulas in their cells; here they are
checked on more shapes and seeds than a notebook shows.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

SEEDS = [0, 1, 2]


# The formulas, as the chapter writes them.

def mse(y_hat, y):
    return ((y_hat - y) ** 2).mean()


def softmax(z):
    z = z - z.max(dim=1, keepdim=True).values  # exp of large logits overflows; the shift cancels
    e = z.exp()
    return e / e.sum(dim=1, keepdim=True)


def cross_entropy(z, y_onehot):
    """Minus the sum of y * log(y_hat) (not a sum of y - log y_hat), averaged over the batch."""
    return -(y_onehot * softmax(z).log()).sum(dim=1).mean()


def gaussian_nll(mu, y, var):
    """-log N(y; mu, var), averaged: 0.5 * log(2 pi var) + (y - mu)^2 / (2 var)."""
    return (0.5 * torch.log(2 * math.pi * var) + (y - mu) ** 2 / (2 * var)).mean()


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
def test_cross_entropy_matches_torch(seed):
    logits, labels = batch(seed)
    onehot = F.one_hot(labels, logits.shape[1]).double()
    torch.testing.assert_close(cross_entropy(logits, onehot), F.cross_entropy(logits, labels))
    # torch also takes class probabilities as the target: the same formula with soft y
    soft = torch.softmax(torch.randn_like(logits), dim=1)
    torch.testing.assert_close(cross_entropy(logits, soft), F.cross_entropy(logits, soft))


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_entropy_is_nll_of_softmax(seed):
    logits, labels = batch(seed)
    nll = -torch.log(softmax(logits)[torch.arange(len(labels)), labels]).mean()
    torch.testing.assert_close(nll, F.cross_entropy(logits, labels))
    torch.testing.assert_close(F.nll_loss(F.log_softmax(logits, dim=1), labels), F.cross_entropy(logits, labels))


def test_the_slipped_formula_ignores_the_label():
    # sum_k (y_k - log y_hat_k) = 1 - sum_k log y_hat_k for a one-hot y: the same for every
    # label, and smallest for a uniform prediction. The real cross-entropy prefers the truth.
    def slipped(p, y_onehot):
        return (y_onehot - p.log()).sum(dim=1)

    confident = torch.tensor([[0.97, 0.01, 0.01, 0.01]])
    uniform = torch.full((1, 4), 0.25)
    y0, y3 = F.one_hot(torch.tensor([0]), 4).float(), F.one_hot(torch.tensor([3]), 4).float()
    assert slipped(confident, y0) == slipped(confident, y3)
    assert slipped(uniform, y0) < slipped(confident, y0)
    real = lambda p, y: -(y * p.log()).sum(dim=1)  # noqa: E731
    assert real(confident, y0) < real(uniform, y0) < real(confident, y3)


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


def test_binary_cross_entropy_is_bernoulli_nll():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (50,), generator=g).double()
    p = torch.sigmoid(logits)
    nll = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    torch.testing.assert_close(nll, F.binary_cross_entropy_with_logits(logits, y))


@pytest.mark.parametrize("seed", SEEDS)
def test_two_linear_layers_collapse_to_one(seed):
    torch.manual_seed(seed)
    first, second = nn.Linear(5, 8).double(), nn.Linear(8, 3).double()
    x = torch.randn(20, 5, dtype=torch.float64)
    weight = second.weight @ first.weight
    bias = second.weight @ first.bias + second.bias
    torch.testing.assert_close(second(first(x)), x @ weight.T + bias)


def test_hand_written_gradient_descent_equals_torch_sgd():
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
    optimizer = torch.optim.SGD(layer.parameters(), lr=eta)
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


@pytest.mark.parametrize("name, formula, derivative", [
    ("Sigmoid", lambda x: 1 / (1 + torch.exp(-x)), lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x))),
    ("Tanh", lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
     lambda x: 1 - torch.tanh(x) ** 2),
    ("ReLU", lambda x: torch.clamp(x, min=0), lambda x: (x > 0).double()),
    ("GELU", lambda x: x * 0.5 * (1 + torch.erf(x / math.sqrt(2))),
     lambda x: 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-x ** 2 / 2) / math.sqrt(2 * math.pi)),
])
def test_activations_and_their_derivatives(name, formula, derivative):
    x = torch.linspace(-5, 5, 201, dtype=torch.float64).requires_grad_()
    y = getattr(nn, name)()(x)
    torch.testing.assert_close(formula(x), y)
    (grad,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(derivative(x.detach()), grad)
