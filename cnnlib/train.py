"""The one training loop: fit(), evaluate(), predict().

fit() trains any model on batches from a loader and gives every chapter the same services:
budgets, a checkpoint every epoch and resume, a History with plots, progress, a guard against
non-finite losses, early stopping, and the fast path (mixed precision, channels_last and, on
CUDA, the whole training step replayed as a CUDA graph).

What a step does is the caller's choice, at two depths:
- ``loss_fn(model, batch) -> loss`` or ``(loss, {name: value})``: fit does backward and the
  optimiser step (classification by default; a detector returns its summed loss and parts).
- ``train_step(batch) -> {name: value}``: the caller does everything inside the step
  (a GAN's two optimisers); fit still runs the epochs, checkpoints, history and progress.
"""
import contextlib
import copy
import functools
import numbers
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import checkpoint as ckpt
from . import config
from .history import History
from .progress import Progress


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def seed_everything(seed=0):
    """Seed Python, NumPy and torch, so a CPU run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def classification_loss(model, batch):
    """Cross-entropy and accuracy of a batch (x, y): the default for fit and evaluate."""
    x, y = batch
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    return loss, {"acc": (logits.argmax(dim=1) == y).float().mean()}


def _split(out):
    return out if isinstance(out, tuple) else (out, {})


def _batch_size(batch):
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(first) if torch.is_tensor(first) else len(next(iter(first.values())))


def _to_device(batch, device, channels_last):
    """Move a batch (tensor, tuple/list or dict of them) to `device`, images as channels_last."""
    if torch.is_tensor(batch):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.ndim == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device, channels_last) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device, channels_last) for k, v in batch.items()}
    return batch


def _autocast(device, amp):
    """bf16 autocast on CUDA where supported, else fp16 (with a GradScaler); none on CPU."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _amp_context(device, dtype, cache=True):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)


def _distributed():
    """(rank, world_size) under torchrun, initialising the process group once; else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _all_reduce(tensors):
    import torch.distributed as dist
    for t in tensors:
        dist.all_reduce(t)


def _unwrap(model):
    model = getattr(model, "module", model)       # DistributedDataParallel
    return getattr(model, "_orig_mod", model)     # torch.compile


def _graph_blocker(device, *, train_step, scheduler, scaler, compiled, dist, model):
    """Why the training step cannot be captured as a CUDA graph, or None if it can."""
    if device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if train_step is not None:
        return "a custom train_step may do anything between kernels"
    if scheduler:  # the optimiser's step reads the learning rate as a number baked into the graph
        return "an LR scheduler changes the learning rate, which the captured step would not see"
    if scaler is not None:
        return "fp16 loss scaling skips steps on the host"
    if compiled:
        return "torch.compile manages its own graphs"
    if dist is not None:
        return "DistributedDataParallel synchronises on the host"
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None for m in model.modules()):
        return "cumulative BatchNorm statistics count batches on the host"
    return None


def _capture_cuda_graph(step, batch, model, optimizers):
    """Record one whole training step (forward, backward, optimiser) as a CUDA graph.

    Returns (replay, static_batch): copy a batch into static_batch, call replay(), read the
    metrics it returns. Capture needs a few warm-up steps on a side stream; they are undone
    afterwards (weights, buffers and optimiser state put back, state that the warm-up created
    zeroed, which equals a fresh SGD, momentum SGD or Adam), so the graph path trains on exactly
    the same steps as the eager path. If capture fails, the state is put back all the same.
    """
    saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
    saved_opt = [{id(v): v.detach().clone() for st in opt.state.values() for v in st.values()
                  if torch.is_tensor(v)} for opt in optimizers]
    flags = [[g.get("capturable") for g in opt.param_groups] for opt in optimizers]
    for opt in optimizers:  # Adam and friends must keep their step counts on the GPU
        for g in opt.param_groups:
            if "capturable" in g:
                g["capturable"] = True
    static_batch = _clone(batch)
    rng = _rng_states()  # the warm-up steps' dropout must not shift the random numbers of training
    ok = False
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                step(static_batch)
        torch.cuda.current_stream().wait_stream(side)
        for opt in optimizers:  # grads must be None so the graph allocates them in its own pool
            opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_metrics = step(static_batch, zero_grad=False)
        ok = True
    finally:
        torch.cuda.synchronize()
        _set_rng_states(rng)
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(saved_model[k])
            for opt, saved, groups in zip(optimizers, saved_opt, flags):
                for st in opt.state.values():
                    for v in st.values():
                        if torch.is_tensor(v):
                            v.copy_(saved[id(v)]) if id(v) in saved else v.zero_()
                if not ok:
                    for g, flag in zip(opt.param_groups, groups):
                        if flag is not None:
                            g["capturable"] = flag

    def replay():
        graph.replay()
        return static_metrics

    return replay, static_batch


def _clone(batch):
    if torch.is_tensor(batch):
        return batch.clone()
    if isinstance(batch, (tuple, list)):
        return type(batch)(_clone(b) for b in batch)
    return {k: _clone(v) for k, v in batch.items()}


def _same_shapes(static, batch):
    if torch.is_tensor(static):
        return static.shape == batch.shape
    if isinstance(static, dict):
        return static.keys() == batch.keys() and all(_same_shapes(static[k], batch[k]) for k in static)
    return len(static) == len(batch) and all(_same_shapes(s, b) for s, b in zip(static, batch))


def _copy_into(static, batch):
    if torch.is_tensor(static):
        static.copy_(batch, non_blocking=True)
    elif isinstance(static, dict):
        for k in static:
            _copy_into(static[k], batch[k])
    else:
        for s, b in zip(static, batch):
            _copy_into(s, b)


def fit(model, train_loader, val_loader=None, *, epochs, optimizer=None, scheduler=None,
        loss_fn=classification_loss, train_step=None, eval_fn=None, scheduler_interval="epoch",
        device=None, amp=True, channels_last=None, compile=False, cuda_graph="auto",
        clip_grad_norm=None, checkpoint=None, resume=False, early_stopping=None,
        monitor="val_loss", restore_best=True, progress=None, live_plot=None,
        check_every=50, verbose=True, mode=None, on_epoch_end=None):
    """Train `model` for `epochs` epochs; returns its History (one row per epoch).

    train_loader / val_loader: any iterable of batches (a cnnlib loader, a torch DataLoader, a list).
    optimizer / scheduler: one object or a list (a GAN has two optimisers).
    loss_fn(model, batch): the loss of a batch, optionally with metrics; see the module doc.
        Metrics are numbers or 1-element tensors, one per batch.
    train_step(batch): replaces the whole step (then `optimizer` is only checkpointed).
    eval_fn(model, batch): validation metrics of a batch (default: loss_fn's loss and metrics).
    amp: mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler).
    channels_last: NHWC memory layout (default: on for CUDA and CPU, off for MPS).
    cuda_graph: "auto" captures the step on CUDA when it is safe (see _graph_blocker) and checks
        the first replay against an eager step; True insists (and says why not), False stays eager.
    checkpoint: a file written after every epoch; resume=True continues from it (the checkpoint's
        optimiser state and learning rate win over the given ones; differences are printed).
    early_stopping: stop after this many epochs without improvement in `monitor`; mode "min" or
        "max" says which way is better (inferred for names ending in loss or acc);
        restore_best puts the best epoch's weights back.
    check_every: steps between checks for a non-finite loss (each is one host sync).
    verbose: print one line per epoch (in a notebook the live display shows it instead).
    on_epoch_end(epoch, history): called after each epoch (1, 2, ...) to look at the model:
        samples, plots. Its random draws are undone, so looking never changes the run.

    Under torchrun, fit trains with DistributedDataParallel: each rank takes its share of every
    epoch (give the loaders the per-rank batch size, global batch / world size), metrics are
    reduced over ranks, and only rank 0 writes checkpoints and shows progress.
    """
    optimizers, schedulers = _as_list(optimizer), _as_list(scheduler)
    _check_arguments(epochs=epochs, check_every=check_every, scheduler_interval=scheduler_interval,
                     optimizers=optimizers, train_step=train_step, early_stopping=early_stopping)
    stopper = EarlyStopping(early_stopping, monitor, _direction(monitor, mode), restore_best) \
        if early_stopping is not None else None
    _check_optimizers(model, optimizers, warn=train_step is None)
    device = torch.device(device or config.device())
    dist = _distributed()
    rank = dist[0] if dist else 0
    if dist and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if channels_last is None:  # NHWC convolutions are faster on CUDA and on x86 CPUs (oneDNN)
        channels_last = device.type in ("cuda", "cpu")
    checkpoint = Path(checkpoint).expanduser() if checkpoint else None
    if checkpoint and rank == 0:
        ckpt.check_writable(checkpoint)

    _place(model, device, channels_last)  # before resuming: optimiser state follows its parameters
    amp_dtype = _autocast(device, amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    history = History()
    start_epoch = 0
    if resume and checkpoint and checkpoint.exists():
        start_epoch = _resume(checkpoint, model, optimizers, schedulers, scaler, history, stopper,
                              device=device, say=verbose and rank == 0)
    elif resume and verbose and rank == 0:
        print(f"resume: no checkpoint at {checkpoint} yet; training from the start")
    if start_epoch >= epochs or (stopper and stopper.stopped):
        if rank == 0:
            print(f"resume: {checkpoint} already holds {start_epoch} epochs"
                  f"{' (early stopping had stopped the run)' if stopper and stopper.stopped else ''}; "
                  f"nothing to train for epochs={epochs}: returning its history")
        if stopper:
            stopper.restore(model)
        return history

    if dist:
        model = _data_parallel(model, device, dist, train_loader, val_loader)
    net = torch.compile(model) if compile else model
    steps = _steps_per_epoch(train_loader)
    step = _make_stepper(net, model, optimizers, device=device, cuda_graph=cuda_graph, compile=compile,
                         dist=dist, loss_fn=loss_fn, train_step=train_step, amp_dtype=amp_dtype,
                         scaler=scaler, clip_grad_norm=clip_grad_norm, schedulers=schedulers,
                         scheduler_interval=scheduler_interval)
    bar = Progress(epochs, enabled=progress if rank == 0 else False,
                   live_plot=live_plot if rank == 0 else False, summary=verbose and rank == 0)
    saved_epoch = start_epoch if start_epoch else None  # what the checkpoint file holds
    steps_done = start_epoch * steps if steps is not None else 0
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            lr = optimizers[0].param_groups[0]["lr"] if optimizers else None  # the rate this epoch trains with
            _set_epoch(train_loader, epoch)
            net.train()
            bar.start_epoch(epoch, steps)
            sums, seen, n_steps = _train_epoch(train_loader, step, device=device, channels_last=channels_last,
                                               check_every=check_every, first_step=steps_done, epoch=epoch,
                                               bar=bar)
            if n_steps == 0:
                raise ValueError(f"the training loader gave no batches in epoch {epoch + 1}: nothing was trained")
            steps_done += n_steps
            if scheduler_interval == "epoch":
                for s in schedulers:
                    s.step()
            row, seen = _train_row(epoch, sums, seen, dist, device)
            t_train = time.perf_counter() - t0
            if val_loader is not None:
                val = evaluate(net, val_loader, eval_fn or loss_fn, device=device, amp=amp,
                               channels_last=channels_last, _dist=dist)
                row.update({f"val_{k}": v for k, v in val.items()})
            if lr is not None:
                row["lr"] = lr
            row["seconds"] = time.perf_counter() - t0
            row["eval_seconds"] = row["seconds"] - t_train
            row["examples_per_s"] = seen / t_train
            history.append(**row)
            stop = stopper.update(row, _unwrap(model)) if stopper else False
            if checkpoint and rank == 0:
                with ckpt.hold_interrupts():  # the file and what we report about it change together
                    ckpt.save(checkpoint, epoch=epoch + 1, model=_unwrap(model), optimizers=optimizers,
                              schedulers=schedulers, scaler=scaler, history=history,
                              extra={"early_stopping": stopper.state_dict() if stopper else None})
                    saved_epoch = epoch + 1
            bar.end_epoch(history)
            if on_epoch_end is not None:
                _look(on_epoch_end, epoch + 1, history)
            if stop:
                if verbose and rank == 0:
                    print(f"early stopping: no better {monitor} for {stopper.patience} epochs "
                          f"(best {stopper.best:.4g}); stopped after epoch {epoch + 1}")
                break
    except KeyboardInterrupt:
        if rank == 0:
            print(f"interrupted during epoch {epoch + 1}: {_on_disk(checkpoint, saved_epoch)}")
        raise
    except NonFiniteLossError as err:
        raise NonFiniteLossError(f"{err} The model's weights in memory are probably NaN now (the bad step "
                                 f"updated them): {_on_disk(checkpoint, saved_epoch)}; or re-create the "
                                 "model. A resumed run keeps the checkpoint's learning rate: to try a "
                                 "smaller one, start fresh (resume=False).") from None
    if stopper:
        stopper.restore(_unwrap(model))
    return history


def _place(model, device, channels_last):
    """Move the model to its device and memory layout; on CUDA, the fast kernel settings."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


def _data_parallel(model, device, dist, train_loader, val_loader):
    """Under torchrun: each loader keeps this rank's share, the model is wrapped in DDP."""
    from torch.nn.parallel import DistributedDataParallel
    _shard(train_loader, *dist)
    if val_loader is not None:
        _shard(val_loader, *dist)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _make_stepper(net, model, optimizers, *, device, cuda_graph, compile, dist, loss_fn, train_step,
                  amp_dtype, scaler, clip_grad_norm, schedulers, scheduler_interval):
    """The training step: eager, or a CUDA graph where one is asked for and safe."""
    blocker = _graph_blocker(device, train_step=train_step, scaler=scaler, compiled=compile, dist=dist,
                             scheduler=bool(schedulers), model=model)
    graph_wanted = cuda_graph is True or (cuda_graph == "auto" and blocker is None)
    if graph_wanted and blocker is not None:
        print(f"cuda_graph: staying eager, {blocker}")
        graph_wanted = False
    make_step = functools.partial(_eager_step, loss_fn=loss_fn, train_step=train_step, device=device,
                                  amp_dtype=amp_dtype, scaler=scaler, clip_grad_norm=clip_grad_norm,
                                  schedulers=schedulers if scheduler_interval == "step" else [],
                                  autocast_cache=not graph_wanted)
    return _Stepper(make_step, net, optimizers, graph_wanted)


def _look(callback, epoch, history):
    """Call callback(epoch, history) with every random number generator put back afterwards."""
    state = ckpt.rng_state()
    try:
        callback(epoch, history)
    finally:
        ckpt.set_rng_state(state)


def _eager_step(net, optimizers, *, loss_fn, train_step, device, amp_dtype, scaler, clip_grad_norm,
                schedulers, autocast_cache):
    """The eager training step of `net` with `optimizers` (the CUDA graph's self-check makes a second)."""
    def step(batch, zero_grad=True):
        if train_step is not None:
            return _as_metrics(train_step(batch), device)
        with _amp_context(device, amp_dtype, cache=autocast_cache):
            loss, metrics = _split(loss_fn(net, batch))
        if zero_grad:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).sum().backward()  # sum(): a 1-element loss too
        if clip_grad_norm is not None:
            if scaler:
                for opt in optimizers:
                    scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip_grad_norm)
        for opt in optimizers:
            scaler.step(opt) if scaler else opt.step()
        if scaler:
            scaler.update()
        for s in schedulers:  # only those stepped per step
            s.step()
        return _as_metrics({"loss": loss, **metrics}, device)
    return step


def _on_disk(checkpoint, saved_epoch):
    """What a student can go back to, in words."""
    if not checkpoint:
        return "nothing is saved (checkpoint=None)"
    if saved_epoch is None:
        return f"no checkpoint was written yet ({checkpoint} holds no epoch of this run)"
    return f"{checkpoint} holds epoch {saved_epoch}; resume=True continues from there"


def _resume(path, model, optimizers, schedulers, scaler, history, stopper, *, device, say):
    """Restore a run from its checkpoint, checking first that it fits; returns the epoch it holds."""
    state = ckpt.read(path, map_location=device)
    differences = ckpt.check_compatible(state, _unwrap(model), optimizers)
    if differences and say:
        print(f"resume: {', '.join(differences)}: the checkpoint's values win "
              f"(to use the given ones, start fresh: resume=False or delete {path})")
    ckpt.restore(state, model=_unwrap(model), optimizers=optimizers, schedulers=schedulers, scaler=scaler,
                 history=history)
    saved = state["extra"].get("early_stopping")
    if stopper and saved:
        stopper.load_state_dict(saved)
    if say:
        print(f"resumed from {path} after epoch {state['epoch']}")
    return state["epoch"]


def _train_epoch(loader, step, *, device, channels_last, check_every, first_step, epoch, bar):
    """One pass over the training batches: summed metrics (on the device), examples, steps."""
    sums, seen, pending, i = {}, 0, [], -1
    for i, batch in enumerate(loader):
        batch = _to_device(batch, device, channels_last)
        metrics = step(batch)
        n = _batch_size(batch)
        seen += n
        for k, v in metrics.items():
            if k in sums:
                sums[k].add_(v.float(), alpha=n)
            else:
                sums[k] = v.float() * n
        if "loss" in metrics:  # a copy: a CUDA graph's replay overwrites its output tensors
            pending.append(metrics["loss"].clone())
        if (i + 1) % check_every == 0:
            _check_finite(pending, first_step + i + 1 - len(pending), epoch)
            pending = []
            if bar.enabled:
                bar.step(i + 1, sums["loss"].item() / seen if "loss" in sums else None)
    _check_finite(pending, first_step + i + 1 - len(pending), epoch)
    return sums, seen, i + 1


def _train_row(epoch, sums, seen, dist, device):
    """The epoch's training metrics as numbers (its one host sync), and the examples seen."""
    if dist:
        totals = torch.stack([*sums.values(), torch.tensor(float(seen), device=device)])
        _all_reduce([totals])
        sums = dict(zip(sums, totals[:-1]))
        seen = totals[-1].item()
    return {"epoch": epoch + 1, **{f"train_{k}": (v / seen).item() for k, v in sums.items()}}, seen


class _Stepper:
    """The training step: eager, or on CUDA a captured graph replayed, checked once against eager."""

    def __init__(self, make_step, model, optimizers, graph_wanted):
        self.make_step, self.model, self.optimizers = make_step, model, optimizers
        self.eager = make_step(model, optimizers)
        self.graph_wanted, self.replay, self.static = graph_wanted, None, None

    def __call__(self, batch):
        if self.graph_wanted and self.static is None:
            self.graph_wanted = False  # capture once
            return self._capture_and_check(batch)
        if self.static is not None and _same_shapes(self.static, batch):
            _copy_into(self.static, batch)
            return self.replay()
        return self.eager(batch)  # eager, also for an odd-sized batch after capture

    def _capture_and_check(self, batch):
        try:
            replay, static = _capture_cuda_graph(self.eager, batch, self.model, self.optimizers)
        except Exception as err:  # an op that cannot be captured: say so, train eagerly
            print(f"cuda_graph: capture failed ({type(err).__name__}: {err}); training eagerly")
            return self.eager(batch)
        # The first real step runs twice: replayed on the model, eagerly on a copy; they must agree.
        twin, twin_optimizers = copy.deepcopy((self.model, self.optimizers))
        twin_step, out = self.make_step(twin, twin_optimizers), {}
        _copy_into(static, batch)
        problem = _graph_disagrees(lambda: out.setdefault("graph", replay()),
                                   lambda: out.setdefault("eager", twin_step(batch)), self.model, twin)
        if problem is None:
            self.replay, self.static = replay, static
            return out["graph"]
        print(f"cuda_graph: a replayed step differs from the eager step ({problem}); training eagerly")
        with torch.no_grad():  # keep the eager result
            self.model.load_state_dict(twin.state_dict())
        for opt, twin_opt in zip(self.optimizers, twin_optimizers):
            opt.load_state_dict(twin_opt.state_dict())
        return out["eager"]


def _graph_disagrees(replay, eager, model, twin, rtol=0.05):
    """Why one replayed step (on `model`) differs from one eager step (on `twin`, a copy), or None.

    Both start from the same weights, optimiser state, batch and random numbers (dropout). What
    is compared is each parameter's change, not the parameter (a step that does nothing leaves the
    weights close to right): the changes must agree to rtol of their size, loose enough for bf16
    and for kernels that sum in another order, tight enough to catch a missing or doubled step.
    """
    before = [p.detach().clone() for p in model.parameters()]
    rng = _rng_states()
    graph_metrics = replay()
    _set_rng_states(rng)  # the eager step sees the same dropout masks
    eager_metrics = eager()
    for (name, p), p0, q in zip(model.named_parameters(), before, twin.parameters()):
        graphed, eager_change = (p.detach() - p0).float(), (q.detach() - p0).float()
        error, size = (graphed - eager_change).norm().item(), eager_change.norm().item()
        if not error <= rtol * size + 1e-12:  # also catches NaN
            return f"parameter {name}: change {graphed.norm().item():.3g} vs {size:.3g} eager"
    a, b = graph_metrics.get("loss"), eager_metrics.get("loss")
    if a is not None and b is not None and not abs(a.item() - b.item()) <= rtol * abs(b.item()) + 1e-6:
        return f"loss {a.item():.4g} vs {b.item():.4g} eager"
    return None


def _rng_states():
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def _set_rng_states(states):
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state_all(states[1])


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs without a better `monitor`; remembers the best weights."""
    patience: int
    monitor: str
    mode: str  # "min" or "max"
    keep_best: bool = True
    best: float = None
    bad_epochs: int = 0
    best_state: dict = None

    @property
    def stopped(self):
        return self.bad_epochs >= self.patience

    def update(self, row, model):
        """Take one epoch's row; True when training should stop."""
        if self.monitor not in row:
            raise ValueError(f"early stopping monitors {self.monitor!r}, which is not among {list(row)}")
        value = row[self.monitor]
        if self.best is None or (value < self.best if self.mode == "min" else value > self.best):
            self.best, self.bad_epochs = value, 0
            if self.keep_best:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        return self.stopped

    def restore(self, model):
        if self.keep_best and self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self):
        return {"best": self.best, "bad_epochs": self.bad_epochs, "best_state": self.best_state}

    def load_state_dict(self, state):
        self.best, self.bad_epochs, self.best_state = state["best"], state["bad_epochs"], state["best_state"]


def _direction(monitor, mode):
    if mode is None:
        if monitor.endswith("loss"):
            return "min"
        if monitor.endswith("acc"):
            return "max"
        raise ValueError(f"early stopping cannot tell whether {monitor!r} should go down or up: pass "
                         "mode='min' or mode='max' (inferred only for names ending in loss or acc)")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_arguments(*, epochs, check_every, scheduler_interval, optimizers, train_step, early_stopping):
    _positive_int("epochs", epochs)
    _positive_int("check_every", check_every)
    if early_stopping is not None:
        _positive_int("early_stopping (the patience, in epochs)", early_stopping)
    if train_step is None and not optimizers:
        raise ValueError("fit needs an optimizer (or a train_step that steps its own)")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")


def _check_optimizers(model, optimizers, warn):
    """An optimiser must hold the model's parameters: one built on another model trains nothing."""
    if not optimizers:
        return
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    held = {id(p) for opt in optimizers for g in opt.param_groups for p in g["params"]}
    missing = [n for n, p in trainable if id(p) not in held]
    if trainable and len(missing) == len(trainable):
        raise ValueError("the optimizer holds none of the model's trainable parameters, so training "
                         "would change nothing (was it built for another model, e.g. in an earlier "
                         "cell?): build it from this model's parameters(), after the model")
    if missing and warn:
        warnings.warn(f"{len(missing)} of the model's {len(trainable)} trainable parameter tensors are in "
                      f"no optimizer and will not train: {', '.join(missing[:5])}"
                      f"{', ...' if len(missing) > 5 else ''} (freeze them with requires_grad_(False) "
                      "if that is meant)", stacklevel=3)


def _steps_per_epoch(loader):
    """Batches per epoch (None for an iterable without a length); refuses an epoch of none."""
    try:
        steps = len(loader)
    except TypeError:
        return None
    if steps == 0:
        dataset = getattr(loader, "dataset", None)
        n = len(loader.labels) if hasattr(loader, "labels") else len(dataset) if dataset is not None else None
        size = f"{n} training examples, " if n is not None else ""
        raise ValueError(f"the training loader gives 0 batches per epoch ({size}batch_size "
                         f"{getattr(loader, 'batch_size', '?')}, drop_last={getattr(loader, 'drop_last', '?')}): "
                         "nothing would train. Use a smaller batch_size or more training examples.")
    return steps


def _set_epoch(loader, epoch):
    """Tell the loader (or its sampler) the epoch, where it listens: reshuffles repeat on resume."""
    for obj in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
            return


def _shard(loader, rank, world_size):
    """Under data parallelism each rank must see its own share of every epoch."""
    from torch.utils.data.distributed import DistributedSampler
    if hasattr(loader, "shard"):
        loader.shard(rank, world_size)
    elif not isinstance(getattr(loader, "sampler", None), DistributedSampler):
        raise ValueError(f"under torchrun every process would see all of a {type(loader).__name__}'s batches: "
                         "use a cnnlib loader (data.TensorLoader, data.loaders) or a torch DataLoader "
                         "with a DistributedSampler")


def _as_metrics(metrics, device):
    """A step's {name: value} with every value a 0-dim tensor; numbers and 1-element tensors allowed."""
    return {k: _scalar(k, v, device) for k, v in metrics.items()}


def _scalar(name, value, device):
    if torch.is_tensor(value):
        if value.numel() != 1:
            raise ValueError(f"metric {name!r} has shape {tuple(value.shape)}: a step must return one "
                             "number per metric (a Python number or a 1-element tensor, e.g. its .mean())")
        return value.detach().reshape(())
    if isinstance(value, numbers.Number):
        return torch.tensor(float(value), device=device)
    raise ValueError(f"metric {name!r} is a {type(value).__name__}: return a number or a 1-element tensor")


def _as_list(x):
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _check_finite(losses, first_step, epoch):
    """Raise at the first non-finite loss among these steps (one host sync)."""
    if not losses:
        return
    bad = (~torch.isfinite(torch.stack(losses))).nonzero()
    if len(bad):
        step = first_step + int(bad[0])
        raise NonFiniteLossError(
            f"the loss became NaN or infinite at step {step} (epoch {epoch + 1}); training stopped. "
            "Usual causes: a learning rate that is too high (try 10x smaller), exploding gradients "
            "(try clip_grad_norm=1.0), log or division of zero in a hand-written loss, or "
            "inputs that are not normalised.")


@torch.no_grad()
def evaluate(model, loader, loss_fn=classification_loss, *, device=None, amp=True,
             channels_last=None, _dist=None):
    """Mean of loss_fn's loss and metrics over every batch of `loader` (one host sync)."""
    device = torch.device(device or next(model.parameters()).device)
    if channels_last is None:
        channels_last = device.type in ("cuda", "cpu")
    was_training = model.training
    model.eval()
    sums, seen = {}, 0
    with _amp_context(device, _autocast(device, amp)):
        for batch in loader:
            batch = _to_device(batch, device, channels_last)
            loss, metrics = _split(loss_fn(model, batch))
            n = _batch_size(batch)
            seen += n
            for k, v in _as_metrics({"loss": loss, **metrics}, device).items():
                v = v.float() * n
                sums[k] = sums[k] + v if k in sums else v
    model.train(was_training)
    totals = torch.stack([*sums.values(), torch.tensor(float(seen), device=device)])
    if _dist:
        _all_reduce([totals])
    totals = totals.tolist()
    return {k: v / totals[-1] for k, v in zip(sums, totals[:-1])}


@torch.no_grad()
def predict(model, loader, *, device=None):
    """(predicted class, true label) for every example of `loader`, on the CPU."""
    device = torch.device(device or next(model.parameters()).device)
    was_training = model.training
    model.eval()
    preds, labels = [], []
    for x, y in loader:
        preds.append(model(x.to(device)).argmax(dim=1).cpu())
        labels.append(y.cpu())
    model.train(was_training)
    return torch.cat(preds), torch.cat(labels)
