"""cnnlib.cuda_graph on a CPU: which steps are captured, and the pieces that need no GPU."""
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
