import pytest

from cnnlib import budget, config


def test_full_keeps_the_schedule():
    plan = budget.schedule(epochs=10, batch_size=128, train_size=None, budget="full", width=64)
    assert (plan.epochs, plan.batch_size, plan.train_size, plan.test_size) == (10, 128, None, None)
    assert plan.width == 64


def test_cpu_and_smoke_shrink_it():
    cpu = budget.schedule(epochs=10, budget="cpu")
    smoke = budget.schedule(epochs=10, budget="smoke")
    assert cpu.epochs == 3 and cpu.train_size == 20_000
    assert smoke.epochs == 1 and smoke.train_size == 512 and smoke.test_size == 256


def test_notebook_overrides_win():
    plan = budget.schedule(epochs=10, cpu=dict(epochs=5, train_size=1000), budget="cpu")
    assert plan.epochs == 5 and plan.train_size == 1000
    with pytest.raises(ValueError, match="not in the schedule"):
        budget.schedule(epochs=10, cpu=dict(epoch=5), budget="cpu")


def test_budget_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CNNLIB_BUDGET", "smoke")
    assert budget.schedule(epochs=7).budget == "smoke"
    monkeypatch.setenv("CNNLIB_BUDGET", "cpu")
    assert budget.schedule(epochs=7).epochs == 2
    monkeypatch.setenv("CNNLIB_BUDGET", "huge")
    with pytest.raises(ValueError, match="smoke, cpu, full"):
        budget.schedule(epochs=7)


def test_default_budget_follows_the_hardware(monkeypatch):
    monkeypatch.delenv("CNNLIB_BUDGET", raising=False)
    monkeypatch.setenv("CNNLIB_DEVICE", "cpu")
    assert config.budget_name() == "cpu"
    monkeypatch.setattr(config, "device", lambda: __import__("torch").device("cuda"))
    assert config.budget_name() == "full"
