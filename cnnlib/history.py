"""Per-epoch metrics of a training run: a list of rows that prints and plots itself.

Taught in: chapters/00_introduction/02_lenet_end_to_end.ipynb; every training page prints one."""
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from ._text import COLUMN as WIDTH  # characters: the book's column of code output


class History:
    """One row per epoch: {'epoch': 1, 'train_loss': ..., 'val_acc': ..., 'seconds': ...}.

    h['val_acc'] is the column as a list, h.last the newest row, h.plot() draws the curves.
    """

    def __init__(self, rows=None):
        self.rows = list(rows or [])

    def append(self, **row):
        self.rows.append(row)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key):
        return [row.get(key) for row in self.rows]

    @property
    def last(self):
        return self.rows[-1] if self.rows else {}

    def keys(self):
        seen = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)

    def best(self, key, mode=None):
        """The row where `key` is best: mode "min" or "max" (inferred for losses and accuracies)."""
        mode = direction(key, mode)
        rows = [r for r in self.rows if r.get(key) is not None]
        pick = min if mode == "min" else max
        return pick(rows, key=lambda r: r[key])

    def state_dict(self):
        return {"rows": [dict(r) for r in self.rows]}

    def load_state_dict(self, state):
        self.rows = [dict(r) for r in state["rows"]]

    def __repr__(self):
        """A table within WIDTH characters, the book's column: columns that do not fit go to
        a second block below the first (each block starts with the epoch), as pandas wraps."""
        if not self.rows:
            return "History(empty)"
        keys = self.keys()
        first, rest = (keys[:1], keys[1:]) if keys[0] == "epoch" else ([], keys)
        blocks, block = [], []
        for key in rest:
            if block and _width([*first, *block, key]) > WIDTH:
                blocks.append(block)
                block = []
            block.append(key)
        blocks.append(block)
        return "\n\n".join(self._block([*first, *block]) for block in blocks)

    def _block(self, keys):
        widths = [max(len(k), 10) for k in keys]
        lines = ["  ".join(f"{k:>{w}}" for k, w in zip(keys, widths))]
        for row in self.rows:
            lines.append("  ".join(_fmt(row.get(k), w) for k, w in zip(keys, widths)))
        return "\n".join(lines)

    def metric_groups(self):
        """Metric names grouped by what they measure: {'loss': [train_loss, val_loss], ...}."""
        groups = {}
        for key in self.keys():
            if key in ("epoch", "seconds", "eval_seconds", "examples_per_s", "lr", "skipped_steps"):
                continue
            base = key.split("_", 1)[1] if key.startswith(("train_", "val_")) else key
            groups.setdefault(base, []).append(key)
        return groups

    def plot(self, axes=None, title=None):
        """Loss curves on the left, every other metric on the right; returns the figure."""
        groups = self.metric_groups()
        if axes is None:  # at most 3 panels a row, drawn for the book's ~680 px column
            ncols = 2 if len(groups) == 4 else min(len(groups), 3)
            nrows = -(-len(groups) // ncols)
            fig, axes = plt.subplots(nrows, ncols, figsize=(min(6.8, 3.4 * ncols), 2.6 * nrows),
                                     squeeze=False)
            for ax in axes.flat[len(groups):]:
                ax.set_visible(False)
            axes = list(axes.flat)
        epochs = self["epoch"]
        for ax, (name, keys) in zip(axes, groups.items()):
            ax.clear()
            for key in keys:
                ax.plot(epochs, self[key], marker="o", ms=3, label=key)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 2.5
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.legend()
        if title:
            axes[0].figure.suptitle(title)
        axes[0].figure.tight_layout()
        return axes[0].figure


def direction(key, mode=None, what="History.best"):
    """"min" or "max": which way is better for the metric `key` (fit's early stopping asks too).

    Given a mode, it is checked; else a name with "loss" in it (val_loss, val_loss_g) is better
    low, and a name ending in "acc" (val_acc) is better high.
    """
    if mode is None:
        if "loss" in key:
            return "min"
        if key.endswith("acc"):
            return "max"
        raise ValueError(f"{what} cannot tell whether {key!r} is better lower or higher: pass mode='min' "
                         "or mode='max' (inferred only for names with 'loss' in them or ending in 'acc')")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode


def _width(keys):
    return sum(max(len(k), 10) for k in keys) + 2 * (len(keys) - 1)


def _fmt(v, width=10):
    if v is None:
        return f"{'-':>{width}}"
    if isinstance(v, float):
        return f"{v:>{width}.4g}"
    return f"{v!s:>{width}}"
