"""Save and resume a training run: weights, optimisers, schedulers, scaler, RNG states, history.

A run resumed from the checkpoint of epoch k ends with exactly the weights of a run that was
never interrupted (on the CPU bit for bit; tests/test_train.py checks it).

Safe to load: files are read with ``torch.load(weights_only=True)``, which refuses anything
that would run code, so everything here is stored as tensors, numbers, strings, lists and
dicts (the RNG states included). Safe to write: a unique temporary file in the same folder,
flushed to disk, then renamed over the old one, so a crash or Ctrl-C leaves the previous
checkpoint whole. Honest on resume: the model's class, layers and parameter shapes and the
optimisers' classes are checked before anything is changed; hyperparameters that differ are
reported (the checkpoint's state wins, as in every framework that resumes).
Shown in: chapters/05_modern_cnns/05_dlfs_deep_cnn.ipynb (a run stopped and resumed exactly).
"""
import contextlib
import os
import pickle
import random
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import numpy as np
import torch
from torch.utils import _pytree as pytree

FORMAT, VERSION = "cnnlib-checkpoint", 2
FRESH = "to start fresh instead, pass resume=False or delete the file"
# Optimiser settings that are implementation switches, not hyperparameters of the update rule.
_SWITCHES = {"params", "foreach", "fused", "differentiable", "capturable", "initial_lr"}


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, does not fit the model, or cannot be written."""


def _path(path):
    return Path(path).expanduser()


# RNG states as plain types (weights_only=True loads nothing else).

def rng_state():
    version, ints, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(ints), gauss],
             "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Put back what rng_state() returned, its tensors from any device (torch's setters take CPU ones)."""
    version, ints, gauss = state["python"]
    random.setstate((version, tuple(ints), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():  # a run saved on more GPUs than this machine has
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"][:torch.cuda.device_count()]])


@contextlib.contextmanager
def rng_preserved():
    """Run the block, then put every random number generator back as it was (Python, NumPy, torch, CUDA)."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


# What the run was: checked on resume before anything is restored.

def _class_name(obj):
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def describe(model, optimizers):
    return {
        "model_class": _class_name(model),
        "layers": [[name, type(m).__name__] for name, m in model.named_modules() if name],
        "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
        "optimizer_classes": [_class_name(opt) for opt in optimizers],
        "hyperparameters": [[_hyper(g) for g in opt.param_groups] for opt in optimizers],
        "optimizer_params": [_held_names(model, opt) for opt in optimizers],
    }


def _held_names(model, opt):
    """The names of the model's parameters that `opt` holds, group by group ("?" for a foreign one)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names.get(id(p), "?") for p in g["params"]] for g in opt.param_groups]


def _hyper(group):
    hyper = {k: v for k, v in group.items() if k not in _SWITCHES}
    if "initial_lr" in group:  # a scheduler owns lr: compare the rate its schedule starts from
        hyper["lr"] = group["initial_lr"]
    return hyper


def check_compatible(state, model, optimizers=()):
    """Raise if the checkpoint does not fit model and optimisers; else list differing hyperparameters."""
    saved, mine = state["run"], describe(model, optimizers)
    _check_model(saved, mine)
    _check_optimizer_kinds(saved, mine, optimizers)
    _check_held(saved.get("optimizer_params"), mine["optimizer_params"])
    differences = []
    for opt, groups in zip(optimizers, saved["hyperparameters"]):
        for group, old in zip(opt.param_groups, groups):
            new = _hyper(group)
            for key in sorted(old.keys() | new.keys()):
                if _differ(old.get(key), new.get(key)):
                    differences.append(f"{key} {old.get(key)} (checkpoint) vs {new.get(key)} (given)")
    return differences


def _short(name):
    return name.rsplit(".", 1)[-1]


def _check_model(saved, mine):
    """The same class, layers and shapes, naming the first that differs."""
    if saved["model_class"] != mine["model_class"]:
        raise CheckpointError(f"the checkpoint holds a {_short(saved['model_class'])}, but the model is a "
                              f"{_short(mine['model_class'])}; {FRESH}")
    theirs, ours = dict(saved["layers"]), dict(mine["layers"])
    for name in _union(theirs, ours):
        if theirs.get(name) != ours.get(name):
            raise CheckpointError(f"layer {name} is {theirs.get(name, 'absent')} in the checkpoint but "
                                  f"{ours.get(name, 'absent')} in the model; {FRESH}")
    for name in _union(saved["shapes"], mine["shapes"]):
        a, b = saved["shapes"].get(name), mine["shapes"].get(name)
        if a != b:
            raise CheckpointError(f"{name} has shape {a} in the checkpoint but {b} in the model; {FRESH}")


def _check_optimizer_kinds(saved, mine, optimizers):
    """As many optimisers, of the same classes, with as many parameter groups."""
    if len(saved["optimizer_classes"]) != len(optimizers):
        raise CheckpointError(f"the checkpoint holds {len(saved['optimizer_classes'])} optimiser states, "
                              f"but {len(optimizers)} optimisers were given; {FRESH}")
    for i, (a, b) in enumerate(zip(saved["optimizer_classes"], mine["optimizer_classes"])):
        if a != b:
            raise CheckpointError(f"optimiser {i} is {_short(a)} in the checkpoint but {_short(b)} here; {FRESH}")
    for i, (opt, groups) in enumerate(zip(optimizers, saved["hyperparameters"])):
        if len(groups) != len(opt.param_groups):
            raise CheckpointError(f"optimiser {i} has {len(groups)} parameter groups in the checkpoint but "
                                  f"{len(opt.param_groups)} here; {FRESH}")


def _check_held(saved, mine):
    """Each optimiser must hold the parameters it held when saved: torch checks only the group sizes,
    so optimisers given in another order would load each other's state (or fail deep in their step)."""
    if saved is None:  # written before cnnlib recorded it
        return
    for i, (theirs, ours) in enumerate(zip(saved, mine)):
        if theirs != ours:
            a, b = [next(iter(sum(groups, [])), "nothing") for groups in (theirs, ours)]
            raise CheckpointError(f"optimiser {i} holds {a}, ... in the checkpoint but {b}, ... here (were the "
                                  f"optimisers given in another order, or built over other parameters?); give "
                                  f"them in the order of the saved run, or {FRESH}")


def _union(a, b):
    """Keys of a, then those only in b, in order (so errors name the first layer that differs)."""
    return list(a) + [k for k in b if k not in a]


def _differ(a, b):
    if torch.is_tensor(a) or torch.is_tensor(b):
        return not (torch.is_tensor(a) and torch.is_tensor(b) and torch.equal(a.cpu(), b.cpu()))
    return a != b


# Writing.

_held = None  # the Ctrl-Cs received while hold_interrupts is active


@contextlib.contextmanager
def hold_interrupts():
    """Hold a Ctrl-C until the block is done, then raise it: a save is finished, never torn.

    Nested uses are one: only the outermost raises. Outside the main thread (where signals
    cannot be caught) it does nothing.
    """
    global _held
    if _held is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    _held = []
    previous = signal.signal(signal.SIGINT, lambda *args: _held.append(args))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        received, _held = _held, None
        if received:
            raise KeyboardInterrupt


def check_writable(path):
    """Fail now, not after the first epoch, if the checkpoint cannot be written or would replace a
    file that is not a checkpoint (a student's saved state_dict, notes): that file is never overwritten."""
    path = _path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint={str(path)!r} is a directory; name a file, e.g. {str(path / 'run.pt')!r}")
    if path.is_file() and path.stat().st_size > 0 and not _is_checkpoint(path):
        raise CheckpointError(f"{path} exists and is not a cnnlib checkpoint (a saved state_dict or another "
                              "file?): fit will not overwrite it. Name another file (checkpoint=...) or move "
                              "that one away.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise CheckpointError(f"cannot write the checkpoint {path}: {err.strerror or err}. "
                              "Choose a folder you can write to (checkpoint=...) or checkpoint=None.") from err


def _is_checkpoint(path):
    """Whether the file is a checkpoint cnnlib wrote (any version); read without loading its tensors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - whatever torch cannot read safely is not ours
        return False
    return isinstance(state, dict) and state.get("format") == FORMAT


def first_non_finite(model, optimizers=()):
    """The first model or optimiser state tensor holding NaN or inf, in words, or None (one host sync)."""
    named = [(f"model's {k}", v) for k, v in model.state_dict().items()]
    names = {id(p): n for n, p in model.named_parameters()}
    for i, opt in enumerate(optimizers):
        for p, state in opt.state.items():
            named += [(f"optimiser {i}'s {k} of {names.get(id(p), '?')}", v) for k, v in state.items()]
    named = [(n, v) for n, v in named if torch.is_tensor(v) and (v.is_floating_point() or v.is_complex())]
    if not named:
        return None
    device = named[0][1].device  # Adam keeps its step count on the CPU: gather the flags on one device
    finite = torch.stack([torch.isfinite(v).all().to(device) for _, v in named]).tolist()
    return next((n for (n, _), ok in zip(named, finite) if not ok), None)


def save(path, *, epoch, model, optimizers, schedulers=(), scaler=None, history=None, extra=None):
    """Write atomically: a crash, a full disk or Ctrl-C while saving leaves the previous file whole."""
    path = _path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT, "version": VERSION,
        "epoch": epoch,
        "run": describe(model, optimizers),
        "model": model.state_dict(),
        "optimizers": [opt.state_dict() for opt in optimizers],
        "schedulers": [s.state_dict() for s in schedulers],
        "scaler": (scaler.state_dict() or None) if scaler is not None else None,  # a disabled one: {}
        "history": history.state_dict() if history is not None else None,
        "rng": rng_state(),
        "extra": extra or {},
    }
    tmp = None
    try:
        with hold_interrupts():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
    except (OSError, RuntimeError) as err:  # torch reports a full disk as RuntimeError ("unexpected pos")
        raise CheckpointError(_write_failed(path, state, err)) from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _write_failed(path, state, err):
    need = sum(t.numel() * t.element_size() for t in _tensors(state)) / 2**20
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:,.0f} MB free"
    except OSError:
        free = "free space unknown"
    return (f"could not write the checkpoint {path} ({err}). It needs about {need:,.1f} MB in "
            f"{path.parent} ({free} now). Free some space, choose another folder, or checkpoint=None; "
            "the previous checkpoint there, if any, is unchanged.")


def _tensors(obj):
    return [v for v in pytree.tree_leaves(obj) if torch.is_tensor(v)]


# Reading.

def read(path, map_location="cpu"):
    """The checkpoint's contents, read safely; a clear error for a foreign, old or damaged file.

    Read onto the CPU: restore() puts each tensor where it belongs (load_state_dict copies the
    weights onto the model's device, an optimiser moves its state to its parameters'), and the
    random number generators' states must be CPU tensors.
    """
    path = _path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} cannot be loaded safely: it holds objects that would run code when read, so it was "
            "written by an older cnnlib, by another program, or altered. cnnlib reads checkpoints with "
            f"torch.load(weights_only=True) and will not run it; {FRESH}.") from err
    except (RuntimeError, EOFError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable checkpoint (damaged or not written by torch.save: "
                              f"{err}); {FRESH}.") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cnnlib checkpoint (no format {FORMAT!r} in it); {FRESH}.")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} is a cnnlib checkpoint of format version {state.get('version')}, "
                              f"this cnnlib reads version {VERSION}; {FRESH}.")
    return state


def restore(state, *, model, optimizers=(), schedulers=(), scaler=None, history=None):
    """Put a read checkpoint into the given objects (check_compatible first).

    The optimisers keep their own implementation switches (capturable, fused, foreach): a run
    saved on a GPU, where fit's CUDA graph may have made Adam capturable, resumes on a CPU.
    """
    model.load_state_dict(state["model"])
    for opt, s in zip(optimizers, state["optimizers"]):
        switches = [{k: g[k] for k in _SWITCHES - {"params", "initial_lr"} if k in g} for g in opt.param_groups]
        opt.load_state_dict(s)
        for group, own in zip(opt.param_groups, switches):
            group.update(own)
    for sched, s in zip(schedulers, state["schedulers"]):
        sched.load_state_dict(s)
    if scaler is not None and state["scaler"]:  # a disabled GradScaler saves {}
        scaler.load_state_dict(state["scaler"])
    if history is not None and state["history"] is not None:
        history.load_state_dict(state["history"])
    set_rng_state(state["rng"])
    return state


def load(path, *, model, optimizers=(), schedulers=(), scaler=None, history=None, map_location="cpu", say=True):
    """Read, check, then restore everything `save` wrote; returns the whole state dict.

    fit(resume=True) resumes through here. Hyperparameters that differ from the given
    optimisers' are printed on one line (unless say=False); the checkpoint's values win.
    """
    state = read(path, map_location)
    differences = check_compatible(state, model, optimizers)
    if differences and say:
        print(f"resume: {', '.join(differences)}: the checkpoint's values win "
              f"(to use the given ones, start fresh: resume=False or delete {path})")
    return restore(state, model=model, optimizers=optimizers, schedulers=schedulers, scaler=scaler,
                   history=history)
