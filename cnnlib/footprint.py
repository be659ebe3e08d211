"""What a training run costs at its full schedule, measured on its first step (appendix: runtimes).

A dry run (CNNLIB_MAX_STEPS, `make full-dry-run`) builds every page's `full` models and loaders
on the CPU and takes a few steps. With CNNLIB_FOOTPRINT_LOG set, fit measures the first of them:
- the floating-point operations of the whole step, forward and backward (torch's
  FlopCounterMode: 2 per multiply-add; operations it has no formula for, such as NMS, count 0);
- the bytes the step saves for its backward pass (autograd's saved tensors, the activations),
  and the bytes of the parameters;
and appends one line per fit to the log, with the steps the full schedule would take. The
runtimes page turns these lines into a time and a memory estimate for a GPU it has never run on.
Shown in: chapters/90_appendix/02_runtimes.ipynb (the T4 estimates).
"""
import csv
import os
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

FIELDS = ("page", "label", "flops_per_step", "planned_steps", "saved_bytes", "param_bytes", "batch", "cpu_step_seconds")


def log_path():
    """Where fit appends its measurements, or None (not measuring)."""
    path = os.environ.get("CNNLIB_FOOTPRINT_LOG")
    return Path(path) if path else None


def measured(step, *, params, planned_steps, batch_size, log, label=""):
    """`step`, whose first call is measured and written to `log` (a CSV with FIELDS); later
    calls go straight through."""
    first = True

    def measuring_step(batch):
        nonlocal first
        if not first:
            return step(batch)
        first = False
        saved = {}

        def pack(t):
            saved[(t.untyped_storage().data_ptr(), t.dtype)] = t.untyped_storage().nbytes()
            return t

        t0 = time.perf_counter()
        with FlopCounterMode(display=False) as counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = step(batch)
        seconds = time.perf_counter() - t0
        write(log, label=label, flops_per_step=counter.get_total_flops(), planned_steps=planned_steps,
              saved_bytes=sum(saved.values()), batch=batch_size, cpu_step_seconds=round(seconds, 4),
              param_bytes=sum(p.numel() * p.element_size() for p in params))
        return out

    return measuring_step


def write(log, **row):
    """Append one row; `page` comes from $CNNLIB_FOOTPRINT_PAGE (make full-dry-run sets it)."""
    row.setdefault("page", os.environ.get("CNNLIB_FOOTPRINT_PAGE", ""))
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    new = not log.exists()
    with log.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def estimate(rows, *, peak_flops, utilisation, step_overhead_s, activation_scale=0.5,
             state_bytes_per_param_byte=4):
    """(seconds, peak bytes) of a page's fits on a GPU from their measured rows (dicts of FIELDS).

    seconds: planned steps x (FLOPs per step / (peak_flops x utilisation) + step_overhead_s), the
      overhead being the launches of a step too small to fill the GPU.
    peak bytes: the largest fit's activations (x activation_scale: fp16/bf16 autocast halves
      most of them) plus its parameters with their gradients and two Adam moments
      (state_bytes_per_param_byte = 4 copies of the weights).
    """
    seconds = sum(int(r["planned_steps"]) * (float(r["flops_per_step"]) / (peak_flops * utilisation)
                                             + step_overhead_s) for r in rows)
    peak = max((activation_scale * float(r["saved_bytes"]) + state_bytes_per_param_byte * float(r["param_bytes"])
                for r in rows), default=0.0)
    return seconds, peak
