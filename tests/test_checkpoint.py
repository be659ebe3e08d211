"""cnnlib.checkpoint: safe to load, atomic to write, and it says what it restores."""
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from cnnlib import checkpoint as ckpt
from cnnlib.history import History


class Payload:
    """What a hostile file would hold: unpickling it runs code (here: writes a file)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "pwned"))


def net():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_a_pickle_with_a_payload_is_refused_and_runs_nothing(tmp_path, writer):
    marker, path = tmp_path / "ran.txt", tmp_path / "evil.pt"
    state = {"format": "cnnlib-checkpoint", "version": 2, "model": Payload(marker)}
    if writer == "torch":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    with pytest.raises(ckpt.CheckpointError, match="cannot be loaded safely"):
        ckpt.load(path, model=net())
    assert not marker.exists()


def test_rng_states_round_trip_through_a_safe_load(tmp_path):
    model = net()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt.save(tmp_path / "a.pt", epoch=1, model=model, optimizers=[])
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.load(tmp_path / "a.pt", model=model)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    torch.load(tmp_path / "a.pt", weights_only=True)  # nothing in it needs a pickle


def test_an_old_or_foreign_file_says_so(tmp_path):
    old = {"epoch": 1, "model": net().state_dict(), "rng": {"numpy": np.random.get_state()}}
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(ckpt.CheckpointError, match="older cnnlib.*resume=False"):
        ckpt.load(tmp_path / "old.pt", model=net())
    torch.save({"state_dict": net().state_dict()}, tmp_path / "foreign.pt")
    with pytest.raises(ckpt.CheckpointError, match="not a cnnlib checkpoint.*resume=False"):
        ckpt.load(tmp_path / "foreign.pt", model=net())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ckpt.CheckpointError, match="junk.pt"):
        ckpt.load(tmp_path / "junk.pt", model=net())


def test_a_different_model_class_or_layers_is_refused_before_anything_changes(tmp_path):
    model = net()
    ckpt.save(tmp_path / "a.pt", epoch=1, model=model, optimizers=[])
    other = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    before = [p.clone() for p in other.parameters()]
    with pytest.raises(ckpt.CheckpointError, match=r"layer 1 is ReLU in the checkpoint but Tanh"):
        ckpt.load(tmp_path / "a.pt", model=other)
    assert all(torch.equal(a, b) for a, b in zip(before, other.parameters()))
    with pytest.raises(ckpt.CheckpointError, match="holds a Sequential, but the model is a Linear"):
        ckpt.load(tmp_path / "a.pt", model=nn.Linear(4, 2))
    wider = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(ckpt.CheckpointError, match=r"0.weight.*\[3, 4\].*\[5, 4\]"):
        ckpt.load(tmp_path / "a.pt", model=wider)


def test_a_different_optimiser_class_is_refused_before_the_weights_change(tmp_path):
    model = net()
    ckpt.save(tmp_path / "a.pt", epoch=1, model=model, optimizers=[torch.optim.Adam(model.parameters())])
    fresh = net()
    before = [p.clone() for p in fresh.parameters()]
    with pytest.raises(ckpt.CheckpointError, match="Adam in the checkpoint but SGD"):
        ckpt.load(tmp_path / "a.pt", model=fresh, optimizers=[torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)])
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))
    groups = [{"params": fresh[0].parameters()}, {"params": fresh[2].parameters(), "lr": 1e-4}]
    with pytest.raises(ckpt.CheckpointError, match="1 parameter groups in the checkpoint but 2 here"):
        ckpt.load(tmp_path / "a.pt", model=fresh, optimizers=[torch.optim.Adam(groups)])
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))


def test_different_hyperparameters_are_named_and_the_checkpoint_wins(tmp_path):
    model = net()
    ckpt.save(tmp_path / "a.pt", epoch=1, model=model, optimizers=[torch.optim.SGD(model.parameters(), lr=0.1)])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    state = ckpt.read(tmp_path / "a.pt")
    differences = ckpt.check_compatible(state, model, [opt])
    assert differences == ["lr 0.1 (checkpoint) vs 0.01 (given)"]
    ckpt.restore(state, model=model, optimizers=[opt])
    assert opt.param_groups[0]["lr"] == 0.1


def test_a_scheduler_changing_lr_is_not_a_difference(tmp_path):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    opt.step(), sched.step()
    ckpt.save(tmp_path / "a.pt", epoch=1, model=model, optimizers=[opt], schedulers=[sched])
    fresh = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.optim.lr_scheduler.StepLR(fresh, 1, gamma=0.5)
    assert ckpt.check_compatible(ckpt.read(tmp_path / "a.pt"), model, [fresh]) == []


def test_save_leaves_no_temporary_file_and_removes_it_on_failure(tmp_path, monkeypatch):
    model = net()
    ckpt.save(tmp_path / "a.pt", epoch=1, model=model, optimizers=[])
    assert os.listdir(tmp_path) == ["a.pt"]

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(ckpt.CheckpointError, match=r"a\.pt.*MB free"):
        ckpt.save(tmp_path / "a.pt", epoch=2, model=model, optimizers=[])
    assert os.listdir(tmp_path) == ["a.pt"]
    monkeypatch.undo()
    assert ckpt.read(tmp_path / "a.pt")["epoch"] == 1  # the previous checkpoint is intact


def test_an_interrupt_during_save_is_finished_or_rolled_back(tmp_path, monkeypatch):
    model = net()
    ckpt.save(tmp_path / "a.pt", epoch=1, model=model, optimizers=[])
    real_save = torch.save

    def interrupted(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(tmp_path / "a.pt", epoch=2, model=model, optimizers=[])
    assert os.listdir(tmp_path) == ["a.pt"]
    monkeypatch.undo()
    assert ckpt.read(tmp_path / "a.pt")["epoch"] == 1


def test_paths_expand_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    ckpt.save("~/runs/a.pt", epoch=1, model=net(), optimizers=[])
    assert (tmp_path / "runs" / "a.pt").exists()
    assert ckpt.read("~/runs/a.pt")["epoch"] == 1


def test_an_unwritable_folder_is_reported_before_training(tmp_path, monkeypatch):
    def refused(*args, **kwargs):  # as chmod would, also when the tests run as root
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", refused)
    with pytest.raises(ckpt.CheckpointError, match=r"cannot write the checkpoint .*ro/a\.pt: Permission denied"):
        ckpt.check_writable(tmp_path / "ro" / "a.pt")


def test_history_and_extra_round_trip(tmp_path):
    h = History()
    h.append(epoch=1, train_loss=0.5, lr=0.1)
    model = net()
    ckpt.save(tmp_path / "a.pt", epoch=1, model=model, optimizers=[], history=h,
              extra={"early_stopping": {"best": 0.5, "bad_epochs": 0, "best_state": model.state_dict()}})
    h2 = History()
    state = ckpt.load(tmp_path / "a.pt", model=model, history=h2)
    assert h2.rows == h.rows and state["extra"]["early_stopping"]["best"] == 0.5


def test_a_ctrl_c_during_save_waits_for_the_file_then_is_raised(tmp_path, monkeypatch):
    import signal
    model = net()
    ckpt.save(tmp_path / "a.pt", epoch=1, model=model, optimizers=[])
    real_save = torch.save

    def save_while_interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C lands in the middle of the write
        real_save(*args, **kwargs)

    monkeypatch.setattr(torch, "save", save_while_interrupted)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(tmp_path / "a.pt", epoch=2, model=model, optimizers=[])
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["a.pt"] and ckpt.read(tmp_path / "a.pt")["epoch"] == 2


def test_two_saves_to_one_path_use_their_own_temporary_files(tmp_path, monkeypatch):
    renamed, real_replace = [], os.replace

    def replace(src, dst):
        renamed.append(Path(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    for epoch in (1, 2):
        ckpt.save(tmp_path / "a.pt", epoch=epoch, model=net(), optimizers=[])
    assert len(set(renamed)) == 2 and all(p.parent == tmp_path for p in renamed)


def test_rng_preserved_puts_every_generator_back():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    with ckpt.rng_preserved():
        random.random(), np.random.rand(3), torch.rand(5)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_load_names_the_differences_and_the_file_unless_told_to_be_silent(tmp_path, capsys):
    model = net()
    ckpt.save(tmp_path / "a.pt", epoch=1, model=model, optimizers=[torch.optim.SGD(model.parameters(), lr=0.1)])
    ckpt.load(tmp_path / "a.pt", model=model, optimizers=[torch.optim.SGD(model.parameters(), lr=0.01)])
    out = capsys.readouterr().out
    assert "lr 0.1 (checkpoint) vs 0.01 (given)" in out and f"delete {tmp_path / 'a.pt'}" in out
    ckpt.load(tmp_path / "a.pt", model=model, optimizers=[torch.optim.SGD(model.parameters(), lr=0.01)], say=False)
    assert capsys.readouterr().out == ""


# Resuming where the checkpoint was not written: a GPU's tensors, another number of GPUs.
class OnAGpu:
    """A tensor as a CUDA one behaves for the RNG setters: .numpy() and torch's setters refuse it."""

    def __init__(self, tensor):
        self.tensor = tensor

    def cpu(self):
        return self.tensor

    def numpy(self):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")


def test_rng_states_on_a_gpu_are_put_back(monkeypatch):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = ckpt.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    state["numpy"]["keys"], state["torch"] = OnAGpu(state["numpy"]["keys"]), OnAGpu(state["torch"])
    real_setter = torch.set_rng_state

    def cpu_only(new_state):  # torch: "RNG state must be a torch.ByteTensor"
        if not torch.is_tensor(new_state):
            raise TypeError("RNG state must be a torch.ByteTensor")
        real_setter(new_state)

    monkeypatch.setattr(torch, "set_rng_state", cpu_only)
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_cuda_rng_states_of_more_gpus_than_this_machine_has(monkeypatch):
    given = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", given.extend)
    state = {**ckpt.rng_state(), "cuda": [OnAGpu(torch.full((16,), i, dtype=torch.uint8)) for i in (1, 2)]}
    ckpt.set_rng_state(state)  # written on 2 GPUs, resumed on Colab's one
    assert len(given) == 1 and torch.is_tensor(given[0]) and given[0][0] == 1


def on_the_gpu_unless_read_onto_the_cpu(monkeypatch):
    """torch.load with the `meta` device standing in for a GPU: a file written on a GPU lands there
    unless map_location is the CPU (the RNG states included, which torch's setters then refuse)."""
    real_load = torch.load

    def load(f, map_location=None, **kwargs):
        return real_load(f, map_location="cpu" if str(map_location) == "cpu" else "meta", **kwargs)

    monkeypatch.setattr(torch, "load", load)


def test_a_checkpoint_is_read_onto_the_cpu_whatever_the_device(tmp_path, monkeypatch):
    model = net()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt.save(tmp_path / "a.pt", epoch=1, model=model, optimizers=[])
    expected = (random.random(), np.random.rand(), torch.rand(1))
    on_the_gpu_unless_read_onto_the_cpu(monkeypatch)
    state = ckpt.read(tmp_path / "a.pt")
    assert all(t.device.type == "cpu" for t in ckpt._tensors(state))
    ckpt.load(tmp_path / "a.pt", model=net())
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_fit_resumes_through_a_cpu_read(tmp_path, monkeypatch):
    from test_train import run
    straight, _ = run(3)
    run(2, checkpoint=tmp_path / "run.pt")
    on_the_gpu_unless_read_onto_the_cpu(monkeypatch)
    resumed, hist = run(3, checkpoint=tmp_path / "run.pt", resume=True, seed=5)
    assert len(hist) == 3
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_a_gpu_adam_checkpoint_resumes_on_a_cpu(tmp_path):
    """fit's CUDA graph makes Adam capturable; the saved groups then say so. The optimiser given on
    resume keeps its own implementation switches (a capturable Adam cannot step on a CPU)."""
    model = net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    for group in opt.param_groups:
        group["capturable"] = True  # as the graph left it on the GPU
    ckpt.save(tmp_path / "gpu.pt", epoch=1, model=model, optimizers=[opt])
    fresh = net()
    laptop = torch.optim.Adam(fresh.parameters(), lr=1e-3)
    ckpt.load(tmp_path / "gpu.pt", model=fresh, optimizers=[laptop])
    assert laptop.param_groups[0]["capturable"] is False
    fresh(torch.randn(5, 4)).sum().backward()
    laptop.step()  # raised "If capturable=True, params and state_steps must be on supported devices"
    assert laptop.state[next(iter(fresh.parameters()))]["step"] == 2


def test_optimisers_swapped_on_load_are_refused_before_anything_changes(tmp_path):
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)  # equal shapes: torch would load the swapped states silently
    model = nn.ModuleDict({"a": a, "b": b})
    opts = [torch.optim.Adam(a.parameters()), torch.optim.Adam(b.parameters())]
    ckpt.save(tmp_path / "two.pt", epoch=1, model=model, optimizers=opts)
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ckpt.CheckpointError, match=r"optimiser 0 holds a\.weight, \.\.\. in the checkpoint but "
                                                   r"b\.weight, \.\.\. here.*another order"):
        ckpt.load(tmp_path / "two.pt", model=model, optimizers=opts[::-1])
    assert all(torch.equal(x, y) for x, y in zip(before, model.parameters()))
    ckpt.load(tmp_path / "two.pt", model=model, optimizers=opts)  # the saved order loads


def test_check_writable_refuses_a_directory_and_a_foreign_file_but_not_a_checkpoint(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="is a directory; name a file"):
        ckpt.check_writable(tmp_path)
    torch.save(net().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ckpt.CheckpointError, match=r"weights\.pt exists and is not a cnnlib checkpoint"):
        ckpt.check_writable(tmp_path / "weights.pt")
    ckpt.save(tmp_path / "run.pt", epoch=1, model=net(), optimizers=[])
    ckpt.check_writable(tmp_path / "run.pt")
    (tmp_path / "empty.pt").touch()  # nothing in it to lose
    ckpt.check_writable(tmp_path / "empty.pt")
