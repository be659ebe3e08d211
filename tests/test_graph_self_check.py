"""The CUDA-graph self-check compares buffers and optimiser state too (faked captures, on the CPU)."""
import copy

import pytest
import torch
import torch.nn as nn

from cnnlib import train

from test_train import loaders, sgd_step


def bn_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def bn_pair():
    torch.manual_seed(0)
    model = bn_net()  # training mode: BatchNorm updates its running statistics
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    twin, twin_opt = copy.deepcopy((model, opt))
    return model, opt, twin, twin_opt


def skipping(wrong, model, opt, batch):
    """A replay that steps the parameters right but leaves out the statistics or the momentum."""
    def replay():
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        out = sgd_step(model, opt, batch)
        with torch.no_grad():
            if wrong == "running_stats":
                for k, v in model.named_buffers():
                    v.copy_(buffers[k])
            elif wrong == "momentum":
                for state in opt.state.values():
                    state["momentum_buffer"].zero_()
        return out
    return replay


@pytest.mark.parametrize("wrong,named", [(None, None), ("running_stats", r"buffer 2\.running_mean"),
                                         ("momentum", r"optimiser 0's momentum_buffer of 1\.weight")])
def test_the_self_check_compares_buffers_and_optimiser_state(wrong, named):
    model, opt, twin, twin_opt = bn_pair()
    batch = next(iter(loaders()[0]))
    problem = train._graph_disagrees(skipping(wrong, model, opt, batch), lambda: sgd_step(twin, twin_opt, batch),
                                     model, twin, optimizers=[opt], twin_optimizers=[twin_opt])
    if wrong is None:
        assert problem is None
    else:
        assert problem is not None and __import__("re").match(named, problem), problem


def test_a_replay_that_skips_the_running_statistics_is_dropped_for_eager(monkeypatch, capsys):
    def result():
        torch.manual_seed(0)
        model = bn_net()
        fit_opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        train.fit(model, loaders()[0], epochs=2, optimizer=fit_opt, progress=False, verbose=False, device="cpu")
        return [t.detach().clone() for t in model.state_dict().values()]

    eager = result()

    def fake_capture(step, batch, model, optimizers):
        static = train._clone(batch)
        return skipping("running_stats", model, optimizers[0], static), static

    monkeypatch.setattr(train, "_graph_blocker", lambda *args, **kwargs: None)
    monkeypatch.setattr(train, "_capture_cuda_graph", fake_capture)
    graphed = result()
    assert "differs from the eager step (buffer 2.running_mean" in capsys.readouterr().out
    for a, b in zip(eager, graphed):
        assert torch.equal(a, b)
