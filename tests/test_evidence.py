import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cnnlib import evidence
from cnnlib.evidence import claim, compare, from_rows, gain_over_baseline, holm


def seeded_scores(means, n=5, seed_effect=0.01, noise=0.002, rng_seed=0):
    """{config: {seed: score}}: every seed moves all configs alike (seed_effect), plus noise."""
    rng = np.random.default_rng(rng_seed)
    shared = rng.normal(0, seed_effect, n)
    return {name: {s: mean + shared[s] + rng.normal(0, noise) for s in range(n)}
            for name, mean in means.items()}


# Against scipy.stats


@pytest.mark.parametrize("rng_seed", [0, 1, 2])
def test_paired_difference_equals_scipy_ttest_rel(rng_seed):
    scores = seeded_scores({"base": 0.83, "other": 0.835}, rng_seed=rng_seed)
    row = compare(scores)["other"]
    x, b = (list(scores[k].values()) for k in ("other", "base"))
    ref = stats.ttest_rel(x, b)
    assert row.paired and row.df == 4
    assert row.diff == pytest.approx(np.mean(x) - np.mean(b), abs=1e-15)
    assert row.t == pytest.approx(ref.statistic, rel=1e-10)
    assert row.p == pytest.approx(ref.pvalue, rel=1e-10)
    low, high = ref.confidence_interval(0.95)
    assert (row.low, row.high) == pytest.approx((low, high), rel=1e-10)


def test_pairing_follows_seeds_not_order():
    scores = seeded_scores({"base": 0.83, "other": 0.84})
    shuffled = {"base": scores["base"], "other": dict(reversed(scores["other"].items()))}
    assert compare(shuffled)["other"].t == pytest.approx(compare(scores)["other"].t, rel=1e-12)


@pytest.mark.parametrize("n_other", [3, 4, 7])
def test_unpaired_difference_equals_scipy_welch(n_other):
    rng = np.random.default_rng(n_other)
    scores = {"base": list(rng.normal(0.83, 0.01, 5)), "other": list(rng.normal(0.84, 0.02, n_other))}
    row = compare(scores)["other"]
    ref = stats.ttest_ind(scores["other"], scores["base"], equal_var=False)
    assert not row.paired and (row.n, row.n_base) == (n_other, 5)
    assert row.t == pytest.approx(ref.statistic, rel=1e-10)
    assert row.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert row.df == pytest.approx(ref.df, rel=1e-10)


def test_different_seed_sets_and_paired_false_use_welch():
    scores = seeded_scores({"base": 0.83, "other": 0.84})
    del scores["other"][4]                                     # seeds 0-3 against 0-4
    ref = stats.ttest_ind(list(scores["other"].values()), list(scores["base"].values()), equal_var=False)
    assert not compare(scores)["other"].paired
    assert compare(scores)["other"].p == pytest.approx(ref.pvalue, rel=1e-10)
    full = seeded_scores({"base": 0.83, "other": 0.84})
    forced = compare(full, paired=False)["other"]
    ref = stats.ttest_ind(list(full["other"].values()), list(full["base"].values()), equal_var=False)
    assert not forced.paired and forced.p == pytest.approx(ref.pvalue, rel=1e-10)


# Holm


def test_holm_against_hand_computation():
    # sorted p: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04, raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.2]) == pytest.approx([0.5, 0.4])
    assert holm([0.9, 0.6, 0.01]) == pytest.approx([1.0, 1.0, 0.03])    # capped at 1
    assert holm([0.02]) == [0.02]


def test_compare_corrects_for_the_number_of_comparisons():
    scores = seeded_scores({"base": 0.83, "a": 0.84, "b": 0.832, "c": 0.829, "d": 0.85})
    result = compare(scores)
    names = ["a", "b", "c", "d"]
    raw = [stats.ttest_rel(list(scores[k].values()), list(scores["base"].values())).pvalue for k in names]
    assert [result[k].p_holm for k in names] == pytest.approx(holm(raw), rel=1e-10)
    assert result.m == 4
    assert "Holm over 4" in result.verdict("a") and "Holm over 4" in repr(result).splitlines()[0]


def test_holm_turns_a_lone_significant_result_into_cannot_tell():
    # one comparison at p ~ 0.03 is "ahead"; the same data among four (p * 4 > 0.05) is not
    rng = np.random.default_rng(3)
    base = {s: 0.83 + rng.normal(0, 0.01) for s in range(5)}
    diffs = [0.004, 0.001, 0.007, 0.002, 0.004]
    lone = {"base": base, "x": {s: base[s] + d for s, d in enumerate(diffs)}}
    p = compare(lone)["x"].p
    assert 0.0125 < p < 0.05, p                                 # the premise of this test
    assert compare(lone).outcome("x") == "ahead"
    crowd = {**lone, **{f"null {i}": dict(base) for i in range(3)}}
    assert compare(crowd).outcome("x") == "cannot tell"


# Verdicts on constructed data


def test_known_difference_is_found_and_worded_ahead():
    base = seeded_scores({"base": 0.830})["base"]
    wobble = [0.0005, -0.0005, 0.0003, -0.0003, 0.0]           # sums to 0: the mean gain is exact
    scores = {"base": base, "better": {s: base[s] + 0.019 + w for s, w in enumerate(wobble)},
              "worse": {s: base[s] - 0.015 + w for s, w in enumerate(wobble[::-1])}}
    result = compare(scores)
    assert result.outcome("better") == "ahead" and result.outcome("worse") == "behind"
    assert result.verdict("better").startswith("ahead by 1.9")
    assert result.verdict("better").endswith("points (5 seeds; Holm over 2)")
    assert result.verdict("worse").startswith("behind by 1.5")
    assert result.names("ahead") == ["better"]


def test_pairing_sees_what_the_seed_effect_hides_from_welch():
    # the seeds move scores by 1 point, the technique adds 0.5: only the paired test sees it
    scores = seeded_scores({"base": 0.830, "other": 0.835}, seed_effect=0.01, noise=0.0005)
    assert compare(scores).outcome("other") == "ahead"
    assert compare(scores, paired=False).outcome("other") == "cannot tell"


def test_identical_distributions_cannot_be_told_apart():
    base = {s: 0.83 + 0.01 * math.sin(s) for s in range(5)}
    same = dict(base)                                           # every paired difference 0
    balanced = {s: base[s] + d for s, d in enumerate([0.005, -0.005, 0.003, -0.003, 0.0])}
    result = compare({"base": base, "same": same, "balanced": balanced})
    for name in ("same", "balanced"):
        assert result[name].p == pytest.approx(1.0)
        assert result.verdict(name).startswith("cannot tell apart at this budget")


def test_fewer_than_two_seeds_cannot_rank():
    result = compare({"base": {0: 0.83}, "other": {0: 0.90}})
    assert result.outcome("other") == "cannot rank"
    assert result.verdict("other").startswith("cannot rank from 1 seeds")
    assert result.m == 0 and math.isnan(result["other"].p)
    one_side = compare({"base": [0.83, 0.84, 0.82], "other": [0.90]})
    assert one_side.outcome("other") == "cannot rank"


def test_lower_is_better_flips_ahead_and_behind():
    scores = seeded_scores({"base": 0.50, "lower loss": 0.45}, noise=0.001)
    assert compare(scores, higher_is_better=False, scale=1, unit="nats").outcome("lower loss") == "ahead"
    assert compare(scores).outcome("lower loss") == "behind"


# Inputs


def test_a_run_function_gives_the_same_result_as_its_table():
    calls = []

    def run(config, seed):
        calls.append((config, seed))
        return 0.8 + config["gain"] + 0.01 * seed ** 0.5

    configs = {"base": dict(gain=0.0), "plus": dict(gain=0.02)}
    from_run = compare(run, configs=configs, seeds=3)
    assert calls == [(c, s) for c in configs.values() for s in range(3)]
    table = {name: {s: run(c, s) for s in range(3)} for name, c in configs.items()}
    assert from_run["plus"].diff == pytest.approx(compare(table)["plus"].diff)
    with pytest.raises(ValueError, match="configs= and seeds="):
        compare(run)


def test_from_rows_reads_the_controlled_experiments_rows():
    rows = [dict(technique=t, seed=s, test_acc=0.8 + 0.01 * s + (t == "bn") * 0.02)
            for t in ("baseline", "bn") for s in range(3)]
    assert from_rows(rows, "test_acc", "technique") == from_rows(pd.DataFrame(rows), "test_acc", "technique")
    assert from_rows(rows, "test_acc", "technique")["bn"] == pytest.approx({0: 0.82, 1: 0.83, 2: 0.84})
    with pytest.raises(ValueError, match="technique='bn' has two runs with seed=0"):
        from_rows(rows + [rows[3]], "test_acc", "technique")


def test_clear_errors():
    with pytest.raises(ValueError, match="baseline 'nope' is not one of the configurations"):
        compare({"a": [1, 2], "b": [1, 2]}, baseline="nope")
    with pytest.raises(ValueError, match=r"results\['b'\] has nan for seed 1.*diverged"):
        compare({"a": {0: 0.8, 1: 0.8}, "b": {0: 0.8, 1: float("nan")}})
    with pytest.raises(ValueError, match="holds no scores"):
        compare({"a": [0.8, 0.9], "b": []})
    with pytest.raises(KeyError, match="'c' is not one of the configurations"):
        compare({"a": [0.8, 0.9], "b": [0.7, 0.8]}).verdict("c")
    with pytest.raises(ValueError, match="outcome must be one of"):
        compare({"a": [0.8, 0.9], "b": [0.7, 0.8]}).names("better")


# Output


def test_table_fits_80_columns_and_frame_holds_the_rows():
    means = {"the baseline, at its default": 0.83, "a rather long technique name": 0.85, "x": 0.831}
    scores = seeded_scores({**means, **{f"technique {i}": 0.83 for i in range(12)}})
    scores["one seed"] = {0: 0.9}
    result = compare(scores)
    text = repr(result)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "a rather long techni" in text and "cannot rank" in text and "ahead" in text
    frame = result.frame()
    assert list(frame.index) == list(scores)
    assert frame.loc["x", "p"] == pytest.approx(result["x"].p)
    assert frame.loc["a rather long technique name", "verdict"] == result.verdict("a rather long technique name")


# claim


@pytest.mark.parametrize("budget", ["cpu", "full"])
def test_claim_asserts_under_cpu_and_full(budget, monkeypatch, capsys):
    monkeypatch.setenv("CNNLIB_BUDGET", budget)
    assert claim(True, "batch norm helps") is None   # nothing for a notebook cell to echo
    assert f"checked at the {budget} budget: batch norm helps" in capsys.readouterr().out
    with pytest.raises(AssertionError, match=f"'cosine beats constant'.*{budget} budget"):
        claim(np.bool_(False), "cosine beats constant")


def test_claim_only_reports_under_smoke(monkeypatch, capsys):
    monkeypatch.setenv("CNNLIB_BUDGET", "smoke")
    claim(False, "cosine beats constant")
    claim(True, "batch norm helps")
    out = " ".join(capsys.readouterr().out.split())   # the lines wrap within the book's column
    assert "not checked at the smoke budget (here it did not hold): cosine beats constant" in out
    assert "not checked at the smoke budget (here it held): batch norm helps" in out


# The controlled experiment's table (03_regularisation/06, cell 12), reproduced


def notebook_gain_over_baseline(frame, column, plan):
    """Copied from the notebook as it stands (the global `plan` made an argument)."""
    stats = frame.groupby("technique", sort=False)[column].agg(["mean", "std"])
    base = stats.loc["baseline"]
    stats["gain"] = stats["mean"] - base["mean"]
    stats["se"] = (stats["std"] ** 2 / plan.seeds + base["std"] ** 2 / plan.seeds) ** 0.5
    stats["z"] = stats["gain"] / stats["se"]
    return stats.sort_values("mean", ascending=False)


def test_gain_over_baseline_reproduces_the_notebook():
    means = {"baseline": 0.8275, "batch norm": 0.8475, "DropConnect 0.5": 0.8336,
             "input noise 0.2": 0.8202, "combination": 0.8467}
    scores = seeded_scores(means, seed_effect=0.008, noise=0.006, rng_seed=7)
    rows = [dict(technique=t, seed=s, val_acc=v, test_acc=v - 0.01)
            for t, by_seed in scores.items() for s, v in by_seed.items()]
    frame = pd.DataFrame(rows)
    plan = type("Plan", (), {"seeds": 5})
    for column in ("val_acc", "test_acc"):
        expected = notebook_gain_over_baseline(frame, column, plan)
        got = gain_over_baseline(frame, column)
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12, atol=1e-15)


def test_module_docstring_names_the_chapters():
    assert "Chapter 2" in evidence.__doc__ and "chapter 3" in evidence.__doc__
