"""Seven gradient methods written from their update rules, and the learning-rate range test.

Each optimiser is a small ``torch.optim.Optimizer`` whose ``update`` is the textbook rule in a
few lines; each takes the same steps as its ``torch.optim`` counterpart (tests/test_optim.py):

    SGD        w <- w - lr g
    Momentum   b <- mu b + g;                         w <- w - lr b
    Nesterov   b <- mu b + g;                         w <- w - lr (g + mu b)
    Adagrad    G <- G + g^2;                          w <- w - lr g / (sqrt(G) + eps)
    Adadelta   G <- rho G + (1-rho) g^2;  d = sqrt(D + eps) / sqrt(G + eps) g;
               D <- rho D + (1-rho) d^2;              w <- w - lr d
    RMSprop    G <- alpha G + (1-alpha) g^2;          w <- w - lr g / (sqrt(G) + eps)
    Adam       m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
               w <- w - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)

g is the gradient plus ``weight_decay * w`` (an L2 penalty, as torch.optim does it). State is
kept in tensors, the step count too, so a step can be captured in a CUDA graph.

The hyperparameters are checked as torch.optim checks them (a rate, decay, momentum or eps
below 0, betas outside [0, 1), rho or alpha outside [0, 1] are refused), and a learning rate
must also be finite. Complex parameters are stepped as pairs of reals, as torch does. Sparse
gradients work with SGD and Momentum (without weight decay); the others refuse them.

Chapter 2 (chapters/02_optimisation) teaches these rules and the range test.
"""
import math
import numbers
import warnings
from functools import partial

import torch

__all__ = ["SGD", "Momentum", "Nesterov", "Adagrad", "Adadelta", "RMSprop", "Adam",
           "OPTIMIZERS", "lr_range_test", "smooth", "suggest_lr"]


def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return value


def _check_lr(lr):
    if not (0.0 <= _number("lr", lr) < math.inf):  # also false for NaN
        raise ValueError(f"learning rate lr must be a finite number >= 0, got {lr!r}")


def _check_at_least_zero(name, value):
    if not 0.0 <= _number(name, value):
        raise ValueError(f"{name} must be >= 0, got {value!r}")


def _check_unit_interval(name, value):
    if not 0.0 <= _number(name, value) <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


def _check_betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, beta in enumerate(betas):
        if not 0.0 <= _number(f"betas[{i}]", beta) < 1.0:  # beta = 1 makes 1 - beta^t zero
            raise ValueError(f"betas[{i}] must be in [0, 1), got {beta!r}")


# How each hyperparameter is checked: torch.optim's conditions (alpha also <= 1: above it G goes negative).
_CHECKS = {"lr": _check_lr, "betas": _check_betas,
           "weight_decay": partial(_check_at_least_zero, "weight_decay"),
           "momentum": partial(_check_at_least_zero, "momentum"),
           "eps": partial(_check_at_least_zero, "eps"),
           "rho": partial(_check_unit_interval, "rho"),
           "alpha": partial(_check_unit_interval, "alpha")}


class _RuleOptimizer(torch.optim.Optimizer):
    """Loops over parameters and applies weight decay; subclasses write ``update``."""

    sparse_gradients = False  # whether ``update`` works on a sparse g (rules linear in g)

    def __init__(self, params, **defaults):
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        """torch's add_param_group, after checking the group's hyperparameters."""
        if isinstance(param_group, dict):  # torch itself refuses anything else
            self.check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def check_hyperparameters(self, group):
        for name, check in _CHECKS.items():
            if name in group:
                check(group[name])

    def load_state_dict(self, state_dict):
        """torch's load_state_dict, refusing the state of another optimiser (other keys)."""
        self._check_state_keys(state_dict)
        super().load_state_dict(state_dict)

    def _check_state_keys(self, state_dict):
        what = type(self).__name__
        expected = {}
        self.init_state(expected, torch.zeros(1))
        for group in state_dict.get("param_groups", []):
            missing = set(self.defaults) - set(group)
            if missing:
                raise ValueError(f"this state_dict is not {what}'s: its parameter groups lack "
                                 f"{sorted(missing)} (it comes from another optimiser)")
        for state in state_dict.get("state", {}).values():
            if state and set(state) != set(expected):
                raise ValueError(f"this state_dict is not {what}'s: a parameter's state holds "
                                 f"{sorted(state)}, {what} keeps {sorted(expected)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                w, g = p, p.grad
                if g.is_sparse:
                    self._check_sparse(group)
                if torch.is_complex(p):  # as torch: a complex number is a pair of reals
                    w, g = torch.view_as_real(p), torch.view_as_real(g)
                if group["weight_decay"]:
                    g = g.add(w, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    self.init_state(state, w)
                self.update(w, g, state, group)
        return loss

    def _check_sparse(self, group):
        what = type(self).__name__
        if not self.sparse_gradients:
            raise RuntimeError(f"{what} does not support sparse gradients (from nn.Embedding(sparse=True)), "
                               "please consider SGD, Momentum or torch.optim.SparseAdam instead")
        if group["weight_decay"]:
            raise RuntimeError(f"{what} does not support sparse gradients with weight_decay "
                               f"(got {group['weight_decay']!r}): use weight_decay=0")

    def init_state(self, state, w):
        """Zero tensors the rule accumulates into (none for plain SGD)."""

    def update(self, w, g, state, group):
        raise NotImplementedError


def _zeros(w):
    return torch.zeros_like(w, memory_format=torch.preserve_format)


def _step_count(w):
    """A step counter on the parameter's device (float, so bias corrections stay tensor ops)."""
    return torch.zeros((), dtype=torch.promote_types(w.dtype, torch.float32), device=w.device)


class SGD(_RuleOptimizer):
    """Plain (stochastic) gradient descent: w <- w - lr g."""

    sparse_gradients = True

    def __init__(self, params, lr=0.1, weight_decay=0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay)

    def update(self, w, g, state, group):
        w.add_(g, alpha=-group["lr"])


class Momentum(_RuleOptimizer):
    """Heavy-ball momentum: b <- mu b + g; w <- w - lr b (torch's SGD with momentum, dampening 0)."""

    sparse_gradients = True

    def __init__(self, params, lr=0.1, momentum=0.9, weight_decay=0.0):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

    def init_state(self, state, w):
        state["velocity"] = _zeros(w)  # b_0 = 0, so b_1 = g_1 as in torch

    def update(self, w, g, state, group):
        b = state["velocity"].mul_(group["momentum"]).add_(g)
        w.add_(b, alpha=-group["lr"])


class Nesterov(Momentum):
    """Nesterov momentum in torch's form: b <- mu b + g; w <- w - lr (g + mu b).

    This is the look-ahead rule (gradient taken at w + mu v) rewritten in the look-ahead
    point's coordinates, so it needs only the gradient at the current weights.
    """

    sparse_gradients = False  # g + mu b adds a dense b to a sparse g

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        if group["momentum"] <= 0:  # torch: "Nesterov momentum requires a momentum"
            raise ValueError(f"Nesterov momentum requires a momentum > 0, got {group['momentum']!r}")

    def update(self, w, g, state, group):
        b = state["velocity"].mul_(group["momentum"]).add_(g)
        w.add_(g.add(b, alpha=group["momentum"]), alpha=-group["lr"])


class Adagrad(_RuleOptimizer):
    """Adagrad: G <- G + g^2; w <- w - lr g / (sqrt(G) + eps), eps outside the root as in torch."""

    def __init__(self, params, lr=0.01, eps=1e-10, weight_decay=0.0):
        super().__init__(params, lr=lr, eps=eps, weight_decay=weight_decay)

    def init_state(self, state, w):
        state["sum_sq"] = _zeros(w)

    def update(self, w, g, state, group):
        G = state["sum_sq"].addcmul_(g, g)
        w.addcdiv_(g, G.sqrt().add_(group["eps"]), value=-group["lr"])


class Adadelta(_RuleOptimizer):
    """Adadelta: a step in the units of w, sqrt(D + eps) / sqrt(G + eps) * g (eps inside both roots).

    The rule has no learning rate; torch's ``lr`` (default 1.0) only scales the finished step.
    """

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
        super().__init__(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)

    def init_state(self, state, w):
        state["avg_sq"], state["avg_delta_sq"] = _zeros(w), _zeros(w)

    def update(self, w, g, state, group):
        rho, eps = group["rho"], group["eps"]
        G = state["avg_sq"].mul_(rho).addcmul_(g, g, value=1 - rho)
        delta = state["avg_delta_sq"].add(eps).sqrt_().div_(G.add(eps).sqrt_()).mul_(g)
        state["avg_delta_sq"].mul_(rho).addcmul_(delta, delta, value=1 - rho)
        w.add_(delta, alpha=-group["lr"])


class RMSprop(_RuleOptimizer):
    """RMSprop: G <- alpha G + (1-alpha) g^2; w <- w - lr g / (sqrt(G) + eps), eps outside the root."""

    def __init__(self, params, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay)

    def init_state(self, state, w):
        state["avg_sq"] = _zeros(w)

    def update(self, w, g, state, group):
        alpha = group["alpha"]
        G = state["avg_sq"].mul_(alpha).addcmul_(g, g, value=1 - alpha)
        w.addcdiv_(g, G.sqrt().add_(group["eps"]), value=-group["lr"])


class Adam(_RuleOptimizer):
    """Adam: moving averages of g and g^2, each divided by its bias (1 - beta^t) before use."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def init_state(self, state, w):
        state["step"], state["m"], state["v"] = _step_count(w), _zeros(w), _zeros(w)

    def update(self, w, g, state, group):
        beta1, beta2 = group["betas"]
        t = state["step"].add_(1)
        m = state["m"].lerp_(g, 1 - beta1)             # b1 m + (1 - b1) g
        v = state["v"].mul_(beta2).addcmul_(g, g, value=1 - beta2)   # g*g
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        denominator = v_hat.sqrt_().add_(group["eps"])
        w.addcdiv_(m_hat, denominator, value=-group["lr"])


# Each rule and the torch.optim call that takes the same steps (used by the tests and the book).
OPTIMIZERS = {
    "SGD": (SGD, lambda p, lr, **kw: torch.optim.SGD(p, lr, **kw)),
    "Momentum": (Momentum, lambda p, lr, momentum=0.9, **kw: torch.optim.SGD(p, lr, momentum=momentum, **kw)),
    "Nesterov": (Nesterov, lambda p, lr, momentum=0.9, **kw:
                 torch.optim.SGD(p, lr, momentum=momentum, nesterov=True, **kw)),
    "Adagrad": (Adagrad, lambda p, lr, **kw: torch.optim.Adagrad(p, lr, **kw)),
    "Adadelta": (Adadelta, lambda p, lr, **kw: torch.optim.Adadelta(p, lr, **kw)),
    "RMSprop": (RMSprop, lambda p, lr, **kw: torch.optim.RMSprop(p, lr, **kw)),
    "Adam": (Adam, lambda p, lr, **kw: torch.optim.Adam(p, lr, **kw)),
}


def lr_range_test(model, loader, make_optimizer, *, start=1e-6, end=10.0, steps=100,
                  diverge=4.0, beta=0.9, loss_fn=None, device=None):
    """Train with a learning rate that grows geometrically from `start` to `end`, one step each.

    Returns (lrs, losses): the rate of every step taken and the loss of its batch. Stops early
    once the smoothed loss (see ``smooth``) exceeds `diverge` times its lowest value so far, or
    a loss is not finite. The model's weights are put back afterwards, so the test leaves no
    trace. ``make_optimizer(params, lr)`` builds the optimiser; the steps run through
    ``cnnlib.fit`` (``max_steps=steps``), whose remaining steps do nothing once the loss diverged.
    """
    from .train import classification_loss, fit  # train imports nothing from here
    batches = _check_range_test(loader, start, end, steps)
    loss_fn = loss_fn or classification_loss
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    optimizer = make_optimizer(model.parameters(), start)
    growth = (end / start) ** (1 / (steps - 1))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: growth ** i)
    lrs, losses = [], []

    over = []  # holds True once the loss diverged: fit's remaining steps then do nothing

    def probe(batch):  # one step at the next rate, its loss recorded (one sync a step: fine for a probe)
        if over:
            return {}
        loss = _probe_loss(loss_fn(model, batch))
        lrs.append(optimizer.param_groups[0]["lr"])
        losses.append(loss.item())
        smoothed = smooth(losses, beta)
        if not math.isfinite(losses[-1]) or smoothed[-1] > diverge * min(smoothed):
            over.append(True)  # the step at the rate that diverged is not taken
            return {}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return {}

    try:
        fit(model, loader, epochs=math.ceil(steps / batches), max_steps=steps, optimizer=optimizer,
            train_step=probe, device=device, amp=False, cuda_graph=False, quiet=True)
    finally:  # no trace: weights, buffers, mode and gradients as they were
        model.load_state_dict(saved)
        model.train(was_training)
        optimizer.zero_grad(set_to_none=True)
    if len(losses) == 1 and not math.isfinite(losses[0]):
        warnings.warn(f"lr_range_test: the loss was {losses[0]} at the first rate already (start={start:g}): "
                      "the curve says nothing; start lower, or check the model and the loss", stacklevel=2)
    return lrs, losses


def _check_range_test(loader, start, end, steps):
    """The range test's arguments, refused with a reason; returns the loader's batches per epoch."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer of at least 2 (one rate a step), got {steps!r}")
    if not (isinstance(start, (int, float)) and isinstance(end, (int, float))
            and math.isfinite(start) and math.isfinite(end) and 0 < start < end):
        raise ValueError(f"the rates grow geometrically from start to end: they need 0 < start < end, "
                         f"got start={start!r}, end={end!r}")
    try:
        batches = len(loader)
    except TypeError:
        raise TypeError(f"lr_range_test needs a loader with a length (a cnnlib loader, a DataLoader or a "
                        f"list of batches), got a {type(loader).__name__}") from None
    if batches == 0:
        raise ValueError("the loader gives 0 batches: nothing to probe (use a smaller batch_size or "
                         "more examples)")
    return batches


def _probe_loss(out):
    """The loss a loss_fn returned (alone, or first of a (loss, metrics) pair), as one number."""
    loss = out[0] if isinstance(out, tuple) else out
    if not torch.is_tensor(loss) or not loss.requires_grad:
        raise TypeError("loss_fn must return the loss as a tensor that depends on the model (not a number "
                        f"or a detached tensor: no .item()), got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"loss_fn must return one loss (e.g. the batch's .mean()), got shape {tuple(loss.shape)}")
    return loss.reshape(())


def smooth(losses, beta=0.9):
    """Exponential moving average of a noisy loss curve, bias-corrected like Adam's moments."""
    out, avg = [], 0.0
    for t, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** t))
    return out


def suggest_lr(lrs, losses, beta=0.9):
    """A rate from a range test: a tenth of the rate where the smoothed loss
    was lowest.

    At the minimum the loss is about to blow up; a tenth of it is still on
    the steep, stable part of the curve (fastai's rule of thumb, behind its
    lr_min; Smith's range test watched accuracy as the rate rose).
    """
    if len(lrs) != len(losses) or len(losses) < 3:
        raise ValueError(f"a range test curve needs at least 3 points "
                         f"(rates and losses of equal length), got "
                         f"{len(lrs)} rates and {len(losses)} losses")
    smoothed = smooth(losses, beta)
    lowest = min(range(len(smoothed)), key=smoothed.__getitem__)
    if lowest == 0:
        raise ValueError("the loss never fell below its first value: the "
                         "test started too high to show a rate that trains "
                         "(run it again with a smaller start)")
    return lrs[lowest] / 10
