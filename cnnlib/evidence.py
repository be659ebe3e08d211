"""Comparing runs over seeds, and checking in code what the prose says about them.

Chapter 2's optimiser and schedule pages, chapter 3's controlled experiment and chapter 5's
comparison of architectures all rank configurations from their scores. One seed cannot rank:
a seed fixes the initial weights and the batch order, and moves a score by as much as many
techniques do. This module turns per-seed scores into a verdict in words.

    scores = {"baseline": {0: 0.827, 1: 0.826, 2: 0.829},      # config -> {seed: score}
              "batch norm": {0: 0.850, 1: 0.847, 2: 0.845}}
    result = compare(scores)                     # the first configuration is the baseline
    print(result)                                # mean, std, difference, se, p, verdict
    result.verdict("batch norm")                 # 'ahead by 2.00 +/- 0.21 points (3 seeds)'
    claim(result.outcome("batch norm") == "ahead", "batch norm beats the baseline")

How a difference is judged:
- Paired by seed when both configurations ran the same seeds: the differences d_s = x_s - b_s
  cancel what the seed does to both, se = std(d) / sqrt(n), with n - 1 degrees of freedom.
- Welch's unpaired test otherwise: se = sqrt(s_x^2/n_x + s_b^2/n_b), Welch-Satterthwaite df.
- A two-sided t-test; with m configurations against one baseline, Holm's correction keeps the
  chance of any false "ahead" or "behind" among the m at most alpha.
"""
import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats

from . import config
from ._text import wrap

OUTCOMES = ("ahead", "behind", "cannot tell", "cannot rank", "baseline")


@dataclass(frozen=True)
class Row:
    """One configuration's scores and its difference from the baseline (in the scores' units)."""
    name: object
    n: int                # seeds run
    mean: float
    std: float            # over seeds (n - 1 in the denominator); nan for one seed
    diff: float = 0.0     # mean difference from the baseline (paired: mean of d_s)
    se: float = math.nan  # standard error of diff
    df: float = math.nan  # degrees of freedom of the t-test
    t: float = math.nan
    p: float = math.nan       # two-sided p-value of this one comparison
    p_holm: float = math.nan  # the same, corrected for the number of comparisons
    low: float = math.nan     # the (1 - alpha) t-interval of diff, this comparison alone
    high: float = math.nan
    paired: bool = False
    n_base: int = 0       # the baseline's seeds (unpaired: may differ from n)
    outcome: str = "baseline"


def compare(results, baseline=None, *, configs=None, seeds=None, paired=None, alpha=0.05,
            higher_is_better=True, scale=100, unit="points"):
    """Each configuration's mean and std over seeds, and its difference from the baseline.

    results: {config: {seed: score}} (or {config: [scores]}, which cannot be paired), or a
      function run(config, seed) -> score, called for every config in `configs` (a list, or a
      dict name -> config such as a page's TECHNIQUES) and every seed in `seeds` (or range(seeds)).
    baseline: the configuration the others are compared with; the first one by default.
    paired: None pairs by seed where both ran the same seeds; False always uses Welch.
    scale, unit: how the words and the table show a difference (accuracy 0.019 -> 1.9 points).
    """
    if callable(results):
        results = run_all(results, configs, seeds)
    scores = {name: _as_seed_dict(name, values) for name, values in results.items()}
    if not scores:
        raise ValueError("results must hold at least one configuration, got none")
    baseline = next(iter(scores)) if baseline is None else baseline
    if baseline not in scores:
        raise ValueError(f"baseline {baseline!r} is not one of the configurations {list(scores)}")
    rows = {name: _difference(values, scores[baseline], name, paired, alpha)
            for name, values in scores.items() if name != baseline}
    rows = _judge(rows, alpha, higher_is_better)
    return Comparison({baseline: _summary(baseline, scores[baseline]), **rows}, baseline,
                      alpha=alpha, scale=scale, unit=unit)


def run_all(run, configs, seeds):
    """{name: {seed: run(config, seed)}} for every configuration and seed."""
    if configs is None or seeds is None:
        raise ValueError("a function run(config, seed) needs configs= and seeds= to call it with")
    seeds = range(seeds) if isinstance(seeds, int) else list(seeds)
    named = configs.items() if isinstance(configs, dict) else ((c, c) for c in configs)
    return {name: {seed: run(config, seed) for seed in seeds} for name, config in named}


def from_rows(rows, value, by, seed="seed"):
    """{config: {seed: score}} from a list of dicts or a DataFrame with one row per run."""
    records = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    results = {}
    for record in records:
        runs = results.setdefault(record[by], {})
        if record[seed] in runs:
            raise ValueError(f"{by}={record[by]!r} has two runs with {seed}={record[seed]!r}")
        runs[record[seed]] = record[value]
    return results


def holm(p_values):
    """Holm's step-down correction: the k-th smallest p is multiplied by (m - k + 1), and the
    corrected values are made non-decreasing in that order and capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def claim(condition, statement, *, budget=None):
    """Check a statement the page's prose makes, at the budget its outputs were stored with.

    Under the cpu and full budgets a false condition raises an AssertionError quoting the
    statement, so no page is stored with prose its outputs contradict. Under smoke (CI's few
    hundred images) nothing can be concluded: it prints that the claim was not checked.
    Returns nothing, so a page's claim cell shows only its sentence.
    """
    name = budget or config.budget_name()
    held = bool(condition)
    if name == "smoke":
        print(wrap(f"not checked at the smoke budget (here it {'held' if held else 'did not hold'}): "
                   f"{statement}"))
    elif held:
        print(wrap(f"checked at the {name} budget: {statement}"))
    else:
        raise AssertionError(f"the page says {statement!r}, but its outputs at the {name} budget do not show it")


def gain_over_baseline(frame, column, baseline="baseline", by="technique"):
    """The controlled experiment's (03/06) table: mean, std, gain over the baseline, the gain's
    unpaired standard error and z = gain / se, best mean first; computed with compare()."""
    import pandas as pd
    result = compare(from_rows(frame, column, by), baseline, paired=False)
    table = pd.DataFrame({name: {"mean": r.mean, "std": r.std, "gain": r.diff, "se": r.se,
                                 "z": r.diff / r.se} for name, r in result.rows.items()}).T
    base = result[baseline]   # the notebook shows the baseline against itself: gain 0, z 0
    table.loc[baseline, ["se", "z"]] = [math.sqrt(2 * base.std ** 2 / base.n), 0.0]
    table.index.name = by
    return table.sort_values("mean", ascending=False)


class Comparison:
    """The result of compare(): result[name] is a Row; print(result) shows the table."""

    def __init__(self, rows, baseline, *, alpha, scale, unit):
        self.rows, self.baseline = rows, baseline
        self.alpha, self.scale, self.unit = alpha, scale, unit
        self.m = sum(not math.isnan(r.p) for r in rows.values())   # comparisons made

    def __getitem__(self, name):
        if name not in self.rows:
            raise KeyError(f"{name!r} is not one of the configurations {list(self.rows)}")
        return self.rows[name]

    def outcome(self, name):
        """'ahead', 'behind', 'cannot tell', 'cannot rank' or 'baseline'."""
        return self[name].outcome

    def names(self, outcome):
        """The configurations with this outcome, in the order they were given."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        return [name for name, row in self.rows.items() if row.outcome == outcome]

    def verdict(self, name):
        """The comparison with the baseline in words, e.g. 'ahead by 1.9 +/- 0.3 points (5 seeds)'."""
        r = self[name]
        if r.outcome == "baseline":
            return f"the baseline: {self._num(r.mean, r.std)} {self.unit} mean over {r.n} seeds"
        seeds = f"{r.n} seeds" if r.n == r.n_base else f"{r.n} vs {r.n_base} seeds"
        if r.outcome == "cannot rank":
            return (f"cannot rank from {seeds}: a spread needs at least 2 on each side "
                    f"(difference {self._num(r.diff, signed=True)} {self.unit})")
        size = f"{self._num(abs(r.diff), r.se)} +/- {self._num(r.se, r.se)} {self.unit}"
        holm_note = f"; Holm over {self.m}" if self.m > 1 else ""
        if r.outcome == "cannot tell":
            size = f"{self._num(r.diff, r.se, signed=True)} +/- {self._num(r.se, r.se)} {self.unit}"
            return f"cannot tell apart at this budget: {size} ({seeds}{holm_note})"
        return f"{r.outcome} by {size} ({seeds}{holm_note})"

    def verdicts(self):
        """Each configuration against the baseline in words, a line each within the column."""
        return "\n".join(wrap(f"{name}: {self.verdict(name)}") for name, r in self.rows.items()
                         if r.outcome != "baseline")

    def table(self):
        """The rows as text, about 75 characters wide; differences and means times `scale`."""
        ses = [r.se for r in self.rows.values() if r.se > 0]
        d = _decimals(min(ses) * self.scale) if ses else 2
        lines = [f"against {str(self.baseline)[:20]!r}, in {self.unit}; t-test at alpha {self.alpha:g}"
                 + (f"; Holm over {self.m}" if self.m > 1 else ""),
                 f"{'':20} {'n':>3} {'mean':>7} {'std':>6} {'diff':>7} {'se':>6} {'p Holm':>6}  verdict"]
        for name, r in self.rows.items():
            mark = " " if r.paired or r.outcome == "baseline" else "*"
            numbers = [r.mean, r.std] + ([] if r.outcome == "baseline" else [r.diff, r.se])
            cells = [_cell(v * self.scale, d, w, sign) for v, w, sign in
                     zip(numbers, (7, 6, 7, 6), (False, False, True, False))]
            p = f"{r.p_holm:6.3f}" if not math.isnan(r.p_holm) else ""
            lines.append((f"{str(name)[:20]:<20} {r.n:>3}{mark}" + " ".join(cells).ljust(29)
                          + f" {p:>6}  {r.outcome if r.outcome != 'baseline' else ''}").rstrip())
        if any(not r.paired and r.outcome != "baseline" for r in self.rows.values()):
            lines.append("* unpaired (Welch's test): not the baseline's seeds, or paired=False")
        return "\n".join(lines)

    def frame(self):
        """The rows as a pandas DataFrame, in the scores' own units (not times `scale`)."""
        import pandas as pd
        table = pd.DataFrame([vars(r) for r in self.rows.values()]).set_index("name")
        table["verdict"] = [self.verdict(name) for name in self.rows]
        return table

    def __repr__(self):
        return self.table()

    def _num(self, value, se=None, signed=False):
        d = _decimals(se * self.scale) if se else 2
        return f"{value * self.scale:{'+' if signed else ''}.{d}f}"


def _as_seed_dict(name, values):
    """{seed: score} as floats; a plain list is kept as a list (its seeds are unknown)."""
    items = values.items() if isinstance(values, dict) else enumerate(values)
    out = {}
    for seed, value in items:
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"results[{name!r}] has {value} for seed {seed!r}: a run without a "
                             "finite score (diverged?) cannot be averaged; leave it out and say so")
        out[seed] = value
    if not out:
        raise ValueError(f"results[{name!r}] holds no scores")
    return out if isinstance(values, dict) else list(out.values())


def _summary(name, values):
    x = np.array(list(values.values()) if isinstance(values, dict) else values)
    return Row(name, len(x), x.mean(), x.std(ddof=1) if len(x) > 1 else math.nan, n_base=len(x))


def _difference(values, base, name, paired, alpha):
    """The Row of one configuration: its summary and its t-test against the baseline."""
    row = _summary(name, values)
    same_seeds = isinstance(values, dict) and isinstance(base, dict) and values.keys() == base.keys()
    if paired is not False and same_seeds:
        d = np.array([values[s] - base[s] for s in values])
        diff, df = d.mean(), len(d) - 1
        se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
    else:
        b = np.array(list(base.values()) if isinstance(base, dict) else base)
        diff = row.mean - b.mean()
        se, df = _welch(row.std ** 2, row.n, b.var(ddof=1) if len(b) > 1 else math.nan, len(b))
    row = replace(row, diff=diff, se=se, df=df, paired=paired is not False and same_seeds,
                  n_base=len(base))
    if math.isnan(se):
        return replace(row, outcome="cannot rank")
    t = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    half = stats.t.ppf(1 - alpha / 2, df) * se
    return replace(row, t=t, p=2 * stats.t.sf(abs(t), df), low=diff - half, high=diff + half,
                   outcome="cannot tell")   # until _judge has corrected p for the other comparisons


def _welch(var_x, n_x, var_b, n_b):
    """Welch's standard error and Welch-Satterthwaite degrees of freedom."""
    if math.isnan(var_x) or math.isnan(var_b):
        return math.nan, math.nan
    a, b = var_x / n_x, var_b / n_b
    if a + b == 0:
        return 0.0, n_x + n_b - 2
    return math.sqrt(a + b), (a + b) ** 2 / (a ** 2 / (n_x - 1) + b ** 2 / (n_b - 1))


def _judge(rows, alpha, higher_is_better):
    """Holm-correct the p-values of the comparisons made, then name each one's outcome."""
    tested = [name for name, r in rows.items() if r.outcome != "cannot rank"]
    corrected = dict(zip(tested, holm([rows[name].p for name in tested])))
    judged = dict(rows)
    for name, p in corrected.items():
        better = (rows[name].diff > 0) == higher_is_better
        outcome = "cannot tell" if p >= alpha else "ahead" if better else "behind"
        judged[name] = replace(rows[name], p_holm=p, outcome=outcome)
    return judged


def _decimals(se):
    """Decimals that show two significant digits of a standard error (0.16 -> 2, 3.1 -> 1)."""
    return min(4, max(0, 1 - math.floor(math.log10(se)))) if se > 0 else 2


def _cell(value, decimals, width, signed):
    if math.isnan(value):
        return " " * width
    return f"{value:>{'+' if signed else ''}{width}.{decimals}f}"
