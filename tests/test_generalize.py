import numpy as np
import pytest
from sklearn.model_selection import KFold

from cnnlib.generalize import bias_variance, kfold


@pytest.mark.parametrize("n,k", [(10, 2), (10, 3), (101, 5), (7, 7)])
def test_kfold_equals_sklearn_without_shuffling(n, k):
    ours = kfold(n, k)
    theirs = list(KFold(n_splits=k).split(np.zeros(n)))
    assert len(ours) == k
    for (tr, va), (tr2, va2) in zip(ours, theirs):
        assert np.array_equal(tr, tr2) and np.array_equal(va, va2)


@pytest.mark.parametrize("n,k", [(10, 3), (101, 5), (50, 10)])
def test_kfold_properties_with_shuffling(n, k):
    splits = kfold(n, k, shuffle=True, seed=1)
    assert len(splits) == k                                          # k models, not k - 1
    vals = np.concatenate([va for _, va in splits])
    assert np.array_equal(np.sort(vals), np.arange(n))               # each example held out once
    for tr, va in splits:
        assert len(np.intersect1d(tr, va)) == 0                      # never trained on what it scores
        assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(n))
        assert len(va) in (n // k, n // k + 1)                       # folds of equal size, +-1
    assert not np.array_equal(vals, np.arange(n))                    # shuffled
    again = kfold(n, k, shuffle=True, seed=1)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(splits, again))


def test_kfold_refuses_impossible_k():
    with pytest.raises(ValueError):
        kfold(5, 1)
    with pytest.raises(ValueError):
        kfold(5, 6)


def poly(degree):
    return lambda x, y, x_test: np.polyval(np.polyfit(x, y, degree), x_test)


def f(x):
    return np.sin(2 * np.pi * x)


def uniform(rng, n):
    return rng.uniform(0, 1, n)


X_TEST = np.linspace(0.05, 0.95, 30)


@pytest.mark.parametrize("degree", [1, 3, 9])
def test_bias2_variance_noise_sum_to_the_measured_test_error(degree):
    terms = bias_variance(poly(degree), f, X_TEST, uniform, noise_std=0.3, n_train=25, trials=400)
    assert abs(terms.total - terms.mse) < 4 * terms.mse_se
    assert terms.noise == pytest.approx(0.3 ** 2, rel=0.05)             # the noise variance, not E[eps]


def test_capacity_trades_bias_for_variance():
    low, high = (bias_variance(poly(d), f, X_TEST, uniform, noise_std=0.3, n_train=25, trials=300)
                 for d in (1, 7))
    assert low.bias2 > 10 * high.bias2
    assert high.variance > 3 * low.variance


def test_a_constant_predictor_has_no_variance():
    terms = bias_variance(lambda x, y, xt: np.zeros_like(xt), f, X_TEST, uniform, noise_std=0.5,
                          n_train=5, trials=50)
    assert terms.variance == 0
    assert terms.bias2 == pytest.approx(np.mean(f(X_TEST) ** 2))


@pytest.mark.parametrize("n,k,error,names", [
    (10, 2.5, TypeError, r"k must be an integer.*2\.5"),
    (10, 3.0, TypeError, r"k must be an integer.*3\.0"),
    (10.5, 3, TypeError, r"n must be an integer.*len\(dataset\).*10\.5"),
    (list(range(10)), 3, TypeError, r"n must be an integer.*len\(dataset\).*\[0, 1, 2"),
])
def test_kfold_refuses_counts_that_are_not_integers(n, k, error, names):
    with pytest.raises(error, match=names):
        kfold(n, k)


def test_kfold_takes_numpy_integers():
    assert len(kfold(np.int64(10), np.int32(5))) == 5


@pytest.mark.parametrize("kwargs,names", [
    ({"trials": 1}, r"trials must be at least 2, got 1"),
    ({"trials": 0}, r"trials must be at least 2, got 0"),
    ({"n_train": 0}, r"n_train must be at least 1, got 0"),
])
def test_bias_variance_refuses_too_few_trials_or_examples(kwargs, names):
    args = {"noise_std": 0.3, "n_train": 10, "trials": 5, **kwargs}
    with pytest.raises(ValueError, match=names):
        bias_variance(poly(1), f, X_TEST, uniform, **args)


def test_bias_variance_names_a_bad_prediction():
    column = lambda x, y, xt: poly(1)(x, y, xt)[:, None]  # noqa: E731
    with pytest.raises(ValueError, match=r"shape \(30,\), got shape \(30, 1\)"):
        bias_variance(column, f, X_TEST, uniform, noise_std=0.3, n_train=10, trials=5)
    calls = []

    def nan_on_the_third(x, y, xt):
        calls.append(1)
        return np.full_like(xt, np.nan) if len(calls) == 3 else poly(1)(x, y, xt)
    with pytest.raises(ValueError, match=r"non-finite predictions in trial 2: 30 of 30"):
        bias_variance(nan_on_the_third, f, X_TEST, uniform, noise_std=0.3, n_train=10, trials=5)
