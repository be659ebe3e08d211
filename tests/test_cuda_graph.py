"""cnnlib.cuda_graph on a CPU: which steps are captured, and the pieces that need no GPU."""
import contextlib

import pytest
import torch

from cnnlib import cuda_graph, train
from cnnlib.cuda_graph import graph_safe, should_capture


def custom_loss(model, batch):
    return train.classification_loss(model, batch)


@graph_safe
def marked_loss(model, batch):
    return train.classification_loss(model, batch)


@pytest.mark.parametrize("cuda_graph,loss_fn,expected", [
    ("auto", train.classification_loss, True),
    ("auto", marked_loss, True),
    ("auto", custom_loss, False),      # a student's first loss may have side effects: eager
    (True, custom_loss, True),         # the caller insists
    (False, train.classification_loss, False),
])
def test_auto_captures_only_losses_known_to_be_safe(cuda_graph, loss_fn, expected, capsys):
    assert should_capture(cuda_graph, None, loss_fn) is expected
    assert capsys.readouterr().out == ""


def test_a_blocked_step_stays_eager_and_says_why_only_when_insisted_on(capsys):
    assert should_capture("auto", "an LR scheduler changes the learning rate", train.classification_loss) is False
    assert capsys.readouterr().out == ""
    assert should_capture(True, "an LR scheduler changes the learning rate", custom_loss) is False
    assert capsys.readouterr().out == "cuda_graph: staying eager, an LR scheduler changes the learning rate\n"


def test_graph_safe_marks_and_returns_the_function():
    assert graph_safe(custom_loss) is custom_loss and cuda_graph.is_graph_safe(custom_loss)
    custom_loss.__dict__.pop("_cnnlib_graph_safe")
    assert not cuda_graph.is_graph_safe(custom_loss)


def test_batches_are_walked_as_trees():
    batch = (torch.arange(6.0).view(2, 3), {"boxes": [torch.ones(2, 4)], "label": torch.tensor([1, 2])})
    static = cuda_graph.clone(batch)
    assert static[0] is not batch[0] and torch.equal(static[0], batch[0])
    assert cuda_graph.same_shapes(static, batch)
    other = (batch[0] + 1, {"boxes": [torch.zeros(2, 4)], "label": torch.tensor([3, 4])})
    cuda_graph.copy_into(static, other)
    assert torch.equal(static[0], other[0]) and torch.equal(static[1]["boxes"][0], torch.zeros(2, 4))
    assert not cuda_graph.same_shapes(static, (batch[0][:1], batch[1]))       # an odd last batch
    assert not cuda_graph.same_shapes(static, (batch[0], {"boxes": batch[1]["boxes"]}))  # another structure


# capture() with torch.cuda's stream and graph calls played by a fake: what it leaves behind.
class Stream:
    def __init__(self, name):
        self.name = name

    def wait_stream(self, other):
        pass


class FakeCuda:
    """torch.cuda as capture() uses it, recorded; `capture_fails` makes capture_end raise, after
    which torch leaves its capture stream current (torch/cuda/graphs.py, graph.__exit__)."""

    def __init__(self, monkeypatch, capture_fails=False):
        self.current, self.sync_mode, self.capture_fails = Stream("caller"), 0, capture_fails

        class Graph:
            def replay(self):
                pass

        calls = {"current_stream": lambda *a: self.current, "Stream": lambda *a: Stream("side"),
                 "stream": self.stream, "set_stream": self.set_stream, "synchronize": lambda *a: None,
                 "CUDAGraph": Graph, "graph": self.graph, "device": lambda device: contextlib.nullcontext(),
                 "get_sync_debug_mode": lambda: self.sync_mode, "set_sync_debug_mode": self.set_sync_debug_mode}
        for name, call in calls.items():
            monkeypatch.setattr(torch.cuda, name, call)

    @contextlib.contextmanager
    def stream(self, stream):
        before, self.current = self.current, stream
        yield
        self.current = before

    def set_stream(self, stream):
        self.current = stream

    def set_sync_debug_mode(self, mode):
        self.sync_mode = mode

    @contextlib.contextmanager
    def graph(self, graph):
        before, self.current = self.current, Stream("capture")
        yield
        if self.capture_fails:
            raise RuntimeError("operation failed due to a previous error during capture")
        self.current = before


def adam_step(fake, model, opt, seen):
    """A step that records the sync mode it ran under and makes state as Adam's first step does.
    (A real capturable Adam refuses to step on a CPU, so the update is written out.)"""
    def step(batch, zero_grad=True):
        seen.append((fake.sync_mode, fake.current.name, opt.param_groups[0]["capturable"]))
        if zero_grad:
            opt.zero_grad()
        loss = model(batch).square().mean()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                opt.state[p].setdefault("exp_avg", torch.zeros_like(p)).add_(p.grad)
                p.sub_(0.1 * p.grad)
        return {"loss": loss.detach()}
    return step


def setup(monkeypatch, capture_fails=False):
    torch.manual_seed(0)
    fake = FakeCuda(monkeypatch, capture_fails)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen = []
    return fake, model, opt, seen, adam_step(fake, model, opt, seen)


def test_capture_undoes_its_warm_up_on_a_side_stream_refusing_syncs_after_the_first_step(monkeypatch):
    fake, model, opt, seen, step = setup(monkeypatch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = torch.randn(4, 3)
    torch.manual_seed(7)
    expected_draw = torch.rand(1)
    torch.manual_seed(7)
    replay, static = cuda_graph.capture(step, batch, model, [opt])
    assert torch.rand(1) == expected_draw  # the warm-up's random numbers are put back
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(torch.count_nonzero(st["exp_avg"]) == 0 for st in opt.state.values())  # as a fresh Adam's
    # warm-up on a side stream, the first step free to sync (cuDNN's benchmark), then syncs refused
    assert seen == [(0, "side", True), ("error", "side", True), ("error", "side", True), (0, "capture", True)]
    assert fake.sync_mode == 0 and fake.current.name == "caller"
    assert static.shape == (4, 3) and replay()["loss"].ndim == 0


def test_a_captured_optimiser_is_given_back_as_built(monkeypatch):
    """The graph keeps the capturable update it recorded; the optimiser itself goes back to
    capturable=False, so its checkpoint resumes on a CPU and its eager twin does not warn."""
    fake, model, opt, seen, step = setup(monkeypatch)
    cuda_graph.capture(step, torch.randn(4, 3), model, [opt])
    assert seen[-1][2] is True and opt.param_groups[0]["capturable"] is False


def test_a_failed_capture_gives_back_the_stream_the_weights_and_the_optimiser(monkeypatch):
    fake, model, opt, seen, step = setup(monkeypatch, capture_fails=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="during capture"):
        cuda_graph.capture(step, torch.randn(4, 3), model, [opt])
    assert fake.current.name == "caller" and fake.sync_mode == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert opt.param_groups[0]["capturable"] is False


def test_a_step_that_syncs_fails_in_the_warm_up_not_in_the_capture(monkeypatch):
    fake, model, opt, seen, step = setup(monkeypatch)

    def reads_back(batch, zero_grad=True):
        if fake.sync_mode == "error":  # what torch does to .item() under set_sync_debug_mode("error")
            raise RuntimeError("called a synchronizing CUDA operation")
        return step(batch, zero_grad)

    with pytest.raises(RuntimeError, match="synchronizing"):
        cuda_graph.capture(reads_back, torch.randn(4, 3), model, [opt])
    assert [where for _, where, _ in seen] == ["side"] and fake.current.name == "caller" and fake.sync_mode == 0
