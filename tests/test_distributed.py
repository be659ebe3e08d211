"""Data-parallel training under torchrun (gloo, 2 CPU processes) equals one process."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_train.py")


def torchrun(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), *map(str, args)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def single(*args):
    done = subprocess.run([sys.executable, str(WORKER), *map(str, args)], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    torchrun(tmp_path / "ddp.pt", 32)
    single(tmp_path / "one.pt", 32)
    ddp, one = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "one.pt")
    for name, w in one["model"].items():
        torch.testing.assert_close(ddp["model"][name], w, rtol=1e-5, atol=1e-6)
    # metrics are reduced over both ranks: the same numbers as one process sees
    for a, b in zip(ddp["history"], one["history"]):
        assert a["val_acc"] == pytest.approx(b["val_acc"]) and a["train_loss"] == pytest.approx(b["train_loss"])


def test_resume_under_torchrun(tmp_path):
    ckpt = tmp_path / "ddp_ckpt.pt"
    torchrun(tmp_path / "part.pt", 32, ckpt, 2)   # stopped after 2 epochs
    torchrun(tmp_path / "rest.pt", 32, ckpt, 3)   # resumed to 3
    single(tmp_path / "one.pt", 32)
    rest, one = torch.load(tmp_path / "rest.pt"), torch.load(tmp_path / "one.pt")
    assert len(rest["history"]) == 3
    for name, w in one["model"].items():
        torch.testing.assert_close(rest["model"][name], w, rtol=1e-5, atol=1e-6)


# The process group follows the training device (torch.cuda patched present: a GPU box).
class FakeGroup:
    def __init__(self, monkeypatch, local_rank="1"):
        import torch.distributed as dist
        self.backend, self.devices = None, []
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_RANK", local_rank)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "set_device", self.devices.append)
        monkeypatch.setattr(dist, "is_initialized", lambda: self.backend is not None)
        monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: setattr(self, "backend", backend))
        monkeypatch.setattr(dist, "get_rank", lambda: int(local_rank))
        monkeypatch.setattr(dist, "get_world_size", lambda: 2)


def test_training_on_the_cpu_uses_gloo_and_no_gpu_on_a_gpu_machine(monkeypatch):
    from cnnlib import distributed
    group = FakeGroup(monkeypatch)
    device, dist = distributed.setup(torch.device("cpu"))
    assert (device, dist, group.backend, group.devices) == (torch.device("cpu"), (1, 2), "gloo", [])


@pytest.mark.parametrize("given,expected", [("cuda", "cuda:1"), ("cuda:0", "cuda:0")])
def test_on_cuda_local_rank_picks_the_gpu_only_when_no_index_is_given(monkeypatch, given, expected):
    from cnnlib import distributed
    group = FakeGroup(monkeypatch, local_rank="1")
    device, _ = distributed.setup(torch.device(given))
    assert device == torch.device(expected) and group.backend == "nccl" and group.devices == [device]


def test_a_train_step_under_torchrun_is_refused(monkeypatch):
    from cnnlib import distributed
    FakeGroup(monkeypatch)
    with pytest.raises(ValueError, match="train_step under torchrun would train each process's own copy"):
        distributed.setup(torch.device("cpu"), train_step=lambda batch: {})
