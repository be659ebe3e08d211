"""fit's second round of guards: no checkpoint loses data, no step is silently wrong."""
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlib import checkpoint as ckpt
from cnnlib import data, gan, train
from cnnlib.models import dcgan
from cnnlib.train import NonFiniteLossError, fit

from test_train import blobs, loaders, small_net


def one_batch_loader(seed=0):
    """One batch per epoch: the batch that breaks the weights is the last of its epoch."""
    return data.TensorLoader(*blobs(32, seed), 32, drop_last=True, device="cpu")


def sgd(model, lr=0.1):
    return torch.optim.SGD(model.parameters(), lr=lr)


def toy_gan(seed=0):
    torch.manual_seed(seed)
    pair = gan.GAN(dcgan.toy_generator(), dcgan.toy_discriminator())
    opts = [torch.optim.Adam(pair.generator.parameters(), 1e-3), torch.optim.Adam(pair.discriminator.parameters(), 1e-3)]
    points = gan.mixture_sample(gan.ring_centers(), 256, 0.05, torch.Generator().manual_seed(0))
    loader = data.TensorLoader(points, torch.zeros(256), 64, shuffle=True, drop_last=True, device="cpu")
    return pair, opts, loader


def quiet(**kwargs):
    return dict(device="cpu", progress=False, verbose=False, **kwargs)


# ---- data lost -------------------------------------------------------------------------------

def test_nan_weights_from_a_finite_loss_never_replace_a_good_checkpoint(tmp_path):
    model, calls = small_net(), []

    def nan_gradient_in_epoch_2(model, batch):  # sqrt of a zero distance: loss finite, gradient NaN
        calls.append(1)
        loss, metrics = train.classification_loss(model, batch)
        if len(calls) == 2:
            w = model[1].weight
            loss = loss + ((w - w.detach()) ** 2).sum().sqrt()
        return loss, metrics

    path = tmp_path / "run.pt"
    with pytest.raises(NonFiniteLossError, match=r"(?s)after epoch 2 .*model's 1\.weight.*NaN.*not overwritten"
                                                 r".*run\.pt holds epoch 1"):
        fit(model, one_batch_loader(), epochs=3, optimizer=sgd(model), loss_fn=nan_gradient_in_epoch_2,
            checkpoint=path, **quiet())
    saved = ckpt.read(path)
    assert saved["epoch"] == 1 and all(torch.isfinite(v).all() for v in saved["model"].values())


def test_non_finite_optimiser_state_is_named_and_not_saved():
    model = small_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 1, 4, 4)).sum().backward()
    opt.step()
    assert ckpt.first_non_finite(model, [opt]) is None
    opt.state[model[4].bias]["momentum_buffer"][0] = float("inf")
    assert ckpt.first_non_finite(model, [opt]) == "optimiser 0's momentum_buffer of 4.bias"


def test_a_gan_whose_losses_go_nan_stops_before_the_checkpoint(tmp_path):
    pair, opts, loader = toy_gan()
    inner, calls = gan.GANStep(pair, *opts), []

    def diverging(batch):
        calls.append(1)
        out = inner(batch)
        if len(calls) > len(loader):  # epoch 2 on
            out["loss_d"] = out["loss_d"] * float("nan")
        return out

    path = tmp_path / "gan.pt"
    with pytest.raises(NonFiniteLossError, match=r"(?s)the loss_d became NaN.*epoch 2.*gan\.pt holds epoch 1"):
        fit(pair, loader, epochs=3, optimizer=opts, train_step=diverging, checkpoint=path, **quiet())
    assert ckpt.read(path)["epoch"] == 1


def gan_run(epochs, path=None, resume=False, seed=0, **kwargs):
    pair, opts, loader = toy_gan(seed)
    fit(pair, loader, epochs=epochs, train_step=gan.GANStep(pair, *opts), checkpoint=path, resume=resume,
        **quiet(**kwargs))
    return pair


@pytest.mark.parametrize("given", [None, "generator's only"])
def test_a_gan_resumes_whole_with_the_optimisers_taken_from_its_step(tmp_path, given):
    def optimizer(opts):
        return None if given is None else [opts[0]]

    straight = gan_run(4)
    path = tmp_path / "gan.pt"
    pair, opts, loader = toy_gan()
    fit(pair, loader, epochs=2, optimizer=optimizer(opts), train_step=gan.GANStep(pair, *opts), checkpoint=path,
        **quiet())
    assert len(ckpt.read(path)["optimizers"]) == 2
    pair, opts, loader = toy_gan(seed=123)
    fit(pair, loader, epochs=4, optimizer=optimizer(opts), train_step=gan.GANStep(pair, *opts), checkpoint=path,
        resume=True, **quiet())
    for a, b in zip(straight.state_dict().values(), pair.state_dict().values()):
        assert torch.equal(a, b)


def two_player_step(a, b, opt_a, opt_b):
    def step(batch):  # no .optimizers: fit cannot know what it steps
        x, y = batch
        out = {}
        for name, net, opt in (("a", a, opt_a), ("b", b, opt_b)):
            opt.zero_grad()
            loss = F.cross_entropy(net(x.flatten(1)), y)
            loss.backward()
            opt.step()
            out[f"loss_{name}"] = loss.detach()
        return out
    return step


def two_players():
    a, b = nn.Linear(16, 2), nn.Linear(16, 2)
    opt_a, opt_b = sgd(a), sgd(b)
    return nn.ModuleDict({"a": a, "b": b}), two_player_step(a, b, opt_a, opt_b), opt_a, opt_b


def test_a_train_step_without_optimisers_is_refused_a_checkpoint(tmp_path):
    both, step, _, _ = two_players()
    with pytest.raises(ValueError, match=r"train_step.*checkpoint.*optimizer=\[\.\.\.\]"):
        fit(both, loaders()[0], epochs=1, train_step=step, checkpoint=tmp_path / "run.pt", **quiet())
    assert not (tmp_path / "run.pt").exists()
    fit(both, loaders()[0], epochs=1, train_step=step, **quiet())  # nothing to checkpoint: fine


def test_a_checkpointed_train_step_warns_about_parameters_in_no_optimiser(tmp_path):
    both, step, opt_a, _ = two_players()
    with pytest.warns(UserWarning, match=r"2 of the model's 4 .*checkpoint will not hold.*b\.weight"):
        fit(both, loaders()[0], epochs=1, optimizer=[opt_a], train_step=step, checkpoint=tmp_path / "r.pt",
            **quiet())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(both, loaders()[0], epochs=1, optimizer=[opt_a], train_step=step, **quiet())  # no checkpoint


def test_resuming_with_the_optimisers_swapped_is_refused(tmp_path):
    path = tmp_path / "gan.pt"
    pair, opts, loader = toy_gan()
    fit(pair, loader, epochs=1, optimizer=opts, train_step=gan.GANStep(pair, *opts), checkpoint=path, **quiet())
    pair, opts, loader = toy_gan()
    before = [p.clone() for p in pair.parameters()]
    with pytest.raises(ckpt.CheckpointError, match=r"optimiser 0 holds generator\..* in the checkpoint but "
                                                   r"discriminator\..* here.*order"):
        fit(pair, loader, epochs=2, optimizer=opts[::-1], train_step=gan.GANStep(pair, *opts), checkpoint=path,
            resume=True, **quiet())
    assert all(torch.equal(a, b) for a, b in zip(before, pair.parameters()))


@pytest.mark.parametrize("kind", ["state_dict", "text"])
def test_a_file_that_is_not_a_checkpoint_is_never_overwritten(tmp_path, kind):
    path, model = tmp_path / "lenet.pt", small_net()
    if kind == "state_dict":
        torch.save(model.state_dict(), path)
    else:
        path.write_text("my notes\n")
    before = path.read_bytes()
    with pytest.raises(ckpt.CheckpointError, match=r"lenet\.pt exists and is not a cnnlib checkpoint.*will not "
                                                   r"overwrite"):
        fit(model, loaders()[0], epochs=1, optimizer=sgd(model), checkpoint=path, **quiet())
    assert path.read_bytes() == before


def test_a_checkpoint_path_that_is_a_directory_is_refused_before_training(tmp_path):
    model, steps = small_net(), []
    (tmp_path / "adir").mkdir()
    with pytest.raises(ckpt.CheckpointError, match=r"adir' is a directory; name a file"):
        fit(model, loaders()[0], epochs=1, optimizer=sgd(model), checkpoint=tmp_path / "adir",
            loss_fn=lambda m, b: steps.append(1) or train.classification_loss(m, b), **quiet())
    assert steps == []


def test_a_fresh_run_overwrites_its_own_checkpoint(tmp_path):
    path = tmp_path / "run.pt"
    for epochs in (2, 1):
        model = small_net()
        fit(model, loaders()[0], epochs=epochs, optimizer=sgd(model), checkpoint=path, **quiet())
    assert ckpt.read(path)["epoch"] == 1


# ---- silently wrong: loss_fn ------------------------------------------------------------------

def test_a_loss_fn_that_ignores_its_model_is_refused_after_the_first_backward():
    model, earlier = small_net(), small_net()  # the lambda closes over a model of an earlier cell
    before = [p.clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"no parameter of the optimizer received a gradient.*model it is given"):
        fit(model, loaders()[0], epochs=2, optimizer=sgd(model),
            loss_fn=lambda m, batch: train.classification_loss(earlier, batch), **quiet())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("wrong,message", [
    (lambda loss: loss.item(), r"loss_fn must return the loss as a tensor .*not \.item\(\).*got float"),
    (lambda loss: loss.detach(), r"the loss is detached from the model"),
    (lambda loss: [loss, {}], r"loss_fn must return loss or \(loss, \{name: metric\}\), got a list"),
    (lambda loss: {"loss": loss}, r"loss_fn must return loss or \(loss, \{name: metric\}\), got a dict"),
    (lambda loss: (loss, {"loss": loss * 0}), r"metric named 'loss'.*reserved"),
])
def test_a_loss_fn_returning_what_fit_cannot_use_is_named(wrong, message):
    model = small_net()
    with pytest.raises((TypeError, ValueError), match=message):
        fit(model, loaders()[0], epochs=1, optimizer=sgd(model),
            loss_fn=lambda m, b: wrong(train.classification_loss(m, b)[0]), **quiet())


def test_a_per_example_loss_is_refused_before_any_step():
    model = small_net()
    before = [p.clone() for p in model.parameters()]

    def per_example(model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y, reduction="none")

    with pytest.raises(ValueError, match=r"loss_fn returned a loss of shape \(32,\).*\.mean\(\)"):
        fit(model, loaders()[0], epochs=1, optimizer=sgd(model), loss_fn=per_example, **quiet())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_googlenet_with_aux_heads_under_the_default_loss_names_googlenet_loss():
    from cnnlib.models import googlenet_loss, googlenet_small
    torch.manual_seed(0)
    model = googlenet_small(aux_logits=True, width=0.125)
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    with pytest.raises(TypeError, match=r"returns \(logits, aux\.\.\.\) in training: use loss_fn=googlenet_loss"):
        fit(model, [(x, y)], epochs=1, optimizer=sgd(model), **quiet())
    fit(model, [(x, y)], epochs=1, optimizer=sgd(model), loss_fn=googlenet_loss, **quiet())


# ---- silently wrong: train_step ---------------------------------------------------------------

def test_a_train_step_steps_the_schedulers_each_step_when_asked():
    pair, opts, loader = toy_gan()
    scheds = [torch.optim.lr_scheduler.StepLR(opt, 1, 0.5) for opt in opts]
    fit(pair, loader, epochs=1, optimizer=opts, scheduler=scheds, scheduler_interval="step",
        train_step=gan.GANStep(pair, *opts), **quiet())
    assert len(loader) == 4
    assert [opt.param_groups[0]["lr"] for opt in opts] == [1e-3 * 0.5 ** 4] * 2


@pytest.mark.parametrize("kwargs,message", [
    (dict(clip_grad_norm=1.0), r"clip_grad_norm.*train_step.*clip inside your train_step"),
    (dict(val=True), r"train_step and a val_loader need eval_fn"),
])
def test_train_step_arguments_that_would_do_nothing_or_the_wrong_thing_are_refused(kwargs, message):
    pair, opts, loader = toy_gan()
    val = loader if kwargs.pop("val", False) else None
    with pytest.raises(ValueError, match=message):
        fit(pair, loader, val, epochs=1, optimizer=opts, train_step=gan.GANStep(pair, *opts), **quiet(**kwargs))


@pytest.mark.parametrize("returned", [None, torch.tensor(1.0)])
def test_a_train_step_must_return_a_dict_of_metrics(returned):
    model = small_net()
    with pytest.raises(TypeError, match=r"train_step must return a dict of metrics.*got (NoneType|Tensor)"):
        fit(model, loaders()[0], epochs=1, optimizer=sgd(model), train_step=lambda batch: returned, **quiet())
