"""Save and resume a training run: weights, optimisers, schedulers, scaler, RNG states, history.

A run resumed from the checkpoint of epoch k ends with exactly the weights of a run that was
never interrupted (on the CPU bit for bit; tests/test_train.py checks it).
"""
import os
import random
from pathlib import Path

import numpy as np
import torch


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path, *, epoch, model, optimizers, schedulers=(), scaler=None, history=None, extra=None):
    """Write atomically: a crash while saving leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizers": [opt.state_dict() for opt in optimizers],
        "schedulers": [s.state_dict() for s in schedulers],
        "scaler": scaler.state_dict() if scaler is not None else None,
        "history": history.state_dict() if history is not None else None,
        "rng": rng_state(),
        "extra": extra or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path, *, model, optimizers=(), schedulers=(), scaler=None, history=None, map_location=None):
    """Restore everything `save` wrote into the given objects; returns the whole state dict."""
    state = torch.load(path, map_location=map_location, weights_only=False)
    model.load_state_dict(state["model"])
    if len(optimizers) != len(state["optimizers"]):
        raise ValueError(f"{path} holds {len(state['optimizers'])} optimiser states, "
                         f"but {len(optimizers)} optimisers were given")
    for opt, s in zip(optimizers, state["optimizers"]):
        opt.load_state_dict(s)
    for sched, s in zip(schedulers, state["schedulers"]):
        sched.load_state_dict(s)
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    if history is not None and state["history"] is not None:
        history.load_state_dict(state["history"])
    set_rng_state(state["rng"])
    return state
