"""The one training loop: fit(), evaluate(), predict(), and train_fresh() for comparisons.

fit() trains any model on batches from a loader and gives every chapter the same services:
budgets, a checkpoint every epoch and resume, a History with plots, progress, a guard against
non-finite losses, early stopping, and the fast path (mixed precision, channels_last and, on
CUDA, the whole training step replayed as a CUDA graph).

What a step does is the caller's choice, at two depths:
- ``loss_fn(model, batch) -> loss`` or ``(loss, {name: value})``: fit does backward and the
  optimiser step (classification by default; a detector returns its summed loss and parts).
- ``train_step(batch) -> {name: value}``: the caller does everything inside the step
  (a GAN's two optimisers); fit still runs the epochs, checkpoints, history and progress.

The file reads top to bottom: fit, evaluate and predict, then the helpers they call. The CUDA
graph lives in cuda_graph.py, data parallelism (torchrun) in distributed.py.
Taught in: chapters/00_introduction/02_lenet_end_to_end.ipynb, used by every chapter after it.
"""
import contextlib
import functools
import itertools
import numbers
import random
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree

from . import checkpoint as ckpt
from . import config, distributed, footprint
from ._validate import positive_int
from .cuda_graph import Stepper, graph_safe, should_capture
from .history import History, direction
from .progress import Progress

# The fast path's pieces under the names fit looks up when it runs (tests replace them to
# exercise the CUDA-graph self-check on a CPU), and two that older tests reach through train.
from .cuda_graph import blocker as _graph_blocker, capture as _capture_cuda_graph
from .cuda_graph import clone as _clone, disagrees as _graph_disagrees  # noqa: F401
from .distributed import shard as _shard  # noqa: F401


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


def seed_everything(seed=0):
    """Seed Python, NumPy and torch, so a CPU run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@graph_safe
def classification_loss(model, batch):
    """Cross-entropy and accuracy of a batch (x, y): the default for fit and evaluate."""
    x, y = batch
    logits = model(x)
    if isinstance(logits, tuple):  # GoogLeNet with aux_logits=True, in training
        raise TypeError(f"this model returns (logits, aux...) in training: use loss_fn=googlenet_loss (from "
                        f"cnnlib.models), which adds the auxiliary classifiers' losses; classification_loss "
                        f"takes the logits alone, and got a tuple of {len(logits)}")
    loss = F.cross_entropy(logits, y)
    return loss, {"acc": (logits.argmax(dim=1) == y).float().mean()}


def fit(model, train_loader, val_loader=None, *, epochs, optimizer=None, scheduler=None,
        loss_fn=classification_loss, train_step=None, eval_fn=None, scheduler_interval="epoch",
        device=None, amp=True, channels_last=None, compile=False, cuda_graph="auto",
        clip_grad_norm=None, checkpoint=None, resume=False, early_stopping=None,
        monitor="val_loss", restore_best=True, progress=None, live_plot=None,
        check_every=50, verbose=True, mode=None, on_epoch_end=None, quiet=False, max_steps=None):
    """Train `model` for `epochs` epochs; returns its History (one row per epoch).

    train_loader / val_loader: any iterable of batches (a cnnlib loader, a torch DataLoader, a list).
    optimizer / scheduler: one object or a list (a GAN has two optimisers).
    loss_fn(model, batch): the loss of a batch, optionally with metrics; see the module doc.
        Metrics are numbers or 1-element tensors, one per batch.
    train_step(batch): replaces the whole step (then `optimizer` is only checkpointed). Its
        optimisers are taken from `train_step.optimizers` where it has one (GANStep does);
        otherwise a checkpoint needs them as optimizer=[...]. fit steps the schedulers after each
        call when scheduler_interval="step"; clip_grad_norm is refused (clip inside the step), and
        a val_loader needs eval_fn.
    eval_fn(model, batch): validation metrics of a batch (default: loss_fn's loss and metrics).
    amp: mixed precision on CUDA: bf16 on GPUs that run it natively (compute capability 8.0 on:
        A100, L4, H100), else fp16 with a GradScaler (a T4); then each History row also says how
        many steps the scaler skipped because their gradients overflowed (skipped_steps).
    channels_last: NHWC memory layout (default: on for CUDA and CPU, off for MPS).
    compile: train a torch.compile'd model (the weights stay the given model's).
    cuda_graph: "auto" replays the step as a CUDA graph where that is safe: on CUDA, for
        classification_loss and losses marked @graph_safe; the first replay is checked against
        an eager step. True insists for any loss (and says why not), False stays eager.
    clip_grad_norm: rescale the gradients to at most this total norm before each step.
    checkpoint: a file written after every epoch; resume=True continues from it (the checkpoint's
        optimiser state and learning rate win over the given ones; differences are printed).
    early_stopping: stop after this many epochs without improvement in `monitor`; mode "min" or
        "max" says which way is better (inferred for names with "loss" or ending in "acc");
        restore_best puts the best epoch's weights back.
    max_steps: stop after this many optimiser steps in all (a resumed run counts its earlier
        epochs); the last epoch may then be a partial one.
    check_every: steps between checks for a non-finite loss (each is one host sync).
    quiet: no progress, no live plot, no lines (the same as progress=False, live_plot=False,
        verbose=False). verbose: print one line per epoch (in a notebook the live display
        shows it instead).
    on_epoch_end(epoch, history): called after each epoch (1, 2, ...) to look at the model:
        samples, plots. Its random draws are undone, so looking never changes the run.

    Under torchrun, fit trains with DistributedDataParallel: each rank takes its share of every
    epoch (give the loaders the per-rank batch size, global batch / world size), metrics are
    reduced over ranks, and only rank 0 writes checkpoints and shows progress.
    """
    optimizers, schedulers = _optimizers_of(optimizer, train_step, checkpoint), _as_list(scheduler)
    _check_arguments(model, optimizers, epochs=epochs, check_every=check_every, max_steps=max_steps,
                     scheduler_interval=scheduler_interval, train_step=train_step, cuda_graph=cuda_graph,
                     checkpoint=checkpoint, clip_grad_norm=clip_grad_norm, validates=val_loader is not None,
                     eval_fn=eval_fn)
    stopper = EarlyStopping.watching(monitor, early_stopping, mode, restore_best)
    device, dist = distributed.setup(torch.device(device or config.device()), train_step)
    lead = dist is None or dist[0] == 0  # the process that writes and speaks
    planned, (epochs, dry_run) = epochs, _dry_run(epochs, lead, bounded=max_steps is not None)  # CNNLIB_MAX_STEPS
    progress, live_plot, verbose = _display(quiet or not lead, progress, live_plot, verbose)
    channels_last, (amp_dtype, scaler) = _channels_last(device, channels_last), _precision(device, amp)
    history = History()
    saves = _Checkpoints(checkpoint, lead, model=model, optimizers=optimizers, schedulers=schedulers,
                         scaler=scaler, history=history, stopper=stopper)
    _place(model, device, channels_last)  # before resuming: optimiser state follows its parameters
    start_epoch = saves.resume(say=verbose) if resume else 0
    net = _network(model, device, dist, compile, train_loader, val_loader)  # what trains: DDP, compiled
    steps = _StepCount(_steps_per_epoch(train_loader), start_epoch, max_steps, dry_run)  # this rank's share
    if _nothing_to_train(start_epoch, epochs, stopper, steps, saves.path, lead):
        stopper.restore(model)
        return history

    step = _make_stepper(net, model, optimizers, device=device, cuda_graph=cuda_graph, compile=compile,
                         dist=dist, loss_fn=loss_fn, train_step=train_step, amp_dtype=amp_dtype,
                         scaler=scaler, clip_grad_norm=clip_grad_norm, schedulers=schedulers,
                         scheduler_interval=scheduler_interval)
    step = _footprint(step, model, train_loader, steps, planned - start_epoch, lead)  # CNNLIB_FOOTPRINT_LOG
    evaluate_net = functools.partial(_evaluate, net, val_loader, eval_fn or loss_fn, device=device,
                                     amp_dtype=amp_dtype, channels_last=channels_last, dist=dist)
    bar, epoch = Progress(epochs, enabled=progress, live_plot=live_plot, summary=verbose), start_epoch
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            lr = optimizers[0].param_groups[0]["lr"] if optimizers else None  # the rate this epoch trains with
            _set_epoch(train_loader, epoch)
            net.train()
            bar.start_epoch(epoch, steps.this_epoch())
            sums, seen = _train_epoch(train_loader, step, steps, device=device, channels_last=channels_last,
                                      check_every=check_every, epoch=epoch, bar=bar)
            _step_schedulers(schedulers, scheduler_interval == "epoch")
            row = _epoch_row(epoch, sums, seen, dist, device, lr, t0, evaluate_net if val_loader is not None else None)
            history.append(**row, **_skipped_steps(scaler))
            stop = stopper.update(row, model)
            saves.save(epoch + 1)
            bar.end_epoch(history)
            if on_epoch_end is not None:
                _look(on_epoch_end, epoch + 1, history)
            if stop and verbose:
                print(stopper.why(epoch + 1))
            if stop or steps.spent:
                break
    except KeyboardInterrupt:
        if lead:
            print(f"interrupted during epoch {epoch + 1}: {saves.on_disk()}")
        raise
    except NonFiniteLossError as err:
        raise NonFiniteLossError(f"{err} The model's weights in memory are probably NaN now (the bad step "
                                 f"updated them): {saves.on_disk()}; or re-create the model. A resumed run "
                                 "keeps the checkpoint's learning rate: to try a smaller one, start fresh "
                                 "(resume=False).") from None
    stopper.restore(model)
    return history


@torch.no_grad()
def evaluate(model, loader, loss_fn=classification_loss, *, device=None, amp=True, channels_last=None):
    """Mean of loss_fn's loss and metrics over every batch of `loader` (one host sync)."""
    device = torch.device(device or next(model.parameters()).device)
    return _evaluate(model, loader, loss_fn, device=device, amp_dtype=_autocast(device, amp),
                     channels_last=_channels_last(device, channels_last), dist=None)


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


def train_fresh(build, train_loader, val_loader=None, *, epochs, seed=0, optimizer=None, lr=1e-3,
                scheduler=None, reseed_loader=False, **fit_kwargs):
    """Seed, build a new model and fit it; returns (model, history). The pages' comparisons use it.

    build(): a new model. The seed fixes its initial weights and fit's other random draws (dropout,
    augmentation on the host), so two runs that differ only in `build`, `lr` or the optimiser are
    paired by seed. A cnnlib loader shuffles by its own `seed`: reseed_loader=True sets it to
    `seed` too, so each seed also has its own batch order and augmentation.
    optimizer(params, lr=lr): its class or a factory (torch.optim.Adam when None); further
    keywords (momentum=...) through functools.partial. scheduler: a factory of the new
    optimiser's schedule, scheduler(optimizer), or an object with a `step` method that fit steps
    as it is. fit_kwargs go to fit (quiet unless said).
    """
    if isinstance(build, torch.nn.Module) or not callable(build):
        raise TypeError(f"build must be a function that returns a new model (a builder such as "
                        f"models.lenet5, or a lambda), got {type(build).__name__}")
    if not (scheduler is None or hasattr(scheduler, "step") or callable(scheduler)):
        raise TypeError(f"scheduler must be a function of the optimiser (a new model needs a new "
                        f"schedule) or have a step method, got {type(scheduler).__name__}")
    if reseed_loader:
        if not hasattr(train_loader, "seed"):
            raise TypeError(f"reseed_loader=True needs a loader with a seed (cnnlib's loaders), "
                            f"got {type(train_loader).__name__}")
        train_loader.seed = seed
    seed_everything(seed)
    model = build()
    make = torch.optim.Adam if optimizer is None else optimizer
    opt = make(model.parameters(), lr=lr)
    fit_kwargs.setdefault("quiet", True)
    if scheduler is not None and not hasattr(scheduler, "step"):
        scheduler = scheduler(opt)              # a factory: this optimiser's own schedule
    history = fit(model, train_loader, val_loader, epochs=epochs, optimizer=opt, scheduler=scheduler,
                  **fit_kwargs)
    return model, history


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs without a better `monitor`; remembers the best weights.

    patience=None is early stopping switched off: it never stops and keeps nothing.
    """
    patience: int = None
    monitor: str = "val_loss"
    mode: str = "min"  # "min" or "max"
    keep_best: bool = True
    best: float = None
    bad_epochs: int = 0
    best_state: dict = None

    @classmethod
    def watching(cls, monitor, patience, mode=None, keep_best=True):
        """fit's early stopping: off when patience is None; the direction checked or inferred."""
        if patience is None:
            return cls(None)
        patience = positive_int("early_stopping (the patience, in epochs)", patience)
        return cls(patience, monitor, direction(monitor, mode, what="early stopping"), keep_best)

    @property
    def stopped(self):
        return self.patience is not None and self.bad_epochs >= self.patience

    def update(self, row, model):
        """Take one epoch's row; True when training should stop."""
        if self.patience is None:
            return False
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

    def why(self, epoch):
        return (f"early stopping: no better {self.monitor} for {self.patience} epochs "
                f"(best {self.best:.4g}); stopped after epoch {epoch}")

    def restore(self, model):
        if self.keep_best and self.best_state is not None:
            model.load_state_dict(self.best_state)

    def state_dict(self):
        if self.patience is None:
            return None
        return {"best": self.best, "bad_epochs": self.bad_epochs, "best_state": self.best_state}

    def load_state_dict(self, state):
        if self.patience is not None and state:
            self.best, self.bad_epochs, self.best_state = state["best"], state["bad_epochs"], state["best_state"]


# fit's helpers, in the order fit calls them.

def _as_list(x):
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _optimizers_of(optimizer, train_step, checkpoint):
    """The given optimisers, then those a train_step lists as `.optimizers` (a GANStep's [opt_g, opt_d])
    that were not given: a checkpoint holds them all, so a resumed run continues whole."""
    given = _as_list(optimizer)
    listed = _as_list(getattr(train_step, "optimizers", None)) if train_step is not None else []
    optimizers = given + [opt for opt in listed if not any(opt is g for g in given)]
    if train_step is not None and checkpoint is not None and not optimizers:
        raise ValueError("fit(train_step=..., checkpoint=...) needs optimizer=[...], every optimiser your "
                         "train_step steps, so that the checkpoint holds their state (a resumed run would "
                         "otherwise restart them from zero)")
    return optimizers


def _check_arguments(model, optimizers, *, epochs, check_every, max_steps, scheduler_interval, train_step,
                     cuda_graph, checkpoint, clip_grad_norm, validates, eval_fn):
    """Refuse, before anything changes, the arguments that would fail later or silently do nothing."""
    positive_int("epochs", epochs)
    positive_int("check_every", check_every)
    if max_steps is not None:
        positive_int("max_steps", max_steps)
    if train_step is None and not optimizers:
        raise ValueError("fit needs an optimizer (or a train_step that steps its own)")
    if scheduler_interval not in ("epoch", "step"):
        raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}")
    if cuda_graph not in (True, False, "auto"):
        raise ValueError(f"cuda_graph must be 'auto', True or False, got {cuda_graph!r}")
    if train_step is not None:
        _check_train_step_arguments(clip_grad_norm, validates, eval_fn)
    _check_optimizers(model, optimizers, warn=train_step is None or checkpoint is not None,
                      stepped_by_fit=train_step is None)


def _check_train_step_arguments(clip_grad_norm, validates, eval_fn):
    """What fit does inside its own step cannot reach into a train_step."""
    if clip_grad_norm is not None:
        raise ValueError(f"clip_grad_norm={clip_grad_norm!r} does nothing with a train_step (fit does not run "
                         "its backward): clip inside your train_step, e.g. torch.nn.utils.clip_grad_norm_ "
                         "between backward() and step()")
    if validates and eval_fn is None:
        raise ValueError("a train_step and a val_loader need eval_fn(model, batch) -> loss or (loss, metrics) "
                         "to say what to measure (e.g. eval_fn=classification_loss for a classifier): the "
                         "default would call the model as a classifier")


def _check_optimizers(model, optimizers, warn, stepped_by_fit=True):
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
        consequence, remedy = (("and will not train", "freeze them with requires_grad_(False) if that is meant")
                               if stepped_by_fit else
                               ("given to fit, so the checkpoint will not hold their optimiser state",
                                "pass every optimiser your train_step steps: optimizer=[...]"))
        warnings.warn(f"{len(missing)} of the model's {len(trainable)} trainable parameter tensors are in "
                      f"no optimizer {consequence}: {', '.join(missing[:5])}"
                      f"{', ...' if len(missing) > 5 else ''} ({remedy})", stacklevel=4)


def _display(quiet, progress, live_plot, verbose):
    """(progress, live_plot, verbose): quiet turns all three off."""
    return (False, False, False) if quiet else (progress, live_plot, verbose)


def _dry_run(epochs, lead, bounded):
    """(epochs, steps per epoch or None) under $CNNLIB_MAX_STEPS / $CNNLIB_MAX_EPOCHS, said in one line.
    A fit given max_steps (a probe such as lr_range_test) is bounded already: the cap leaves it alone."""
    if bounded:
        return epochs, None
    steps, most_epochs = config.max_steps(), config.max_epochs()
    if most_epochs is not None:
        epochs = min(epochs, most_epochs)
    if lead and (steps is not None or most_epochs is not None):
        print(f"dry run (CNNLIB_MAX_STEPS={steps}, CNNLIB_MAX_EPOCHS={most_epochs}): at most {epochs} epochs "
              f"of {steps or 'all'} steps, evaluation on {steps or 'all'} batches")
    return epochs, steps


def _footprint(step, model, train_loader, steps, epochs_left, lead):
    """With $CNNLIB_FOOTPRINT_LOG set (a dry run's cost estimate): the first step is measured, with
    the steps the whole schedule would take (epochs x batches, or max_steps if that is fewer)."""
    log = footprint.log_path()
    if log is None or not lead:
        return step
    planned_steps = epochs_left * (steps.per_epoch_planned or 0)
    if steps.max_steps is not None:
        planned_steps = min(planned_steps, steps.max_steps - steps.done)
    return footprint.measured(step, params=list(model.parameters()), planned_steps=planned_steps, log=log,
                              batch_size=getattr(train_loader, "batch_size", None), label=type(model).__name__)


def _channels_last(device, channels_last):
    """NHWC convolutions are faster on CUDA and on x86 CPUs (oneDNN), not on MPS."""
    return device.type in ("cuda", "cpu") if channels_last is None else channels_last


def _precision(device, amp):
    """The autocast dtype (None: float32) and a GradScaler for the device, enabled for fp16 only (else a no-op)."""
    dtype = _autocast(device, amp)
    return dtype, _CountingScaler(device.type, enabled=dtype == torch.float16)


class _CountingScaler(torch.amp.GradScaler):
    """A GradScaler that counts the steps it skips: in fp16 a step whose gradients overflowed is
    skipped and the scale lowered. update() adds "this step overflowed" to a count on the device
    (no host sync a step); fit reads it once an epoch into the history's skipped_steps."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._skipped = None  # a 0-dim count on the scale's device, created by the first update()

    def update(self, new_scale=None):
        if self.is_enabled() and new_scale is None:
            found = self._found_inf()
            if found:  # (none: super().update() says what is wrong)
                overflowed = (torch.stack(found).sum() > 0).long()
                self._skipped = overflowed if self._skipped is None else self._skipped + overflowed
        super().update(new_scale)

    def _found_inf(self):
        """The overflow flags GradScaler.update backs off on: torch's private state, so a torch
        that keeps them elsewhere gives [] (nothing counted) rather than breaking training."""
        try:
            return [inf.to(self._scale.device) for state in self._per_optimizer_states.values()
                    for inf in state["found_inf_per_device"].values()]
        except (AttributeError, KeyError, TypeError):
            return []

    def take_skipped(self):
        """Steps skipped since the last call (one host sync)."""
        skipped, self._skipped = 0 if self._skipped is None else int(self._skipped), None
        return skipped


def _skipped_steps(scaler):
    """The history's column for fp16: {'skipped_steps': steps the GradScaler skipped this epoch}; else {}."""
    return {"skipped_steps": scaler.take_skipped()} if scaler.is_enabled() else {}


def _autocast(device, amp):
    """bf16 autocast on GPUs that run it natively, else fp16 (with a GradScaler); none on CPU.

    Native bf16 needs compute capability 8.0 (A100, L4, H100). A T4 (7.5) says it supports bf16
    (torch emulates it), but its convolutions then leave cuDNN for a slow fallback: fp16 there.
    """
    if not amp or device.type != "cuda":
        return None
    if torch.version.hip:  # AMD GPUs that run torch run bf16
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.get_device_capability(device) >= (8, 0) else torch.float16


class _Checkpoints:
    """The run's checkpoint file: checked writable before training, written by the lead process
    after each epoch, read on resume, and what it holds in words (after Ctrl-C or a NaN)."""

    def __init__(self, path, lead, *, stopper, **objects):
        self.path = Path(path).expanduser() if path else None
        self.writes = lead and self.path is not None
        self.stopper, self.objects = stopper, objects  # model, optimizers, schedulers, scaler, history
        self.saved_epoch = None  # the epoch the file holds, for this run
        if self.writes:
            ckpt.check_writable(self.path)

    def resume(self, say):
        """Restore the run from the file, checking first that it fits; returns the epoch it holds."""
        if self.path is None or not self.path.exists():
            if say:
                print(f"resume: no checkpoint at {self.path} yet; training from the start")
            return 0
        state = ckpt.load(self.path, **self.objects, say=say)
        self.stopper.load_state_dict(state["extra"].get("early_stopping"))
        self.saved_epoch = state["epoch"]
        if say:
            print(f"resumed from {self.path} after epoch {state['epoch']}")
        return state["epoch"]

    def save(self, epoch):
        if not self.writes:
            return
        bad = ckpt.first_non_finite(self.objects["model"], self.objects["optimizers"])  # one sync an epoch
        if bad is not None:
            raise NonFiniteLossError(f"after epoch {epoch} the {bad} holds NaN or infinite values (a NaN or "
                                     "infinite gradient: a learning rate that is too high, or the log, square "
                                     "root or division of zero in a hand-written loss); the checkpoint was not "
                                     "overwritten.")
        with ckpt.hold_interrupts():  # the file and what we report about it change together
            ckpt.save(self.path, epoch=epoch, **self.objects, extra={"early_stopping": self.stopper.state_dict()})
            self.saved_epoch = epoch

    def on_disk(self):
        """What a student can go back to, in words."""
        if self.path is None:
            return "nothing is saved (checkpoint=None)"
        if self.saved_epoch is None:
            return f"no checkpoint was written yet ({self.path} holds no epoch of this run)"
        return f"{self.path} holds epoch {self.saved_epoch}; resume=True continues from there"


def _place(model, device, channels_last):
    """Move the model to its device and memory layout; on CUDA, the fast kernel settings."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


def _nothing_to_train(start_epoch, epochs, stopper, steps, path, lead):
    """A resumed run that is already done says so (fit then returns its history)."""
    if start_epoch < epochs and not stopper.stopped and not steps.spent:
        return False
    if lead:
        why = " (early stopping had stopped the run)" if stopper.stopped else ""
        wanted = f"epochs={epochs}" + (f", max_steps={steps.max_steps}" if steps.max_steps else "")
        print(f"resume: {path} already holds {start_epoch} epochs{why}; "
              f"nothing to train for {wanted}: returning its history")
    return True


def _network(model, device, dist, compile, train_loader, val_loader):
    """What the step calls: the model, wrapped for data parallelism and compiled where asked."""
    net = distributed.wrap(model, device, dist, train_loader, val_loader) if dist else model
    return _CompiledOrEager(net) if compile else net


class _CompiledOrEager(torch.nn.Module):
    """torch.compile of `net`; if compiling fails (no C++ compiler, an op inductor cannot lower),
    it says why in one line and runs `net` eagerly from then on. torch.compile is lazy: a call
    compiles (the first, and any that needs a new graph: eval mode, another shape), so a call is
    where it can fail. An error of the model itself fails eagerly too, and is raised as it is."""

    def __init__(self, net):
        super().__init__()
        self.net, self.compiled = net, torch.compile(net)

    def forward(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 (whatever compiling raised: eager decides below)
                out = self.net(*args, **kwargs)  # the model's own error raises here, with no word of compile
                reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else ""
                print(f"compile: {type(err).__name__}: {reason}; training eagerly")
                self.compiled = None
                return out
        return self.net(*args, **kwargs)


def _make_stepper(net, model, optimizers, *, device, cuda_graph, compile, dist, loss_fn, train_step,
                  amp_dtype, scaler, clip_grad_norm, schedulers, scheduler_interval):
    """The training step: eager, or a CUDA graph where one is asked for and safe."""
    blocker = _graph_blocker(device, train_step=train_step, scaler=scaler if scaler.is_enabled() else None,
                             compiled=compile, dist=dist, scheduler=bool(schedulers), model=model)
    graph_wanted = should_capture(cuda_graph, blocker, loss_fn)
    make_step = functools.partial(_eager_step, loss_fn=loss_fn, train_step=train_step, device=device,
                                  amp_dtype=amp_dtype, scaler=scaler, clip_grad_norm=clip_grad_norm,
                                  schedulers=schedulers if scheduler_interval == "step" else [],
                                  autocast_cache=not graph_wanted)
    return Stepper(make_step, net, optimizers, graph_wanted, capture=_capture_cuda_graph)


def _eager_step(net, optimizers, *, loss_fn, train_step, device, amp_dtype, scaler, clip_grad_norm,
                schedulers, autocast_cache):
    """The eager training step of `net` with `optimizers` (the CUDA graph's self-check makes a second)."""
    if train_step is not None:
        return _custom_step(train_step, schedulers, device)
    first = [True]

    def step(batch, zero_grad=True):
        with _amp_context(device, amp_dtype, cache=autocast_cache):
            loss, metrics = _split(loss_fn(net, batch))
        _check_trainable(loss)  # before backward: a refused loss changes nothing
        if zero_grad:
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
        scaler.scale(loss).sum().backward()  # sum(): a 1-element loss too
        if first:  # once: a Python check, no host sync
            first.clear()
            _check_some_gradient(optimizers)
        if clip_grad_norm is not None:
            for opt in optimizers:
                scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip_grad_norm)
        for opt in optimizers:
            scaler.step(opt)  # with fp16: skipped when the gradients overflowed
        scaler.update()
        _step_schedulers(schedulers)  # only those stepped per step
        return _as_metrics({"loss": loss, **metrics}, device)
    return step


def _custom_step(train_step, schedulers, device):
    """A train_step does the whole step; fit steps the schedulers per step (scheduler_interval="step")."""
    def step(batch, zero_grad=True):
        metrics = train_step(batch)
        if not isinstance(metrics, Mapping):
            raise TypeError(f"train_step must return a dict of metrics ({{name: value}}, e.g. {{'loss': "
                            f"loss.detach()}}), got {type(metrics).__name__}")
        _step_schedulers(schedulers)
        return _as_metrics(metrics, device)
    return step


def _check_trainable(loss):
    """The loss must be one number that backward can run through to the model."""
    if not torch.is_tensor(loss):
        raise TypeError("loss_fn must return the loss as a tensor computed from the model (not .item() or a "
                        f"Python number), got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"loss_fn returned a loss of shape {tuple(loss.shape)}: reduce it to one number "
                         "(e.g. .mean() over the batch) before returning it")
    if not loss.requires_grad:
        raise ValueError("the loss is detached from the model (it has no grad_fn): compute it from the "
                         "model's output without .detach(), .item() or torch.no_grad()")


def _check_some_gradient(optimizers):
    """After the first backward: a loss_fn that never calls its model gives no parameter a gradient."""
    if not any(p.grad is not None for opt in optimizers for g in opt.param_groups for p in g["params"]):
        raise ValueError("no parameter of the optimizer received a gradient from the loss, so training would "
                         "change nothing: loss_fn must compute the loss with the model it is given (its first "
                         "argument), not with a model from an earlier cell")


def _amp_context(device, dtype, cache=True):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)


def _split(out, what="loss_fn"):
    """(loss, metrics) from what a loss_fn returned: loss, or (loss, {name: metric})."""
    pair = isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], Mapping)
    if isinstance(out, (tuple, list, Mapping)) and not pair:
        raise TypeError(f"{what} must return loss or (loss, {{name: metric}}), got a {type(out).__name__}"
                        f"{f' of {len(out)}' if isinstance(out, (tuple, list)) else ''}")
    loss, metrics = out if pair else (out, {})
    if "loss" in metrics:
        raise ValueError(f"{what} returned a metric named 'loss', which is reserved for the loss itself (it "
                         "would replace it in the history): give the metric another name")
    return loss, metrics


class _StepCount:
    """Optimiser steps so far, and how many this epoch may take (max_steps, a dry run's cap)."""

    def __init__(self, per_epoch, start_epoch, max_steps, cap=None):
        self.per_epoch_planned = per_epoch  # before a dry run's cap
        if cap is not None:
            per_epoch = cap if per_epoch is None else min(per_epoch, cap)
        self.per_epoch, self.max_steps, self.cap = per_epoch, max_steps, cap
        self.done = start_epoch * per_epoch if per_epoch is not None else 0

    def this_epoch(self):
        """Steps in this epoch (None when the loader has no length and nothing limits it)."""
        return self.per_epoch if self.limit is None or self.per_epoch is None else min(self.limit, self.per_epoch)

    @property
    def limit(self):
        """At most this many steps now (None: the whole epoch)."""
        if self.max_steps is None:
            return self.cap
        left = max(self.max_steps - self.done, 0)
        return left if self.cap is None else min(left, self.cap)

    @property
    def spent(self):
        return self.max_steps is not None and self.done >= self.max_steps


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


def _train_epoch(loader, step, steps, *, device, channels_last, check_every, epoch, bar):
    """One pass over the training batches (at most steps.limit): summed metrics on the device, examples."""
    sums, seen, pending, i, first_step = {}, 0, [], -1, steps.done
    for i, batch in enumerate(itertools.islice(loader, steps.limit)):
        batch = _to_device(batch, device, channels_last)
        metrics = step(batch)
        n = _batch_size(batch)
        seen += n
        for k, v in metrics.items():
            if k in sums:
                sums[k].add_(v.float(), alpha=n)
            else:
                sums[k] = v.float() * n
        _watch_losses(pending, metrics, first_step + i)
        if (i + 1) % check_every == 0:
            _check_finite(pending, epoch)
            pending = []
            if bar.enabled:
                bar.step(i + 1, sums["loss"].item() / seen if "loss" in sums else None)
    _check_finite(pending, epoch)
    if i == -1:
        raise ValueError(f"the training loader gave no batches in epoch {epoch + 1}: nothing was trained")
    steps.done += i + 1
    return sums, seen


def _to_device(batch, device, channels_last):
    """Move a batch (a tensor, or a tuple, list or dict of them) to `device`, images as channels_last."""
    def move(v):
        if not torch.is_tensor(v):
            return v
        v = v.to(device, non_blocking=True)
        if channels_last and v.ndim == 4 and v.is_floating_point():
            v = v.contiguous(memory_format=torch.channels_last)
        return v
    return pytree.tree_map(move, batch)


def _batch_size(batch):
    first = batch[0] if isinstance(batch, (tuple, list)) else batch
    return len(first) if torch.is_tensor(first) else len(next(iter(first.values())))


def _watch_losses(pending, metrics, step):
    """Keep this step's loss metrics to check: `loss`, and a train_step's `loss_d`, `loss_g`, ..."""
    names = [k for k in metrics if "loss" in k]
    if names:  # stack copies: a CUDA graph's replay overwrites its output tensors
        pending.append((step, names, torch.stack([metrics[k].float() for k in names])))


def _check_finite(pending, epoch):
    """Raise at the first non-finite loss metric among these steps (one host sync)."""
    if not pending:
        return
    bad = (~torch.isfinite(torch.cat([values for _, _, values in pending]))).nonzero()
    if len(bad):
        step, name = [(step, name) for step, names, _ in pending for name in names][int(bad[0])]
        raise NonFiniteLossError(
            f"the {name} became NaN or infinite at step {step} (epoch {epoch + 1}); training stopped. "
            "Usual causes: a learning rate that is too high (try 10x smaller), exploding gradients "
            "(try clip_grad_norm=1.0), log or division of zero in a hand-written loss, or "
            "inputs that are not normalised.")


def _step_schedulers(schedulers, now=True):
    if not now:
        return
    with warnings.catch_warnings():  # fp16: the GradScaler skips the first steps while it finds its scale
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        for s in schedulers:
            s.step()


def _epoch_row(epoch, sums, seen, dist, device, lr, t0, evaluate_net):
    """The epoch's History row: training metrics, validation metrics, the rate and the timings."""
    if dist:
        totals = torch.stack([*sums.values(), torch.tensor(float(seen), device=device)])
        distributed.all_reduce([totals])
        sums, seen = dict(zip(sums, totals[:-1])), totals[-1].item()
    row = {"epoch": epoch + 1, **{f"train_{k}": (v / seen).item() for k, v in sums.items()}}  # the one sync
    t_train = time.perf_counter() - t0
    if evaluate_net is not None:
        row.update({f"val_{k}": v for k, v in evaluate_net().items()})
    if lr is not None:
        row["lr"] = lr
    row["seconds"] = time.perf_counter() - t0
    row["eval_seconds"] = row["seconds"] - t_train
    row["examples_per_s"] = seen / t_train
    return row


def _look(callback, epoch, history):
    """Call callback(epoch, history) with every random number generator put back afterwards."""
    with ckpt.rng_preserved():
        callback(epoch, history)


def _evaluate(model, loader, loss_fn, *, device, amp_dtype, channels_last, dist):
    """evaluate(), and fit's validation: under torchrun the sums are reduced over the ranks."""
    was_training = model.training
    model.eval()
    sums, seen = {}, 0
    with torch.no_grad(), _amp_context(device, amp_dtype):
        for batch in itertools.islice(loader, config.max_steps()):  # a dry run evaluates a few batches
            batch = _to_device(batch, device, channels_last)
            loss, metrics = _split(loss_fn(model, batch))
            n = _batch_size(batch)
            seen += n
            for k, v in _as_metrics({"loss": loss, **metrics}, device).items():
                v = v.float() * n
                sums[k] = sums[k] + v if k in sums else v
    model.train(was_training)
    totals = torch.stack([*sums.values(), torch.tensor(float(seen), device=device)])
    if dist:
        distributed.all_reduce([totals])
    totals = totals.tolist()
    return {k: v / totals[-1] for k, v in zip(sums, totals[:-1])}


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
