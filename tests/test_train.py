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
