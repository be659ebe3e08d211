"""Settings read from the environment, in one place.

| variable          | meaning                                   | default                          |
|-------------------|-------------------------------------------|----------------------------------|
| CNNLIB_DATA       | data root in torchvision's layout         | ~/.cache/cnnlib/data             |
| CNNLIB_BUDGET     | smoke, cpu or full                        | full on CUDA, cpu otherwise      |
| CNNLIB_DOWNLOAD   | 0 forbids downloads (tests, offline CI)   | 1                                |
| CNNLIB_DEVICE     | force a device (cpu, cuda, mps)           | cuda, then mps, then cpu         |
"""
import os
from pathlib import Path

import torch

BUDGETS = ("smoke", "cpu", "full")


def data_root() -> Path:
    """Where data sets live: $CNNLIB_DATA, else ~/.cache/cnnlib/data."""
    root = os.environ.get("CNNLIB_DATA") or Path.home() / ".cache" / "cnnlib" / "data"
    return Path(root).expanduser()


def download_allowed() -> bool:
    return os.environ.get("CNNLIB_DOWNLOAD", "1").strip().lower() not in ("0", "false", "no", "off")


def device() -> torch.device:
    """The fastest device present: cuda, then mps, then cpu ($CNNLIB_DEVICE overrides)."""
    forced = os.environ.get("CNNLIB_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():  # under torchrun each process takes its own GPU
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def budget_name() -> str:
    """smoke, cpu or full: $CNNLIB_BUDGET, else full on CUDA and cpu elsewhere."""
    name = os.environ.get("CNNLIB_BUDGET", "").strip().lower()
    if not name:
        return "full" if device().type == "cuda" else "cpu"
    if name not in BUDGETS:
        raise ValueError(f"CNNLIB_BUDGET={name!r} is not one of {', '.join(BUDGETS)}")
    return name


def describe() -> str:
    """One line for the top of a notebook: which budget, on which device."""
    dev = device()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type
    return f"budget: {budget_name()} | device: {name} | torch {torch.__version__}"
