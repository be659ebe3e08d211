"""Three budgets, one code path.

A notebook states its real (full) schedule once, and says what the smaller budgets change:

    plan = budget.schedule(epochs=20, batch_size=128, width=1.0,
                           cpu=dict(epochs=3, width=0.25))      # ~55 s on an idle 2-core CPU
    plan.epochs, plan.train_size, plan.test_size, plan.batch_size, plan.width

- ``full``  (a GPU; Colab's free T4): the schedule as written, each notebook under ~10 minutes.
- ``cpu``   (a laptop, while the reader reads): the same full schedule unless the notebook says
  otherwise. The policy: each notebook at most ~5 minutes of wall time on an idle 2-core machine
  (~15 for a page that trains many models side by side), and within that, train as long as
  helps; where the full schedule fits, ``cpu`` *is* the full schedule. Where it does not, the
  notebook states its ``cpu=dict(...)`` overrides, sized from figures measured on an idle
  machine, and says in a comment how long they take. Nothing is shrunk behind its back: a page
  with no ``cpu=`` runs its full schedule on a CPU.
- ``smoke`` (CI): one epoch on 512 training and 256 test examples, so every cell still runs in
  seconds; ``smoke=dict(...)`` adds what else must shrink (a width, an image size).

The budget comes from ``$CNNLIB_BUDGET`` (see ``cnnlib.config``).
Taught in: chapters/00_introduction/02_lenet_end_to_end.ipynb; every page states its schedule with it.
"""
from dataclasses import dataclass, field

from . import config
from ._text import wrap


def _cap(limit):
    return lambda n: limit if n is None else min(n, limit)


# How a budget shrinks a value the notebook did not set for it explicitly. The cpu budget
# shrinks nothing by itself: a notebook whose full schedule takes too long on a CPU says so.
SHRINK = {
    "full": {},
    "cpu": {},
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
        return wrap(f"{self.budget} budget: {self.epochs} epochs, batch {self.batch_size}, {sizes}{extra}")


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
