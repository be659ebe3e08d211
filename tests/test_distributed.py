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
