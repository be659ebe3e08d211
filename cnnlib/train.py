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
import os
import random
import time
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
        check_every=50, verbose=True):
    """Train `model` for `epochs` epochs; returns its History (one row per epoch).

    optimizer / scheduler: one object or a list (a GAN has two optimisers).
    loss_fn(model, batch): the loss of a batch, optionally with metrics; see the module doc.
    train_step(batch): replaces the whole step (then `optimizer` is only checkpointed).
    eval_fn(model, batch): validation metrics of a batch (default: loss_fn's loss and metrics).
    amp: mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler).
    channels_last: NHWC memory layout (default: on for CUDA and CPU, off for MPS).
    cuda_graph: "auto" captures the step on CUDA when it is safe (see _graph_blocker);
        True insists (and says why not), False stays eager.
    checkpoint: a file written after every epoch; resume=True continues from it.
    early_stopping: stop after this many epochs without improvement in `monitor`;
        restore_best puts the best epoch's weights back.
    check_every: steps between checks for a non-finite loss (each is one host sync).
    verbose: print one line per epoch (in a notebook the live display shows it instead).

    Under torchrun, fit trains with DistributedDataParallel: each rank takes its share of every
    epoch (give the loaders the per-rank batch size, global batch / world size), metrics are
    reduced over ranks, and only rank 0 writes checkpoints and shows progress.
    """
    device = torch.device(device or config.device())
    dist = _distributed()
    rank = dist[0] if dist else 0
    if dist and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    optimizers = _as_list(optimizer)
    schedulers = _as_list(scheduler)
    if train_step is None and not optimizers:
        raise ValueError("fit needs an optimizer (or a train_step that steps its own)")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    if channels_last is None:  # NHWC convolutions are faster on CUDA and on x86 CPUs (oneDNN)
        channels_last = device.type in ("cuda", "cpu")

    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    if dist:
        from torch.nn.parallel import DistributedDataParallel
        train_loader.shard(*dist)
        if val_loader is not None:
            val_loader.shard(*dist)
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    net = torch.compile(model) if compile else model

    amp_dtype = _autocast(device, amp)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    history = History()
    start_epoch, best, bad_epochs, best_state = 0, None, 0, None
    if resume and checkpoint and Path(checkpoint).exists():
        state = ckpt.load(checkpoint, model=_unwrap(model), optimizers=optimizers, schedulers=schedulers,
                          scaler=scaler, history=history, map_location=device)
        start_epoch = state["epoch"]
        best, bad_epochs = state["extra"].get("best"), state["extra"].get("bad_epochs", 0)
        if verbose and rank == 0:
            print(f"resumed from {checkpoint} after epoch {start_epoch}")
    elif resume and verbose and rank == 0:
        print(f"resume: no checkpoint at {checkpoint} yet; training from the start")

    def eager_step(batch, zero_grad=True):
        if train_step is not None:
            return train_step(batch)
        with _amp_context(device, amp_dtype, cache=not graph_wanted):
            loss, metrics = _split(loss_fn(net, batch))
        if zero_grad:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler else loss).backward()
        if clip_grad_norm is not None:
            for opt in optimizers:
                if scaler:
                    scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip_grad_norm)
        for opt in optimizers:
            if scaler:
                scaler.step(opt)
            else:
                opt.step()
        if scaler:
            scaler.update()
        if scheduler_interval == "step":
            for s in schedulers:
                s.step()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in metrics.items()}}

    blocker = _graph_blocker(device, train_step=train_step, scaler=scaler, compiled=compile, dist=dist,
                             scheduler=bool(schedulers),
                             model=model)
    graph_wanted = cuda_graph is True or (cuda_graph == "auto" and blocker is None)
    if graph_wanted and blocker is not None:
        print(f"cuda_graph: staying eager, {blocker}")
        graph_wanted = False
    step, static_batch = eager_step, None

    bar = Progress(epochs, enabled=progress if rank == 0 else False,
                   live_plot=live_plot if rank == 0 else False, summary=verbose and rank == 0)
    global_step = start_epoch * len(train_loader)
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            train_loader.set_epoch(epoch)
            net.train()
            sums, seen, checked = {}, 0, 0
            losses = None  # every step's loss, kept on the device and checked every check_every steps
            steps = len(train_loader)
            bar.start_epoch(epoch, steps)
            for i, batch in enumerate(train_loader):
                batch = _to_device(batch, device, channels_last)
                if graph_wanted and static_batch is None:
                    try:
                        step, static_batch = _capture_cuda_graph(eager_step, batch, net, optimizers)
                    except Exception as err:  # an op that cannot be captured: say so, train eagerly
                        print(f"cuda_graph: capture failed ({type(err).__name__}: {err}); training eagerly")
                        graph_wanted, step = False, eager_step
                if static_batch is not None and _same_shapes(static_batch, batch):
                    _copy_into(static_batch, batch)
                    metrics = step()
                else:  # eager, also for an odd-sized batch after capture (the graph keeps its own grads)
                    metrics = eager_step(batch)
                n = _batch_size(batch)
                seen += n
                for k, v in metrics.items():
                    if k in sums:
                        sums[k].add_(v.detach().float(), alpha=n)
                    else:
                        sums[k] = v.detach().float() * n
                if "loss" in metrics:
                    if losses is None:
                        losses = torch.zeros(steps, device=metrics["loss"].device)
                    losses[i].copy_(metrics["loss"].detach())
                if (i + 1) % check_every == 0 or i + 1 == steps:
                    if losses is not None:
                        _check_finite(losses[checked:i + 1], global_step + checked, epoch)
                        checked = i + 1
                    if bar.enabled:
                        bar.step(i + 1, sums["loss"].item() / seen if "loss" in sums else None)
            global_step += steps
            if scheduler_interval == "epoch":
                for s in schedulers:
                    s.step()
            if dist:
                totals = torch.stack([*sums.values(), torch.tensor(float(seen), device=device)])
                _all_reduce([totals])
                sums = dict(zip(sums, totals[:-1]))
                seen = totals[-1].item()
            row = {"epoch": epoch + 1}
            row.update({f"train_{k}": (v / seen).item() for k, v in sums.items()})  # the epoch's one sync
            t_train = time.perf_counter() - t0
            if val_loader is not None:
                val = evaluate(net, val_loader, eval_fn or loss_fn, device=device, amp=amp,
                               channels_last=channels_last, _dist=dist)
                row.update({f"val_{k}": v for k, v in val.items()})
            if optimizers:
                row["lr"] = optimizers[0].param_groups[0]["lr"]
            row["seconds"] = time.perf_counter() - t0
            row["eval_seconds"] = row["seconds"] - t_train
            row["examples_per_s"] = seen / t_train
            history.append(**row)

            stop = False
            if early_stopping is not None:
                if monitor not in row:
                    raise ValueError(f"early stopping monitors {monitor!r}, which is not among {list(row)}")
                value = row[monitor]
                better = "loss" in monitor
                if best is None or (value < best if better else value > best):
                    best, bad_epochs = value, 0
                    if restore_best:
                        best_state = {k: v.detach().clone() for k, v in _unwrap(model).state_dict().items()}
                else:
                    bad_epochs += 1
                    stop = bad_epochs >= early_stopping
            if checkpoint and rank == 0:
                ckpt.save(checkpoint, epoch=epoch + 1, model=_unwrap(model), optimizers=optimizers,
                          schedulers=schedulers, scaler=scaler, history=history,
                          extra={"best": best, "bad_epochs": bad_epochs})
            bar.end_epoch(history)
            if stop:
                if verbose and rank == 0:
                    print(f"early stopping: no better {monitor} for {early_stopping} epochs "
                          f"(best {best:.4g}); stopped after epoch {epoch + 1}")
                break
    except KeyboardInterrupt:
        done = len(history)
        where = f"; resume from {checkpoint} with resume=True" if checkpoint else ""
        print(f"interrupted during epoch {done + 1}: {done} epochs complete{where}")
        return history
    if best_state is not None:
        _unwrap(model).load_state_dict(best_state)
    return history


def _as_list(x):
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _check_finite(losses, first_step, epoch):
    """Raise at the first non-finite loss among these steps (one host sync)."""
    bad = (~torch.isfinite(losses)).nonzero()
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
            for k, v in {"loss": loss, **metrics}.items():
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
