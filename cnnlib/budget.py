"""Three budgets, one code path.

A notebook states its real (full) schedule once, and may say what the smaller budgets use:

    plan = budget.schedule(epochs=10, batch_size=256, cpu=dict(epochs=2))
    plan.epochs, plan.train_size, plan.test_size, plan.batch_size

- ``full``  (a GPU): the schedule as written.
- ``cpu``   (a laptop): a quarter of the epochs, at most 20,000 training examples, unless the
  notebook says otherwise.
- ``smoke`` (CI): one epoch on 512 training and 256 test examples, so every cell still runs.

The budget comes from ``$CNNLIB_BUDGET`` (see ``cnnlib.config``).
"""
import math
from dataclasses import dataclass, field

from . import config


def _cap(limit):
    return lambda n: limit if n is None else min(n, limit)


# How a budget shrinks a value the notebook did not set for it explicitly.
SHRINK = {
    "full": {},
    "cpu": {"epochs": lambda e: max(1, math.ceil(e / 4)), "train_size": _cap(20_000)},
    "smoke": {"epochs": lambda e: 1, "train_size": _cap(512), "test_size": _cap(256)},
}


@dataclass(frozen=True)
class Schedule:
    budget: str
    epochs: int
    batch_size: int = 256
    train_size: int | None = None  # None: the whole training set
    test_size: int | None = None   # None: the whole test set
    extra: dict = field(default_factory=dict)

    def __getattr__(self, name):  # knobs a notebook adds (image size, widths, ...)
        try:
            return self.__dict__["extra"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __str__(self):
        sizes = f"train {self.train_size or 'all'}, test {self.test_size or 'all'}"
        extra = "".join(f", {k}={v}" for k, v in self.extra.items())
        return f"{self.budget} budget: {self.epochs} epochs, batch {self.batch_size}, {sizes}{extra}"


def schedule(*, epochs, batch_size=256, train_size=None, test_size=None, cpu=None, smoke=None,
             budget=None, **extra) -> Schedule:
    """The full schedule as written, shrunk for the current budget (or ``budget=``)."""
    name = budget or config.budget_name()
    if name not in config.BUDGETS:
        raise ValueError(f"budget {name!r} is not one of {', '.join(config.BUDGETS)}")
    values = dict(epochs=epochs, batch_size=batch_size, train_size=train_size,
                  test_size=test_size, **extra)
    for key, shrink in SHRINK[name].items():
        values[key] = shrink(values[key])
    overrides = {"cpu": cpu, "smoke": smoke}.get(name) or {}
    unknown = set(overrides) - set(values)
    if unknown:
        raise ValueError(f"{name} overrides {sorted(unknown)} are not in the schedule {sorted(values)}")
    values.update(overrides)
    core = {k: values.pop(k) for k in ("epochs", "batch_size", "train_size", "test_size")}
    if core["epochs"] < 1:
        raise ValueError(f"epochs must be at least 1, got {core['epochs']}")
    return Schedule(budget=name, **core, extra=values)
