"""Settings read from the environment, in one place.

| variable          | meaning                                   | default                          |
|-------------------|-------------------------------------------|----------------------------------|
| CNNLIB_DATA       | data root in torchvision's layout         | ~/.cache/cnnlib/data             |
| CNNLIB_BUDGET     | smoke, cpu or full                        | full on CUDA, cpu otherwise      |
| CNNLIB_DOWNLOAD   | 0/false/no/off forbid downloads (CI)      | 1                                |
| CNNLIB_DEVICE     | force a device (cpu, cuda, cuda:N, mps)   | cuda, then mps, then cpu         |
| CNNLIB_MAX_STEPS  | a dry run: every fit at most N steps per  | unset (no cap)                   |
|                   | epoch, evaluation on N batches            |                                  |
| CNNLIB_MAX_EPOCHS | a dry run: every fit at most N epochs     | 2 when CNNLIB_MAX_STEPS is set   |

The two caps run every notebook's schedule (``CNNLIB_BUDGET=full`` on a CPU included) in a few
steps, to catch what only that schedule configures: shapes, batch sizes, data-set sizes.
Taught in: chapters/00_introduction/01_the_course.ipynb (the budget and device line of every page).
"""
import os
from pathlib import Path

import torch

BUDGETS = ("smoke", "cpu", "full")


def data_root() -> Path:
    """Where data sets live: $CNNLIB_DATA, else ~/.cache/cnnlib/data."""
    root = os.environ.get("CNNLIB_DATA") or Path.home() / ".cache" / "cnnlib" / "data"
    return Path(root).expanduser()


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def download_allowed() -> bool:
    """$CNNLIB_DOWNLOAD: 1/0, true/false, yes/no, on/off (any case); unset or empty means yes."""
    value = os.environ.get("CNNLIB_DOWNLOAD", "")
    word = value.strip().lower()
    if word in _TRUE or not word:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"CNNLIB_DOWNLOAD={value!r} is not a yes or a no: use 1/0, true/false, yes/no or on/off")


def device() -> torch.device:
    """The fastest device present: cuda, then mps, then cpu ($CNNLIB_DEVICE overrides)."""
    forced = os.environ.get("CNNLIB_DEVICE", "")
    if forced.strip():
        return _forced_device(forced)
    if torch.cuda.is_available():  # under torchrun each process takes its own GPU
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available():
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def _forced_device(value):
    """$CNNLIB_DEVICE, normalised (case, spaces) and checked against what this machine has."""
    try:
        dev = torch.device(value.strip().lower())
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"CNNLIB_DEVICE={value!r} names no device: use cpu, cuda, cuda:N or mps")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"CNNLIB_DEVICE={value!r} asks for a GPU, but torch sees no CUDA device here "
                         "(on Colab: Runtime > Change runtime type > GPU); unset it or use cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"CNNLIB_DEVICE={value!r}: this machine has {torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"CNNLIB_DEVICE={value!r} asks for Apple's MPS, which torch does not see here; "
                         "unset it or use cpu")
    return dev


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


def max_steps():
    """$CNNLIB_MAX_STEPS: the steps per epoch (and evaluation batches) of a dry run; None when unset."""
    return _positive_setting("CNNLIB_MAX_STEPS")


def max_epochs():
    """$CNNLIB_MAX_EPOCHS: the epochs of a dry run; 2 when only CNNLIB_MAX_STEPS is set, else None."""
    epochs = _positive_setting("CNNLIB_MAX_EPOCHS")
    return 2 if epochs is None and max_steps() is not None else epochs


def _positive_setting(name):
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{name}={value!r} must be a positive whole number (or unset)")
    return int(value)
