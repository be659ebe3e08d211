import pytest

from cnnlib import budget, config


def test_full_keeps_the_schedule():
    plan = budget.schedule(epochs=10, batch_size=128, train_size=None, budget="full", width=64)
    assert (plan.epochs, plan.batch_size, plan.train_size, plan.test_size) == (10, 128, None, None)
    assert plan.width == 64


def test_cpu_is_the_full_schedule_unless_the_notebook_says_otherwise():
    full = budget.schedule(epochs=10, batch_size=100, width=1.0, budget="full")
    cpu = budget.schedule(epochs=10, batch_size=100, width=1.0, budget="cpu")
    assert (cpu.epochs, cpu.batch_size, cpu.train_size, cpu.test_size, cpu.width) == \
        (full.epochs, full.batch_size, full.train_size, full.test_size, full.width) == (10, 100, None, None, 1.0)
    # overrides change only what they name: the rest stays the full schedule
    narrow = budget.schedule(epochs=10, batch_size=100, width=1.0, cpu=dict(width=0.25), budget="cpu")
    assert (narrow.epochs, narrow.train_size, narrow.width) == (10, None, 0.25)


def test_smoke_shrinks_everything_and_keeps_smaller_sizes():
    smoke = budget.schedule(epochs=10, budget="smoke")
    assert smoke.epochs == 1 and smoke.train_size == 512 and smoke.test_size == 256
    small = budget.schedule(epochs=10, train_size=100, test_size=50, budget="smoke")
    assert (small.train_size, small.test_size) == (100, 50)
    # a smoke override wins over the shrink, and cpu overrides do not leak into smoke
    plan = budget.schedule(epochs=10, width=1.0, cpu=dict(width=0.5), smoke=dict(width=0.25, epochs=2),
                           budget="smoke")
    assert (plan.epochs, plan.width) == (2, 0.25)


def test_notebook_overrides_win():
    plan = budget.schedule(epochs=10, cpu=dict(epochs=5, train_size=1000), budget="cpu")
    assert plan.epochs == 5 and plan.train_size == 1000
    with pytest.raises(ValueError, match="not in the schedule"):
        budget.schedule(epochs=10, cpu=dict(epoch=5), budget="cpu")


def test_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CNNLIB_BUDGET", "smoke")
    assert budget.schedule(epochs=7).budget == "smoke"
    monkeypatch.setenv("CNNLIB_BUDGET", "cpu")
    assert budget.schedule(epochs=7).epochs == 7
    assert budget.schedule(epochs=7, cpu=dict(epochs=2)).epochs == 2
    monkeypatch.setenv("CNNLIB_BUDGET", "huge")
    with pytest.raises(ValueError, match="smoke, cpu, full"):
        budget.schedule(epochs=7)


def test_default_budget_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("CNNLIB_BUDGET", raising=False)
    monkeypatch.setenv("CNNLIB_DEVICE", "cpu")
    assert config.budget_name() == "cpu"
    monkeypatch.setattr(config, "device", lambda: __import__("torch").device("cuda"))
    assert config.budget_name() == "full"


def test_overrides_are_checked():
    with pytest.raises(ValueError, match="at least 1"):
        budget.schedule(epochs=10, cpu=dict(epochs=0), budget="cpu")
    with pytest.raises(ValueError, match="not in the schedule"):
        budget.schedule(epochs=10, smoke=dict(widht=0.25), budget="smoke")
    # overrides are read only under their own budget: the full budget ignores the cpu dict
    assert budget.schedule(epochs=10, cpu=dict(epochs=2), budget="full").epochs == 10


def test_the_schedule_prints_what_it_trains():
    plan = budget.schedule(epochs=3, batch_size=128, train_size=None, width=0.25, budget="cpu")
    assert str(plan) == "cpu budget: 3 epochs, batch 128, train all, test all, width=0.25"
    with pytest.raises(AttributeError):
        plan.depth
