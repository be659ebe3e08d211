"""fit's fp16 path (Colab's T4: fp16 autocast and a GradScaler, eager), run on the CPU.

Torch runs both on the CPU (torch.autocast("cpu", dtype=torch.float16), torch.amp.GradScaler("cpu")),
so fit is made to choose fp16 there as it does on a T4: train._autocast answers float16, and
train._precision then builds its GradScaler for the CPU. Tiny models, data in memory: seconds each.
"""
import math

import pytest
import torch
from torch import nn

from cnnlib import train


def fp16_on_the_cpu(monkeypatch, **scaler_options):
    """Make fit train in fp16 with a GradScaler on the CPU; returns the scalers fit makes, in order."""
    made, real = [], train._CountingScaler

    def scaler(device_type, enabled):
        made.append(real(device_type, enabled=enabled, **scaler_options))
        return made[-1]
    monkeypatch.setattr(train, "_autocast", lambda device, amp: torch.float16 if amp else None)
    monkeypatch.setattr(train, "_CountingScaler", scaler)
    return made


@pytest.fixture(autouse=True)
def no_dry_run(monkeypatch):
    for name in ("CNNLIB_MAX_STEPS", "CNNLIB_MAX_EPOCHS", "CNNLIB_DEVICE"):
        monkeypatch.delenv(name, raising=False)


def batches(n_batches=12, batch_size=16, features=20, classes=3, seed=0):
    """A learnable problem in memory: labels from a fixed random linear rule, as a list of batches."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_batches * batch_size, features, generator=g)
    y = (x @ torch.randn(features, classes, generator=g)).argmax(dim=1)
    return list(zip(x.split(batch_size), y.split(batch_size)))


def mlp(seed=0, features=20, classes=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, classes))


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def fit(model, data, **kwargs):
    kwargs.setdefault("optimizer", torch.optim.SGD(model.parameters(), lr=0.1))
    return train.fit(model, data, device="cpu", quiet=True, **kwargs)


def test_a_step_whose_gradients_overflow_is_skipped_and_counted(monkeypatch):
    """Every step that overflows leaves the weights as they were, halves the scale, and is counted
    in its epoch's skipped_steps; the steps after it train."""
    scalers = fp16_on_the_cpu(monkeypatch, init_scale=2.0 ** 40, growth_interval=10 ** 6)  # no growth
    model, seen = mlp(), []

    def loss_fn(net, batch):  # the weights as each step starts: step i changed seen[i] into seen[i + 1]
        seen.append(weights(net))
        return train.classification_loss(net, batch)
    history = fit(model, batches(n_batches=20), epochs=2, loss_fn=loss_fn)
    seen.append(weights(model))
    unchanged = sum(all(torch.equal(a, b) for a, b in zip(before, after)) for before, after in zip(seen, seen[1:]))
    halvings = math.log2(2.0 ** 40 / scalers[0].get_scale())
    assert 0 < unchanged < 40, f"{unchanged} of 40 steps left the weights unchanged: the test needs both kinds"
    assert halvings == unchanged, f"the scale was halved {halvings} times for {unchanged} skipped steps"
    assert sum(history["skipped_steps"]) == unchanged, history["skipped_steps"]
    assert history["skipped_steps"][0] > 0  # the first steps overflow at 2**40


def test_a_float32_run_has_no_skipped_steps_column():
    history = fit(mlp(), batches(n_batches=2), epochs=1)
    assert "skipped_steps" not in history.keys(), history.keys()


def test_gradients_are_unscaled_before_they_are_clipped(monkeypatch):
    """clip_grad_norm clips the true gradients: the norm fit clips, and the step it takes, are a
    float32 twin's, not those of the gradients times the scale (2**16)."""
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(parameters, max_norm, *args, **kwargs):
        norms.append(float(clip(parameters, max_norm, *args, **kwargs)))  # the norm before clipping
        return norms[-1]
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    data, max_norm, moved = batches(n_batches=1), 0.05, {}
    for name in ("float32", "fp16"):
        if name == "fp16":
            fp16_on_the_cpu(monkeypatch)  # GradScaler's default scale, 2**16
        model = mlp()
        before = weights(model)
        history = fit(model, data, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
                      clip_grad_norm=max_norm)
        moved[name] = torch.cat([(b - a).flatten() for a, b in zip(before, weights(model))])
    assert history["skipped_steps"] == [0]
    float32_norm, fp16_norm = norms
    assert float32_norm > 2 * max_norm, f"the gradient's norm {float32_norm} is not clipped: the test needs it"
    assert fp16_norm == pytest.approx(float32_norm, rel=1e-2), f"fp16 clipped a norm of {fp16_norm}"
    assert float(moved["fp16"].norm()) == pytest.approx(max_norm, rel=1e-3)  # lr 1: the step is the clipped gradient
    assert torch.allclose(moved["fp16"], moved["float32"], atol=1e-2 * max_norm), \
        (moved["fp16"] - moved["float32"]).abs().max()


def test_the_scalers_state_is_checkpointed_and_an_interrupted_run_resumes_exactly(monkeypatch, tmp_path):
    """One run of 2 epochs, and one stopped after epoch 1 and resumed by a new fit (a new scaler):
    the same weights, the same scale and growth tracker, the same skipped steps."""
    scalers = fp16_on_the_cpu(monkeypatch, init_scale=2.0 ** 30, growth_interval=3)  # skips and growth
    data = batches(n_batches=15)

    def run(epochs, path, resume=False):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        history = fit(model, data, epochs=epochs, optimizer=opt, checkpoint=path, resume=resume)
        return model, history, scalers[-1]
    whole, whole_history, whole_scaler = run(2, tmp_path / "whole.pt")
    run(1, tmp_path / "parts.pt")
    resumed, resumed_history, resumed_scaler = run(2, tmp_path / "parts.pt", resume=True)
    assert whole_scaler.get_scale() < 2.0 ** 30 and whole_history["skipped_steps"][0] > 0  # it did back off
    assert resumed_scaler.state_dict() == whole_scaler.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(whole.parameters(), resumed.parameters()))
    assert resumed_history["skipped_steps"] == whole_history["skipped_steps"]


def test_fp16_trains_and_its_loss_stays_close_to_float32s(monkeypatch):
    """The loss falls, the model runs in fp16 under autocast, and each epoch's loss is within 1%
    of a float32 run's from the same weights."""
    data, losses, dtypes = batches(), {}, set()

    def loss_fn(net, batch):
        logits = net(batch[0])
        dtypes.add(logits.dtype)
        return nn.functional.cross_entropy(logits, batch[1])
    for name in ("float32", "fp16"):
        if name == "fp16":
            fp16_on_the_cpu(monkeypatch)
        dtypes.clear()
        losses[name] = fit(mlp(), data, epochs=5, loss_fn=loss_fn)["train_loss"]
        assert dtypes == {torch.float32 if name == "float32" else torch.float16}, (name, dtypes)
    assert losses["fp16"][-1] < 0.7 * losses["fp16"][0], losses["fp16"]
    assert losses["fp16"] == pytest.approx(losses["float32"], rel=1e-2), losses
    assert losses["fp16"] != losses["float32"]  # it really ran in half precision
