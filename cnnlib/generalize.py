"""Generalisation, measured: k-fold splits and the bias-variance-noise decomposition by simulation.

    for train_idx, val_idx in kfold(n=100, k=5): ...           # k models, each fit on k-1 folds
    terms = bias_variance(fit_predict, f, x_test, sample_x, noise_std=0.3, n_train=30)
    terms.bias2 + terms.variance + terms.noise   # ~= terms.mse, the expected test error
Taught in: chapters/02_optimisation/01_generalisation.ipynb and 02_bias_variance.ipynb.
"""
import reprlib
from dataclasses import dataclass

import numpy as np

from ._validate import _is_int


def _check_integer(name, value, meaning):
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, {meaning}, got {reprlib.repr(value)}")


def kfold(n, k, *, shuffle=False, seed=0):
    """The k (train indices, validation indices) pairs of k-fold
    cross-validation.

    The n examples are cut into k folds of nearly equal size (the first
    n % k folds get one extra, as scikit-learn's KFold does); split i holds
    fold i out and trains on the other k-1.
    """
    _check_integer("n", n, "the number of examples (pass len(dataset))")
    _check_integer("k", k, "the number of folds")
    if not 2 <= k <= n:
        raise ValueError(f"k must be between 2 and the number of examples "
                         f"{n}, got {k}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n) if shuffle else np.arange(n)
    sizes = np.full(k, n // k)
    sizes[:n % k] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    splits = []
    for i in range(k):
        val = order[bounds[i]:bounds[i + 1]]
        train = np.concatenate([order[:bounds[i]], order[bounds[i + 1]:]])
        splits.append((train, val))
    return splits


@dataclass
class BiasVariance:
    """The measured terms of the expected squared test error, averaged over the test points."""
    bias2: float      # (f(x) - E[f_hat(x)])^2: how far the average model is from the truth
    variance: float   # E[(f_hat(x) - E[f_hat(x)])^2]: how much the model moves with the data
    noise: float      # E[(y - f(x))^2]: the noise variance, which no model can remove
    mse: float        # E[(y - f_hat(x))^2], measured directly on fresh noisy targets
    mse_se: float     # standard error of mse (the simulation's own uncertainty)

    @property
    def total(self):
        return self.bias2 + self.variance + self.noise


def bias_variance(fit_predict, f, x_test, sample_x, *, noise_std, n_train, trials=200, seed=0):
    """Estimate bias^2, variance and noise of a learning method by drawing many training sets.

    fit_predict(x, y, x_test) -> predictions: fits a fresh model on (x, y), predicts at x_test.
    f: the true function; the data are y = f(x) + N(0, noise_std^2) with x = sample_x(rng, n).
    Each trial draws a training set and, independently, fresh noisy targets at x_test.
    """
    _check_counts(n_train=(n_train, 1), trials=(trials, 2))  # two trials at least for a variance
    rng = np.random.default_rng(seed)
    truth = f(x_test)
    preds = np.empty((trials, len(x_test)))
    targets = np.empty((trials, len(x_test)))
    for t in range(trials):
        x = sample_x(rng, n_train)
        y = f(x) + noise_std * rng.standard_normal(len(x))
        preds[t] = _predictions(fit_predict(x, y, x_test), len(x_test), trial=t)
        targets[t] = truth + noise_std * rng.standard_normal(len(x_test))
    average_model = preds.mean(axis=0)
    per_trial_mse = ((targets - preds) ** 2).mean(axis=1)
    return BiasVariance(
        bias2=float(((truth - average_model) ** 2).mean()),
        variance=float(preds.var(axis=0).mean()),
        noise=float(((targets - truth) ** 2).mean()),
        mse=float(per_trial_mse.mean()),
        mse_se=float(per_trial_mse.std(ddof=1) / np.sqrt(trials)),
    )


def _check_counts(**counts):
    for name, (value, minimum) in counts.items():
        _check_integer(name, value, f"at least {minimum}")
        if value < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _predictions(values, n, trial):
    """fit_predict's answer as (n,) floats, or a message naming what is wrong with it."""
    values = np.asarray(values, dtype=float)
    if values.shape != (n,):
        raise ValueError(f"fit_predict must return one prediction per test point, shape ({n},), "
                         f"got shape {values.shape} (trial {trial})")
    if not np.isfinite(values).all():
        raise ValueError(f"fit_predict returned non-finite predictions in trial {trial}: "
                         f"{int((~np.isfinite(values)).sum())} of {n} are NaN or infinite")
    return values
