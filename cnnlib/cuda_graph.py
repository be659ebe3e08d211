"""The training step replayed as a CUDA graph: fit()'s fast path on a GPU.

A CUDA graph records the kernels of one whole training step (forward, backward, optimiser)
once; each later step copies its batch into the recorded input and replays them with a single
launch, which removes the per-kernel launch cost that dominates small models. fit() uses it
only where it is safe (`blocker`, `should_capture`), checks the first replay against an eager step on
a copy of the model, and otherwise trains eagerly, saying why in one line.

Taught in: chapters/00_introduction/02_lenet_end_to_end.ipynb (the fast path, in one sentence);
nothing here is needed to follow fit().
"""
import contextlib
import copy

import torch
import torch.nn as nn
from torch.utils import _pytree as pytree

from .checkpoint import rng_preserved

_SAFE = "_cnnlib_graph_safe"


def graph_safe(loss_fn):
    """Mark a loss function as safe to replay as a CUDA graph; returns it unchanged.

    Safe means: tensor operations only, the same ones every step. No Python side effects (a
    list that records values), no random numbers drawn on the host, no reading a value back
    (`.item()`, `if tensor:`, boolean-mask indexing). With cuda_graph="auto", fit captures only
    classification_loss and losses marked with this decorator; cuda_graph=True captures any.
    """
    setattr(loss_fn, _SAFE, True)
    return loss_fn


def is_graph_safe(loss_fn):
    return getattr(loss_fn, _SAFE, False) is True


def blocker(device, *, train_step, scheduler, scaler, compiled, dist, model):
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


def should_capture(cuda_graph, blocker, loss_fn):
    """Whether to capture: True insists (and says why it cannot), "auto" takes only safe losses."""
    if cuda_graph is False or (cuda_graph == "auto" and not is_graph_safe(loss_fn)):
        return False
    if blocker is not None:
        if cuda_graph is True:
            print(f"cuda_graph: staying eager, {blocker}")
        return False
    return True


class Stepper:
    """The training step: eager, or on CUDA a captured graph replayed, checked once against eager.

    make_step(model, optimizers) builds an eager step; capture(step, batch, model, optimizers)
    records one (`capture` below, replaced in tests).
    """

    def __init__(self, make_step, model, optimizers, graph_wanted, capture):
        self.make_step, self.model, self.optimizers, self.capture = make_step, model, optimizers, capture
        self.eager = make_step(model, optimizers)
        self.graph_wanted, self.replay, self.static = graph_wanted, None, None

    def __call__(self, batch):
        if self.graph_wanted and self.static is None:
            self.graph_wanted = False  # capture once
            return self._capture_and_check(batch)
        if self.static is not None and same_shapes(self.static, batch):
            copy_into(self.static, batch)
            return self.replay()
        return self.eager(batch)  # eager, also for an odd-sized batch after capture

    def _capture_and_check(self, batch):
        try:
            replay, static = self.capture(self.eager, batch, self.model, self.optimizers)
        except Exception as err:  # an op that cannot be captured: say so, train eagerly
            print(f"cuda_graph: capture failed ({type(err).__name__}: {err}); training eagerly (a step that "
                  "reads a value back, as .item() or a metric returned as a Python number does, cannot be replayed)")
            return self.eager(batch)
        # The first real step runs twice: replayed on the model, eagerly on a copy; they must agree.
        twin, twin_optimizers = copy.deepcopy((self.model, self.optimizers))
        twin_step, out = self.make_step(twin, twin_optimizers), {}
        copy_into(static, batch)
        problem = disagrees(lambda: out.setdefault("graph", replay()),
                            lambda: out.setdefault("eager", twin_step(batch)), self.model, twin,
                            optimizers=self.optimizers, twin_optimizers=twin_optimizers)
        if problem is None:
            self.replay, self.static = replay, static
            return out["graph"]
        print(f"cuda_graph: a replayed step differs from the eager step ({problem}); training eagerly")
        with torch.no_grad():  # keep the eager result
            self.model.load_state_dict(twin.state_dict())
        for opt, twin_opt in zip(self.optimizers, twin_optimizers):
            opt.load_state_dict(twin_opt.state_dict())
        return out["eager"]


def capture(step, batch, model, optimizers):
    """Record one whole training step (forward, backward, optimiser) as a CUDA graph.

    Returns (replay, static_batch): copy a batch into static_batch, call replay(), read the
    metrics it returns. Capture needs a few warm-up steps on a side stream; they are undone
    afterwards (weights, buffers, optimiser state and random number generators put back, state
    that the warm-up created zeroed, which equals a fresh SGD, momentum SGD or Adam), so the
    graph path trains on exactly the same steps as the eager path. The optimisers' `capturable`
    switches are put back too: the graph keeps the capturable update it recorded, and a
    checkpoint then holds the optimiser as the student built it (it resumes on a CPU).
    If capture fails, everything is put back all the same.
    """
    saved = _snapshot(model, optimizers)
    flags = _make_capturable(optimizers)
    static_batch = clone(batch)
    gpu = next((v.device for v in pytree.tree_leaves(static_batch) if torch.is_tensor(v)), None)
    try:  # on the batch's GPU (cuda:1 too): torch's streams and graphs belong to the current device
        with rng_preserved(), torch.cuda.device(gpu):
            graph, static_metrics = _record(step, static_batch, optimizers)
    finally:
        _put_back(model, optimizers, saved)
        restore_flags(optimizers, flags)

    def replay():
        graph.replay()
        return static_metrics

    return replay, static_batch


def _record(step, static_batch, optimizers):
    """Warm up on a side stream, then capture one step; the caller's stream is current after."""
    caller = torch.cuda.current_stream()
    try:
        side = torch.cuda.Stream()
        side.wait_stream(caller)
        with torch.cuda.stream(side):
            step(static_batch)  # the first step may sync: cuDNN's benchmark, the allocator's first blocks
            with _host_syncs_refused():  # a step that reads values back fails here, not in the capture
                step(static_batch)
                step(static_batch)
        caller.wait_stream(side)
        for opt in optimizers:  # grads must be None so the graph allocates them in its own pool
            opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_metrics = step(static_batch, zero_grad=False)
    finally:
        torch.cuda.set_stream(caller)  # a failed capture_end leaves torch's capture stream current
        torch.cuda.synchronize()  # the warm-up's kernels are done before anything is put back
    return graph, static_metrics


@contextlib.contextmanager
def _host_syncs_refused():
    """Within the block, an operation that waits for the GPU raises (where torch can tell)."""
    if not hasattr(torch.cuda, "set_sync_debug_mode"):
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


def _snapshot(model, optimizers):
    """Copies of the weights, buffers and optimiser state tensors, to undo the warm-up."""
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    states = [{id(v): v.detach().clone() for v in _state_tensors(opt)} for opt in optimizers]
    return weights, states


def _put_back(model, optimizers, saved):
    """Undo the warm-up in place (a captured graph keeps reading these very tensors)."""
    weights, states = saved
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(weights[k])
        for opt, state in zip(optimizers, states):
            for v in _state_tensors(opt):
                if id(v) in state:
                    v.copy_(state[id(v)])
                else:  # created by the warm-up: a fresh optimiser's state is zero
                    v.zero_()


def _state_tensors(opt):
    return [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]


def _make_capturable(optimizers):
    """Adam and friends must keep their step counts on the GPU: returns the switches as they were."""
    flags = [[g.get("capturable") for g in opt.param_groups] for opt in optimizers]
    for opt in optimizers:
        for g in opt.param_groups:
            if "capturable" in g:
                g["capturable"] = True
    return flags


def restore_flags(optimizers, flags):
    for opt, groups in zip(optimizers, flags):
        for g, flag in zip(opt.param_groups, groups):
            if flag is not None:
                g["capturable"] = flag


def disagrees(replay, eager, model, twin, rtol=0.05, optimizers=(), twin_optimizers=()):
    """Why one replayed step (on `model`) differs from one eager step (on `twin`, a copy), or None.

    Both start from the same weights, buffers, optimiser state, batch and random numbers (dropout).
    What is compared is each parameter's and buffer's change, not its value (a step that does
    nothing leaves the weights close to right), and the optimiser state tensors after the step:
    they must agree to rtol of their size, loose enough for bf16 and for kernels that sum in
    another order, tight enough to catch a missing or doubled step, BatchNorm statistics left out,
    or a momentum not updated.
    """
    before = {("parameter", n): p.detach().clone() for n, p in model.named_parameters()}
    before.update({("buffer", n): b.detach().clone() for n, b in model.named_buffers()})
    with rng_preserved():  # the eager step sees the same dropout masks
        graph_metrics = replay()
    eager_metrics = eager()
    return (_changes_differ(model, twin, before, rtol)
            or _optimiser_states_differ(model, optimizers, twin_optimizers, rtol)
            or _losses_differ(graph_metrics, eager_metrics, rtol))


def _changes_differ(model, twin, before, rtol):
    """The first parameter or buffer whose change differs from the twin's, in words."""
    for kind, mine, theirs in (("parameter", model.named_parameters(), twin.parameters()),
                               ("buffer", model.named_buffers(), twin.buffers())):
        for (name, a), b in zip(mine, theirs):
            a0 = before[(kind, name)].float()
            graphed, eager_change = a.detach().float() - a0, b.detach().float() - a0
            if not _close(graphed, eager_change, rtol):
                return f"{kind} {name}: change {graphed.norm().item():.3g} vs {eager_change.norm().item():.3g} eager"
    return None


def _optimiser_states_differ(model, optimizers, twin_optimizers, rtol):
    """The first optimiser state tensor (momentum, Adam's moments) that differs from the twin's, in words."""
    names = {id(p): n for n, p in model.named_parameters()}
    for i, (opt, twin_opt) in enumerate(zip(optimizers, twin_optimizers)):
        params = [p for g in opt.param_groups for p in g["params"]]
        twin_params = [p for g in twin_opt.param_groups for p in g["params"]]
        for p, q in zip(params, twin_params):
            mine = opt.state.get(p, {})
            for key, b in twin_opt.state.get(q, {}).items():
                if not torch.is_tensor(b):
                    continue
                a = mine.get(key)
                what = f"optimiser {i}'s {key} of {names.get(id(p), '?')}"
                if not torch.is_tensor(a):
                    return f"{what}: missing after the replay"
                a, b = a.detach().float().to(b.device), b.detach().float()
                if not _close(a, b, rtol):
                    return f"{what}: {a.norm().item():.3g} vs {b.norm().item():.3g} eager"
    return None


def _losses_differ(graph_metrics, eager_metrics, rtol):
    a, b = graph_metrics.get("loss"), eager_metrics.get("loss")
    if a is not None and b is not None and not abs(a.item() - b.item()) <= rtol * abs(b.item()) + 1e-6:
        return f"loss {a.item():.4g} vs {b.item():.4g} eager"
    return None


def _close(a, b, rtol):
    """a within rtol of b's size (also False for NaN)."""
    return (a - b).norm().item() <= rtol * b.norm().item() + 1e-12


# Batches as trees of tensors (a tuple, a list, a dict of them, nested).

def clone(batch):
    return pytree.tree_map(lambda v: v.clone() if torch.is_tensor(v) else v, batch)


def same_shapes(static, batch):
    (a, spec_a), (b, spec_b) = pytree.tree_flatten(static), pytree.tree_flatten(batch)
    return spec_a == spec_b and all(x.shape == y.shape if torch.is_tensor(x) else x == y for x, y in zip(a, b))


def copy_into(static, batch):
    for s, b in zip(pytree.tree_leaves(static), pytree.tree_leaves(batch)):
        if torch.is_tensor(s):
            s.copy_(b, non_blocking=True)
