import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlib import data, train
from cnnlib.train import NonFiniteLossError, fit


def blobs(n=256, seed=0):
    """Two classes of 1x4x4 images: bright top half or bright bottom half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randint(0, 80, (n, 1, 4, 4), generator=g)
    images[labels == 0, :, :2] += 150
    images[labels == 1, :, 2:] += 150
    return images.to(torch.uint8), labels


def loaders(batch_size=32, seed=0):
    train_loader = data.TensorLoader(*blobs(256, seed), batch_size, shuffle=True, drop_last=True, device="cpu")
    test_loader = data.TensorLoader(*blobs(128, seed + 1), 64, device="cpu")
    return train_loader, test_loader


def small_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 2))


def test_fit_learns_a_small_problem():
    torch.manual_seed(0)
    model = small_net()
    tr, te = loaders()
    hist = fit(model, tr, te, epochs=5, optimizer=torch.optim.SGD(model.parameters(), lr=0.5), progress=False)
    assert len(hist) == 5
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert hist.last["val_acc"] > 0.95
    assert train.evaluate(model, te)["acc"] == pytest.approx(hist.last["val_acc"])


def run(epochs, checkpoint=None, resume=False, seed=0):
    torch.manual_seed(seed)
    model = small_net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    tr, te = loaders()
    hist = fit(model, tr, te, epochs=epochs, optimizer=opt, scheduler=sched, checkpoint=checkpoint,
               resume=resume, progress=False)
    return model, hist


def test_resume_equals_uninterrupted_bitwise(tmp_path):
    straight, hist = run(4)
    ckpt = tmp_path / "run.pt"
    run(2, checkpoint=ckpt)                                     # "interrupted" after epoch 2
    resumed, hist2 = run(4, checkpoint=ckpt, resume=True, seed=123)  # a fresh process would re-init
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert hist2["train_loss"] == hist["train_loss"] and len(hist2) == 4


def test_non_finite_loss_stops_with_a_clear_message():
    model = small_net()
    tr, te = loaders()

    def exploding(model, batch):
        loss, metrics = train.classification_loss(model, batch)
        return loss * float("inf"), metrics

    with pytest.raises(NonFiniteLossError, match=r"step 0 \(epoch 1\).*learning rate"):
        fit(model, tr, te, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=exploding, progress=False)


def test_early_stopping_restores_the_best_weights():
    torch.manual_seed(0)
    model = small_net()
    tr, te = loaders()
    # lr 0 after the first epoch: val loss cannot improve, so training stops after `patience` more
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 if e == 0 else 0.0)
    hist = fit(model, tr, te, epochs=20, optimizer=opt, scheduler=sched, early_stopping=2,
               monitor="val_acc", progress=False)
    assert len(hist) == 3
    assert train.evaluate(model, te)["acc"] == pytest.approx(hist.best("val_acc")["val_acc"])


def test_custom_train_step_with_two_optimisers_is_checkpointed(tmp_path):
    torch.manual_seed(0)
    a, b = nn.Linear(16, 2), nn.Linear(16, 2)
    both = nn.ModuleDict({"a": a, "b": b})
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)

    def step(batch):  # two players, each with its own optimiser, as in a GAN
        x, y = batch
        x = x.flatten(1)
        out = {}
        for name, net, opt in (("a", a, opt_a), ("b", b, opt_b)):
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            out[f"loss_{name}"] = loss.detach()
        return out

    tr, _ = loaders()
    hist = fit(both, tr, epochs=2, optimizer=[opt_a, opt_b], train_step=step,
               checkpoint=tmp_path / "two.pt", progress=False)
    assert hist.keys()[:3] == ["epoch", "train_loss_a", "train_loss_b"]
    state = torch.load(tmp_path / "two.pt", weights_only=False)
    assert len(state["optimizers"]) == 2 and state["epoch"] == 2


def test_dict_targets_reach_the_loss():
    x, y = blobs(64)
    batches = [(x[i:i + 16].float() / 255, {"label": y[i:i + 16], "weight": torch.ones(16)})
               for i in range(0, 64, 16)]

    class ListLoader(list):
        def set_epoch(self, epoch):
            pass

    model = small_net()

    def weighted(model, batch):
        images, target = batch
        losses = F.cross_entropy(model(images), target["label"], reduction="none")
        return (losses * target["weight"]).mean(), {"parts": losses.mean()}

    hist = fit(model, ListLoader(batches), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
               loss_fn=weighted, progress=False)
    assert hist.last["train_loss"] == pytest.approx(hist.last["train_parts"])


def test_cuda_graph_is_refused_with_a_reason_where_unsafe():
    model = small_net()
    common = dict(train_step=None, scheduler=False, scaler=None, compiled=False, dist=None,
                  model=model)
    assert "CUDA device" in train._graph_blocker(torch.device("cpu"), **common)
    cuda = torch.device("cuda")
    assert train._graph_blocker(cuda, **common) is None
    assert "custom train_step" in train._graph_blocker(cuda, **{**common, "train_step": print})
    assert "scheduler" in train._graph_blocker(cuda, **{**common, "scheduler": True})
    assert "DistributedDataParallel" in train._graph_blocker(cuda, **{**common, "dist": (0, 2)})


def test_cuda_graph_true_on_cpu_says_why_and_trains_eagerly(capsys):
    torch.manual_seed(0)
    model = small_net()
    tr, te = loaders()
    fit(model, tr, te, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        cuda_graph=True, progress=False, device="cpu")
    assert "cuda_graph: staying eager, CUDA graphs need a CUDA device" in capsys.readouterr().out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                      lambda p: torch.optim.Adam(p, lr=1e-3)])
def test_cuda_graph_trains_like_eager(make_opt):
    from cnnlib.models import lenet5
    results = []
    for graph in (False, True):
        torch.manual_seed(0)
        model = lenet5()
        images, labels = torch.randint(0, 256, (512, 1, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (512,))
        tr = data.TensorLoader(images, labels, 64, shuffle=True, drop_last=True, device="cuda")
        fit(model, tr, epochs=2, optimizer=make_opt(model.parameters()), cuda_graph=graph, amp=False,
            progress=False, device="cuda")
        results.append([p.detach().float().cpu() for p in model.parameters()])
    for eager, graphed in zip(*results):
        torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-5)


# Silent no-ops are refused.
def test_an_epoch_of_zero_steps_is_refused_naming_the_sizes():
    model = small_net()
    tiny = data.TensorLoader(*blobs(10), 32, shuffle=True, drop_last=True, device="cpu")
    with pytest.raises(ValueError, match=r"10 training examples.*batch_size 32.*drop_last"):
        fit(model, tiny, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)


def test_an_optimiser_of_another_model_is_refused():
    model, stale = small_net(), small_net()
    tr, _ = loaders()
    with pytest.raises(ValueError, match="none of the model's trainable parameters"):
        fit(model, tr, epochs=1, optimizer=torch.optim.SGD(stale.parameters(), lr=0.1), progress=False)


def test_parameters_in_no_optimiser_are_warned_about_once():
    model = small_net()
    tr, _ = loaders()
    opt = torch.optim.SGD(model[1].parameters(), lr=0.1)
    with pytest.warns(UserWarning, match=r"2 of the model's 4 trainable parameter tensors .*4\.weight") as caught:
        fit(model, tr, epochs=2, optimizer=opt, progress=False)
    assert len([w for w in caught if "trainable" in str(w.message)]) == 1


@pytest.mark.parametrize("kwargs,message", [
    (dict(epochs=0), "epochs must be a positive integer"),
    (dict(epochs=1, check_every=0), "check_every must be a positive integer"),
    (dict(epochs=1, early_stopping=2, monitor="val_err"), r"mode='min' or mode='max'"),
    (dict(epochs=1, early_stopping=2, mode="up"), "mode must be"),
    (dict(epochs=1, early_stopping=0), r"early_stopping \(the patience, in epochs\) must be"),
])
def test_arguments_that_would_do_nothing_are_refused(kwargs, message):
    model = small_net()
    tr, te = loaders()
    with pytest.raises(ValueError, match=message):
        fit(model, tr, te, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False, **kwargs)


def with_error_rate(model, batch):
    loss, metrics = train.classification_loss(model, batch)
    return loss, {"err": 1 - metrics["acc"]}


def test_early_stopping_on_an_error_rate_with_mode_min_restores_the_lowest():
    torch.manual_seed(0)
    model = small_net()
    tr, te = loaders()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 if e == 0 else 0.0)
    hist = fit(model, tr, te, epochs=20, optimizer=opt, scheduler=sched, eval_fn=with_error_rate,
               early_stopping=2, monitor="val_err", mode="min", progress=False)
    assert len(hist) == 3
    assert train.evaluate(model, te, with_error_rate)["err"] == pytest.approx(min(hist["val_err"]))


def run_stopping(epochs, checkpoint=None, resume=False, seed=0):
    torch.manual_seed(seed)
    model = small_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    images, labels = blobs(128, 1)
    labels[:40] = 1 - labels[:40]  # noisy validation labels: the val loss turns up after epoch 2
    tr = data.TensorLoader(*blobs(256, 0), 64, shuffle=True, drop_last=True, device="cpu")
    te = data.TensorLoader(images, labels, 64, device="cpu")
    hist = fit(model, tr, te, epochs=epochs, optimizer=opt, early_stopping=3, monitor="val_loss",
               checkpoint=checkpoint, resume=resume, progress=False)
    return model, hist


def test_resumed_early_stopping_equals_uninterrupted_bitwise(tmp_path):
    straight, hist = run_stopping(12)
    assert len(hist) == 5 and hist["val_loss"].index(min(hist["val_loss"])) == 1  # epoch 2 is restored
    ckpt = tmp_path / "run.pt"
    run_stopping(3, checkpoint=ckpt)  # interrupted after epoch 3: the best (epoch 2) is in the past
    resumed, hist2 = run_stopping(12, checkpoint=ckpt, resume=True, seed=1)
    assert hist2["val_loss"] == hist["val_loss"]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_history_records_the_rate_each_epoch_trained_with():
    model = small_net()
    tr, _ = loaders()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    hist = fit(model, tr, epochs=3, optimizer=opt, scheduler=sched, progress=False)
    assert hist["lr"] == [0.1, 0.05, 0.025]


def test_ctrl_c_says_which_epoch_is_saved_and_is_raised_again(tmp_path, capsys):
    model = small_net()
    tr, _ = loaders()
    calls = []

    def interrupted_in_epoch_2(model, batch):
        calls.append(1)
        if len(calls) == len(tr) + 3:
            raise KeyboardInterrupt
        return train.classification_loss(model, batch)

    with pytest.raises(KeyboardInterrupt):
        fit(model, tr, epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=interrupted_in_epoch_2, checkpoint=tmp_path / "run.pt", progress=False)
    out = capsys.readouterr().out
    assert "interrupted during epoch 2" in out and "holds epoch 1" in out and "resume=True" in out


def test_resuming_a_finished_run_says_so_and_returns_its_history(tmp_path, capsys):
    run(2, checkpoint=tmp_path / "run.pt")
    model, hist = run(2, checkpoint=tmp_path / "run.pt", resume=True)
    assert len(hist) == 2
    assert "already holds 2 epochs" in capsys.readouterr().out


def test_resume_names_the_hyperparameters_that_differ(tmp_path, capsys):
    model = small_net()
    tr, _ = loaders()
    fit(model, tr, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        checkpoint=tmp_path / "run.pt", progress=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    fit(model, tr, epochs=2, optimizer=opt, checkpoint=tmp_path / "run.pt", resume=True, progress=False)
    line = [ln for ln in capsys.readouterr().out.splitlines() if "differ" in ln or "win" in ln]
    assert line and "lr 0.1 (checkpoint) vs 0.01 (given)" in line[0] and "resume=False" in line[0]


def test_resume_into_another_optimiser_fails_before_the_weights_change(tmp_path):
    model = small_net()
    tr, _ = loaders()
    fit(model, tr, epochs=1, optimizer=torch.optim.Adam(model.parameters()), checkpoint=tmp_path / "run.pt",
        progress=False)
    fresh = small_net()
    before = [p.clone() for p in fresh.parameters()]
    with pytest.raises(RuntimeError, match="Adam in the checkpoint but SGD"):
        fit(fresh, tr, epochs=2, optimizer=torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9),
            checkpoint=tmp_path / "run.pt", resume=True, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))


def test_an_unwritable_checkpoint_folder_fails_before_the_first_epoch(tmp_path, monkeypatch):
    from cnnlib import checkpoint as ckpt
    model = small_net()
    tr, _ = loaders()
    steps = []

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", refused)
    with pytest.raises(ckpt.CheckpointError, match="cannot write"):
        fit(model, tr, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
            loss_fn=lambda m, b: steps.append(1) or train.classification_loss(m, b),
            checkpoint=tmp_path / "run.pt", progress=False)
    assert steps == []


def test_a_nan_stop_says_the_weights_are_nan_and_what_the_checkpoint_holds(tmp_path):
    model = small_net()
    tr, _ = loaders()
    epoch = []

    def explodes_in_epoch_2(model, batch):
        loss, metrics = train.classification_loss(model, batch)
        return (loss * float("nan") if len(epoch) > len(tr) else loss), metrics

    def counting(model, batch):
        epoch.append(1)
        return explodes_in_epoch_2(model, batch)

    with pytest.raises(NonFiniteLossError, match=r"(?s)weights in memory.*NaN.*run\.pt holds epoch 1"):
        fit(model, tr, epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=counting,
            checkpoint=tmp_path / "run.pt", progress=False)


# Loaders and metrics as students bring them.
def test_a_plain_torch_dataloader_trains():
    from torch.utils.data import DataLoader, TensorDataset
    images, labels = blobs(128)
    loader = DataLoader(TensorDataset(images.float() / 255, labels), batch_size=32, shuffle=True)
    model = small_net()
    hist = fit(model, loader, loader, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
               progress=False, device="cpu")
    assert len(hist) == 2 and hist.last["train_loss"] < hist.rows[0]["train_loss"]


def test_a_generator_of_batches_trains():
    images, labels = blobs(64)

    class Batches:  # an iterable with no len and no set_epoch
        def __iter__(self):
            return ((images[i:i + 16].float() / 255, labels[i:i + 16]) for i in range(0, 64, 16))

    model = small_net()
    hist = fit(model, Batches(), epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)
    assert len(hist) == 1


def test_data_parallel_needs_a_sharding_loader():
    with pytest.raises(ValueError, match="DistributedSampler"):
        train._shard([(torch.zeros(1), torch.zeros(1))], 0, 2)


def test_metrics_may_be_python_numbers_or_one_element_tensors():
    model = small_net()
    tr, te = loaders()

    def loose(model, batch):
        loss, metrics = train.classification_loss(model, batch)
        return loss.view(1), {"acc": metrics["acc"].item(), "one": metrics["acc"].view(1, 1), "n": 3}

    hist = fit(model, tr, te, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=loose,
               progress=False)
    assert hist.last["train_n"] == 3 and hist.last["train_one"] == pytest.approx(hist.last["train_acc"])
    assert hist.last["val_n"] == 3


def test_a_metric_with_many_values_says_what_to_return():
    model = small_net()
    tr, _ = loaders()

    def per_example(model, batch):
        loss, _ = train.classification_loss(model, batch)
        return loss, {"acc": (model(batch[0]).argmax(1) == batch[1]).float()}

    with pytest.raises(ValueError, match=r"metric 'acc' has shape \(32,\).*one number"):
        fit(model, tr, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=per_example,
            progress=False)


# The CUDA-graph self-check, its logic on the CPU.
def sgd_pair(lr=0.1):
    import copy
    torch.manual_seed(0)
    model = small_net().eval()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    twin, twin_opt = copy.deepcopy((model, opt))
    return model, opt, twin, twin_opt


def sgd_step(model, opt, batch):
    opt.zero_grad()
    loss = train.classification_loss(model, batch)[0]
    loss.backward()
    opt.step()
    return {"loss": loss.detach()}


def test_graph_self_check_passes_a_replay_that_steps_like_eager():
    model, opt, twin, twin_opt = sgd_pair()
    batch = next(iter(loaders()[0]))
    problem = train._graph_disagrees(lambda: sgd_step(model, opt, batch), lambda: sgd_step(twin, twin_opt, batch),
                                     model, twin)
    assert problem is None


@pytest.mark.parametrize("wrong", ["no_op", "double"])
def test_graph_self_check_catches_a_replay_that_steps_wrongly(wrong):
    model, opt, twin, twin_opt = sgd_pair()
    batch = next(iter(loaders()[0]))
    if wrong == "no_op":
        replay = lambda: {"loss": train.classification_loss(model, batch)[0].detach()}
    else:
        replay = lambda: (sgd_step(model, opt, batch), sgd_step(model, opt, batch))[0]
    problem = train._graph_disagrees(replay, lambda: sgd_step(twin, twin_opt, batch), model, twin)
    assert problem is not None and "parameter" in problem


def test_a_disagreeing_graph_is_dropped_and_training_is_eager(monkeypatch, capsys):
    def result(graph_ok):
        torch.manual_seed(0)
        model = small_net()
        tr, _ = loaders()
        fit(model, tr, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
            progress=False, device="cpu")
        return [p.detach().clone() for p in model.parameters()]

    eager = result(True)

    def fake_capture(step, batch, model, optimizers):  # a "graph" whose replay does nothing
        static = train._clone(batch)
        return (lambda: {"loss": train.classification_loss(model, static)[0].detach()}), static

    monkeypatch.setattr(train, "_graph_blocker", lambda *args, **kwargs: None)
    monkeypatch.setattr(train, "_capture_cuda_graph", fake_capture)
    graphed = result(False)
    assert "cuda_graph: a replayed step differs from the eager step" in capsys.readouterr().out
    for a, b in zip(eager, graphed):
        assert torch.equal(a, b)


def test_history_columns_keep_their_order():
    model = small_net()
    tr, te = loaders()
    hist = fit(model, tr, te, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)
    assert hist.keys() == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                           "eval_seconds", "examples_per_s"]


def test_looking_after_each_epoch_never_changes_the_run():
    # small_net has dropout: any random draw of the callback would shift every later mask
    def train(callback=None):
        torch.manual_seed(0)
        model = small_net()
        tr, te = loaders()
        fit(model, tr, te, epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
            progress=False, verbose=False, on_epoch_end=callback)
        return model

    seen = []

    def look(epoch, history):
        seen.append((epoch, len(history)))
        torch.rand(100), torch.randn(3)  # what sampling from a generator does

    plain, looked = train(), train(look)
    assert seen == [(1, 1), (2, 2), (3, 3)]
    for a, b in zip(plain.state_dict().values(), looked.state_dict().values()):
        assert torch.equal(a, b)


# fit's smaller surface: quiet, max_steps, compile and clip_grad_norm exercised.
def counting_loss(calls):
    def loss_fn(model, batch):
        calls.append(len(batch[1]))
        return train.classification_loss(model, batch)
    return loss_fn


def test_quiet_is_progress_live_plot_and_verbose_off(capsys):
    def run_with(**display):
        torch.manual_seed(0)
        model = small_net()
        tr, te = loaders()
        fit(model, tr, te, epochs=2, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu",
            **display)
        return capsys.readouterr(), [p.detach().clone() for p in model.parameters()]

    loud, _ = run_with(progress=False)
    assert "epoch 1" in loud.out  # what quiet must silence: the per-epoch lines
    quiet, weights = run_with(quiet=True)
    three_off, same = run_with(progress=False, live_plot=False, verbose=False)
    assert quiet.out == quiet.err == "" and quiet == three_off
    assert all(torch.equal(a, b) for a, b in zip(weights, same))


def test_max_steps_counts_the_optimiser_steps_of_the_whole_run(tmp_path):
    torch.manual_seed(0)
    model = small_net()
    tr, _ = loaders()  # 8 steps per epoch
    calls = []
    hist = fit(model, tr, epochs=5, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
               loss_fn=counting_loss(calls), max_steps=11, checkpoint=tmp_path / "run.pt", quiet=True)
    assert len(calls) == 11 and len(hist) == 2  # one whole epoch, then 3 steps of the second
    calls.clear()
    fit(model, tr, epochs=5, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=counting_loss(calls), max_steps=20, checkpoint=tmp_path / "run.pt", resume=True, quiet=True)
    assert len(calls) == 20 - 2 * 8  # the resumed run counts the 2 epochs the checkpoint holds


def test_max_steps_equals_the_first_steps_of_a_longer_run():
    def weights_after(**limit):
        torch.manual_seed(0)
        model = small_net()
        tr, _ = loaders()
        fit(model, tr, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), device="cpu", quiet=True, **limit)
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(weights_after(epochs=3, max_steps=16), weights_after(epochs=2)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_max_steps_must_be_a_positive_integer(value):
    model = small_net()
    tr, _ = loaders()
    with pytest.raises(ValueError, match=rf"max_steps must be a positive integer, got {value!r}"):
        fit(model, tr, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), max_steps=value)


def test_numpy_and_torch_integers_are_positive_integers():
    import numpy as np
    model = small_net()
    tr, _ = loaders()
    hist = fit(model, tr, epochs=np.int64(1), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
               check_every=torch.tensor(4), max_steps=np.int32(3), quiet=True)
    assert len(hist) == 1


def test_clip_grad_norm_clips_like_torch_on_a_twin():
    import copy
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))  # no dropout
    twin = copy.deepcopy(model)
    tr, _ = loaders()
    batch = next(iter(tr))
    clip = 0.05
    loss = train.classification_loss(twin, train._to_device(batch, "cpu", True))[0]
    loss.backward()
    assert torch.nn.utils.clip_grad_norm_(twin.parameters(), clip) > 10 * clip  # the clip really bites
    torch.optim.SGD(twin.parameters(), lr=1.0).step()
    fit(model, [batch], epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), clip_grad_norm=clip,
        device="cpu", quiet=True)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, dict(twin.named_parameters())[name], rtol=1e-6, atol=1e-7)


def _cxx_compiler():
    import os
    import shutil
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("clang++")


@pytest.mark.skipif(not _cxx_compiler(), reason="torch.compile's inductor backend needs a C++ compiler on a CPU")
def test_compile_trains_like_eager():
    def one_epoch(compile):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))  # no dropout
        tr, te = loaders()
        hist = fit(model, tr, te, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                   compile=compile, device="cpu", quiet=True)
        return hist.last, model

    (eager, _), (compiled, model) = one_epoch(False), one_epoch(True)
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], rel=1e-4)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)
    assert type(model) is nn.Sequential  # the caller's model holds the weights, not a compiled wrapper


def test_a_model_that_fails_to_compile_trains_eagerly_and_says_why(monkeypatch, capsys):
    def broken_compile(net):        # as torch.compile on a machine without a C++ compiler
        def first_call(*args, **kwargs):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
        return first_call

    def one_epoch(compile):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        tr, te = loaders()
        return fit(model, tr, te, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                   compile=compile, device="cpu", quiet=True).last

    eager = one_epoch(False)
    monkeypatch.setattr(torch, "compile", broken_compile)
    fallen_back = one_epoch(True)
    said = capsys.readouterr().out.splitlines()
    assert said == ["compile: RuntimeError: InvalidCxxCompiler: No working C++ compiler found; training eagerly"]
    assert fallen_back["train_loss"] == eager["train_loss"] and fallen_back["val_loss"] == eager["val_loss"]


def test_a_model_error_under_compile_is_raised_as_it_is_with_no_word_of_compile(monkeypatch, capsys):
    class Broken(nn.Module):        # a mistake of the model's own, which no compiler can mend
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(16, 2)

        def forward(self, x):
            raise ValueError("the model's own mistake")

    def failing_compile(net):       # dynamo, tracing the same forward, fails first
        def call(*args, **kwargs):
            raise RuntimeError("dynamo: the model's own mistake")
        return call

    monkeypatch.setattr(torch, "compile", failing_compile)
    tr, _ = loaders()
    with pytest.raises(ValueError, match="the model's own mistake"):
        model = Broken()
        fit(model, tr, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), compile=True,
            device="cpu", quiet=True)
    assert "compile:" not in capsys.readouterr().out


# A custom loss is replayed as a CUDA graph only when the caller says it is safe.
def test_auto_captures_only_the_losses_known_to_be_safe(monkeypatch):
    from cnnlib.cuda_graph import graph_safe
    captured = []

    def refuse_capture(step, batch, model, optimizers):  # record the attempt, then train eagerly
        captured.append(1)
        raise RuntimeError("no CUDA here")

    monkeypatch.setattr(train, "_graph_blocker", lambda *args, **kwargs: None)  # as on a GPU
    monkeypatch.setattr(train, "_capture_cuda_graph", refuse_capture)

    def attempts(loss_fn, cuda_graph="auto"):
        captured.clear()
        model = small_net()
        tr, _ = loaders()
        fit(model, tr, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=loss_fn,
            cuda_graph=cuda_graph, device="cpu", quiet=True)
        return len(captured)

    def recording(model, batch):  # a side effect the graph would skip
        return train.classification_loss(model, batch)

    assert attempts(train.classification_loss) == 1
    assert attempts(recording) == 0
    assert attempts(recording, cuda_graph=True) == 1
    assert attempts(graph_safe(lambda model, batch: train.classification_loss(model, batch))) == 1


def test_cuda_graph_must_be_auto_true_or_false():
    model = small_net()
    tr, _ = loaders()
    with pytest.raises(ValueError, match=r"cuda_graph must be 'auto', True or False, got 'yes'"):
        fit(model, tr, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), cuda_graph="yes")


def test_early_stopping_and_history_best_agree_which_way_is_better():
    h = train.History()
    for epoch, value in enumerate([0.9, 0.5, 0.7], start=1):
        h.append(epoch=epoch, val_loss_g=value, val_acc=value)
    for key in ("val_loss_g", "val_loss", "val_acc"):
        stopper = train.EarlyStopping.watching(key, patience=2)
        assert stopper.mode == ("max" if key == "val_acc" else "min")
    assert h.best("val_loss_g")["epoch"] == 2 and h.best("val_acc")["epoch"] == 1


def test_early_stopping_off_never_stops_and_keeps_nothing():
    stopper = train.EarlyStopping.watching("val_loss", patience=None)
    model = small_net()
    for value in (1.0, 2.0, 3.0, 4.0):
        assert stopper.update({"val_loss": value}, model) is False
    assert not stopper.stopped and stopper.best_state is None and stopper.state_dict() is None


# The GPU's choices, decided on a CPU with torch.cuda's answers patched in.
@pytest.mark.parametrize("gpu,capability,expected", [("T4", (7, 5), torch.float16), ("V100", (7, 0), torch.float16),
                                                     ("A100", (8, 0), torch.bfloat16), ("H100", (9, 0), torch.bfloat16)])
def test_bf16_only_where_the_gpu_runs_it_else_fp16_with_a_scaler(monkeypatch, gpu, capability, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # a T4 says so too
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "hip", None)
    dtype, scaler = train._precision(torch.device("cuda", 0), amp=True)
    assert dtype == expected and scaler.is_enabled() == (expected == torch.float16)
    assert train._precision(torch.device("cuda", 0), amp=False)[0] is None
    assert train._precision(torch.device("cpu"), amp=True)[0] is None


def test_a_step_the_scaler_skips_does_not_warn_about_the_scheduler():
    """fp16 on a T4: GradScaler skips the first steps while it finds its scale; a per-step
    scheduler stepped after them must not make torch warn that the optimiser never stepped."""
    import warnings
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127)  # the scaled gradients overflow
    def steep(model, batch):
        return 1e3 * train.classification_loss(model, batch)[0]

    step = train._eager_step(model, [opt], loss_fn=steep, train_step=None, device="cpu",
                             amp_dtype=None, scaler=scaler, clip_grad_norm=None, schedulers=[sched],
                             autocast_cache=True)
    before = [p.detach().clone() for p in model.parameters()]
    batch = next(iter(loaders()[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step(train._to_device(batch, "cpu", False))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the step was skipped
    assert scaler.get_scale() < 2.0 ** 127 and sched.last_epoch == 1


# CNNLIB_MAX_STEPS: every page's schedule in a few steps (a dry run).
def test_a_dry_run_caps_steps_epochs_and_evaluation(monkeypatch, capsys):
    monkeypatch.setenv("CNNLIB_MAX_STEPS", "3")
    model = small_net()
    tr, _ = loaders()  # 8 steps an epoch
    te = data.TensorLoader(*blobs(128, 1), 16, device="cpu")  # 8 batches
    trained, evaluated = [], []

    def counted(model, batch):
        (trained if model.training else evaluated).append(1)
        return train.classification_loss(model, batch)

    hist = fit(model, tr, te, epochs=20, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), loss_fn=counted,
               quiet=True)
    assert len(hist) == 2 and len(trained) == 2 * 3 and len(evaluated) == 2 * 3
    assert capsys.readouterr().out.startswith("dry run (CNNLIB_MAX_STEPS=3, CNNLIB_MAX_EPOCHS=2)")
    evaluated.clear()
    train.evaluate(model, te, counted)
    assert len(evaluated) == 3
    monkeypatch.setenv("CNNLIB_MAX_EPOCHS", "4")
    assert len(fit(model, tr, epochs=20, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), quiet=True)) == 4


def test_a_dry_run_leaves_a_fit_given_max_steps_alone(monkeypatch):
    """A probe (lr_range_test) bounds its own steps: the dry run's cap must not cut its curve short."""
    monkeypatch.setenv("CNNLIB_MAX_STEPS", "2")
    model = small_net()
    tr, _ = loaders()  # 8 steps an epoch
    calls = []
    fit(model, tr, epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_fn=counting_loss(calls), max_steps=12, quiet=True)
    assert len(calls) == 12
    monkeypatch.setenv("CNNLIB_MAX_STEPS", "two")
    with pytest.raises(ValueError, match=r"CNNLIB_MAX_STEPS='two' must be a positive whole number"):
        fit(model, tr, epochs=1, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), quiet=True)


def test_without_a_dry_run_nothing_is_capped_or_said(monkeypatch, capsys):
    monkeypatch.delenv("CNNLIB_MAX_STEPS", raising=False)
    monkeypatch.delenv("CNNLIB_MAX_EPOCHS", raising=False)
    model = small_net()
    tr, te = loaders()
    calls = []
    hist = fit(model, tr, epochs=3, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
               loss_fn=counting_loss(calls), quiet=True)
    assert len(hist) == 3 and len(calls) == 3 * 8 and capsys.readouterr().out == ""


def test_train_fresh_equals_seeding_building_and_fitting_by_hand():
    tr, te = loaders()
    model, hist = train.train_fresh(small_net, tr, te, epochs=2, seed=3, lr=1e-2)
    train.seed_everything(3)
    by_hand = small_net()
    expected = fit(by_hand, tr, te, epochs=2, optimizer=torch.optim.Adam(by_hand.parameters(), lr=1e-2), quiet=True)
    assert hist["train_loss"] == expected["train_loss"]
    for a, b in zip(model.parameters(), by_hand.parameters()):
        assert torch.equal(a, b)


def test_train_fresh_takes_an_optimiser_factory_and_differs_by_seed():
    from functools import partial
    tr, te = loaders()
    _, sgd = train.train_fresh(small_net, tr, te, epochs=1, lr=0.5, optimizer=partial(torch.optim.SGD, momentum=0.9))
    _, other_seed = train.train_fresh(small_net, tr, te, epochs=1, seed=1, lr=0.5,
                                      optimizer=partial(torch.optim.SGD, momentum=0.9))
    assert sgd["train_loss"] != other_seed["train_loss"]
    with pytest.raises(TypeError, match="build must be a function"):
        train.train_fresh(small_net(), tr, te, epochs=1)


def test_train_fresh_with_a_schedule_and_the_loader_reseeded_equals_doing_it_by_hand():
    tr, te = loaders()
    tr.seed = 0

    def one_cycle(opt):
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=2 * len(tr))

    model, hist = train.train_fresh(small_net, tr, te, epochs=2, seed=5, lr=0.05, scheduler=one_cycle,
                                    scheduler_interval="step", reseed_loader=True)
    assert tr.seed == 5
    tr.seed = 5
    train.seed_everything(5)
    by_hand = small_net()
    opt = torch.optim.Adam(by_hand.parameters(), lr=0.05)
    expected = fit(by_hand, tr, te, epochs=2, optimizer=opt, scheduler=one_cycle(opt),
                   scheduler_interval="step", quiet=True)
    assert hist["train_loss"] == expected["train_loss"] and hist["lr"] == expected["lr"]
    for a, b in zip(model.parameters(), by_hand.parameters()):
        assert torch.equal(a, b)
    tr.seed = 0                                   # without reseeding, the loader keeps its seed
    train.train_fresh(small_net, tr, te, epochs=1, seed=5)
    assert tr.seed == 0


def test_train_fresh_steps_a_schedule_object_as_it_is_and_refuses_anything_else():
    tr, te = loaders()

    class Counting:            # as the schedules page's: its step is fit's to call
        steps = 0

        def step(self):
            self.steps += 1

    schedule = Counting()
    train.train_fresh(small_net, tr, te, epochs=1, scheduler=schedule, scheduler_interval="step")
    assert schedule.steps == len(tr)
    with pytest.raises(TypeError, match="scheduler must be a function of the optimiser"):
        train.train_fresh(small_net, tr, te, epochs=1, scheduler=0.1)
    plain = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4), torch.zeros(8).long()))
    with pytest.raises(TypeError, match="needs a loader with a seed"):
        train.train_fresh(small_net, plain, epochs=1, reseed_loader=True)
