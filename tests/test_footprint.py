"""A dry run's cost estimate: fit measures its first step's FLOPs and saved activations."""
import csv

import pytest
import torch
import torch.nn as nn

from cnnlib import data, fit, footprint


def _loader(n=64, batch=16):
    g = torch.Generator().manual_seed(0)
    return data.TensorLoader(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g), batch)


def test_fit_logs_the_first_step_flops_saved_bytes_and_the_planned_steps(tmp_path, monkeypatch):
    log = tmp_path / "footprint.csv"
    monkeypatch.setenv("CNNLIB_FOOTPRINT_LOG", str(log))
    monkeypatch.setenv("CNNLIB_MAX_STEPS", "2")           # a dry run: 2 steps an epoch, 5 epochs planned
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10, bias=False), nn.ReLU(), nn.Linear(10, 3, bias=False))
    fit(model, _loader(), epochs=5, optimizer=torch.optim.SGD(model.parameters(), 0.1), quiet=True)
    rows = list(csv.DictReader(log.open()))
    assert len(rows) == 1                                    # the first step only, once per fit
    row = rows[0]
    macs = 16 * (64 * 10 + 10 * 3)                           # forward multiply-adds of one batch
    # forward 2 x MACs; backward: both layers' weight gradients, and the second layer's input gradient
    assert int(row["flops_per_step"]) == 2 * macs + 2 * macs + 2 * 16 * 10 * 3
    assert int(row["planned_steps"]) == 5 * 4                # 64 / 16 = 4 batches a full epoch
    assert int(row["param_bytes"]) == (640 + 30) * 4 and int(row["batch"]) == 16
    saved = int(row["saved_bytes"])                          # the input and the hidden activations at least
    assert saved >= (16 * 64 + 16 * 10) * 4


def test_nothing_is_measured_without_the_log(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLIB_FOOTPRINT_LOG", raising=False)
    calls = []
    step = footprint.measured(lambda b: calls.append(b) or {}, params=[], planned_steps=1, batch_size=1,
                              log=tmp_path / "x.csv")
    step(1), step(2)
    assert calls == [1, 2] and (tmp_path / "x.csv").exists()
    assert footprint.log_path() is None


def test_estimate_adds_compute_and_overhead_and_takes_the_largest_fit_for_memory():
    rows = [dict(flops_per_step=1e12, planned_steps=100, saved_bytes=2e9, param_bytes=1e8),
            dict(flops_per_step=2e11, planned_steps=1000, saved_bytes=1e9, param_bytes=1e9)]
    seconds, peak = footprint.estimate(rows, peak_flops=65e12, utilisation=0.25, step_overhead_s=0.002)
    assert seconds == pytest.approx(100 * (1e12 / 16.25e12 + 0.002) + 1000 * (2e11 / 16.25e12 + 0.002))
    assert peak == pytest.approx(max(0.5 * 2e9 + 4 * 1e8, 0.5 * 1e9 + 4 * 1e9))
