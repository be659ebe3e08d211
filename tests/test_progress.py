"""progress.in_notebook: which shells get the live status line and plot."""
import sys
import types

import pytest

from cnnlib import progress


class ZMQInteractiveShell:   # named as ipykernel's, the shell of every Jupyter kernel
    pass


class Shell(ZMQInteractiveShell):   # as google.colab._shell.Shell
    pass


Shell.__module__ = "google.colab._shell"


class TerminalInteractiveShell:   # IPython in a terminal
    pass


def ipython_running(monkeypatch, shell):
    fake = types.ModuleType("IPython")
    fake.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", fake)


@pytest.mark.parametrize("shell, expected", [
    (Shell(), True), (ZMQInteractiveShell(), True), (TerminalInteractiveShell(), False), (None, False)],
    ids=["colab", "jupyter", "terminal", "plain python"])
def test_in_notebook_knows_colab_and_jupyter_kernels(monkeypatch, shell, expected):
    ipython_running(monkeypatch, shell)
    assert progress.in_notebook() is expected


def test_colab_gets_the_live_line_and_plot(monkeypatch):
    ipython_running(monkeypatch, Shell())
    bar = progress.Progress(total_epochs=2)
    assert (bar.notebook, bar.enabled, bar.live_plot) == (True, True, True)


def test_without_ipython_imported_there_is_no_notebook(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert progress.in_notebook() is False


def test_epoch_summary_wraps_to_the_column_and_keeps_every_pair():
    from cnnlib.progress import summary_text
    row = dict(epoch=6, train_loss_d=1.03, train_loss_g=1.096, train_d_real=0.6196, train_d_fake=0.3646,
               lr=0.0002, seconds=12.72, eval_seconds=2.674e-06, examples_per_s=1570)
    text = summary_text(row)
    assert max(map(len, text.splitlines())) <= 78 and len(text.splitlines()) > 1
    assert text.split() == summary_text(row, width=10_000).split()   # the same pairs, only wrapped
    assert summary_text({"epoch": 1, "val_acc": 0.5}) == "epoch 1  val_acc 0.5"
