import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from cnnlib.history import History  # noqa: E402


def history():
    h = History()
    h.append(epoch=1, train_loss=1.0, train_acc=0.5, val_loss=1.2, val_acc=0.4, seconds=2.0)
    h.append(epoch=2, train_loss=0.6, train_acc=0.7, val_loss=0.9, val_acc=0.6, seconds=2.0)
    h.append(epoch=3, train_loss=0.4, train_acc=0.8, val_loss=1.0, val_acc=0.65, seconds=2.0)
    return h


def test_columns_best_and_round_trip():
    h = history()
    assert h["val_acc"] == [0.4, 0.6, 0.65] and h.last["epoch"] == 3
    assert h.best("val_loss")["epoch"] == 2 and h.best("val_acc")["epoch"] == 3
    copy = History()
    copy.load_state_dict(h.state_dict())
    assert copy.rows == h.rows


def test_plot_groups_losses_and_accuracies():
    h = history()
    assert h.metric_groups() == {"loss": ["train_loss", "val_loss"], "acc": ["train_acc", "val_acc"]}
    fig = h.plot()
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "acc"]
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]


def test_repr_is_a_table():
    lines = repr(history()).splitlines()
    assert len(lines) == 4 and lines[0].split()[:3] == ["epoch", "train_loss", "train_acc"]


def test_best_asks_which_way_is_better_for_other_names():
    h = history()
    for row, err in zip(h.rows, (0.6, 0.3, 0.35)):
        row["val_err"] = err
    with pytest.raises(ValueError, match="mode='min' or mode='max'"):
        h.best("val_err")
    assert h.best("val_err", mode="min")["epoch"] == 2 and h.best("val_err", mode="max")["epoch"] == 1


def test_plot_fits_the_books_column_whatever_the_number_of_metrics():
    for names in (["loss"], ["loss", "acc"], ["loss_d", "loss_g", "d_real", "d_fake"], list("abcde")):
        h = History()
        for epoch in (1, 2):
            h.append(epoch=epoch, **{f"train_{n}": float(epoch) for n in names})
        fig = h.plot()
        assert fig.get_size_inches()[0] <= 6.8
        assert sum(ax.get_visible() for ax in fig.axes) == len(names)


def test_any_name_with_loss_is_better_low_as_for_early_stopping():
    from cnnlib.history import direction
    h = History()
    for epoch, (loss_g, loss_d) in enumerate([(2.0, 0.3), (1.0, 0.6), (1.5, 0.5)], start=1):
        h.append(epoch=epoch, val_loss_g=loss_g, val_loss_d=loss_d)
    assert h.best("val_loss_g")["epoch"] == 2 and h.best("val_loss_d")["epoch"] == 1
    assert direction("val_loss_g") == direction("val_loss") == "min" and direction("train_acc") == "max"
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', got 'low'"):
        direction("val_loss", "low")


def test_repr_fits_the_book_column_by_wrapping_columns_into_blocks():
    from cnnlib.history import WIDTH
    row = dict(epoch=1, train_loss_d=0.4, train_loss_g=2.2, train_d_real=0.86, train_d_fake=0.16,
               lr=2e-4, seconds=11.8, eval_seconds=2e-6, examples_per_s=1689)
    text = repr(History([row, {**row, "epoch": 2}]))
    lines = text.splitlines()
    assert max(map(len, lines)) <= WIDTH
    blocks = text.split("\n\n")
    assert len(blocks) == 2 and all(b.split()[0] == "epoch" for b in blocks)  # each block starts with epoch
    headers = [name for b in blocks for name in b.splitlines()[0].split()]
    assert headers.count("epoch") == 2 and set(headers) == set(row)          # no column lost
    assert blocks[1].splitlines()[2].split() == ["2", "0.0002", "11.8", "2e-06", "1689"]


def test_plot_ticks_whole_epochs_only():
    h = History([{"epoch": e, "train_loss": 1 / e} for e in range(1, 4)])  # matplotlib would tick 1.5
    fig = h.plot()
    ticks = fig.axes[0].get_xticks()
    assert len(ticks) > 1 and all(float(t).is_integer() for t in ticks)
