"""Progress that reads well in a terminal and in a notebook.

In a terminal: a tqdm text bar (none when output is not a terminal, as in CI logs).
In a notebook: one status line and the live training curves, redrawn in place through display
handles (no widgets, nothing on stderr), so the stored output is just the final state.
Seen on every training page from chapters/00_introduction/02_lenet_end_to_end.ipynb on.
"""
import sys

from tqdm import tqdm

from ._text import COLUMN


def in_notebook():
    """True in a Jupyter kernel, Colab's included: its shell, google.colab._shell.Shell, is a subclass
    of ipykernel's ZMQInteractiveShell, so the whole class hierarchy is asked, not the name alone."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return shell is not None and any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


class Progress:
    def __init__(self, total_epochs, enabled=None, live_plot=None, summary=True):
        self.notebook = in_notebook()
        self.enabled = (self.notebook or sys.stderr.isatty()) if enabled is None else enabled
        self.summary = summary
        self.live_plot = self.notebook if live_plot is None else live_plot
        self.total_epochs = total_epochs
        self.bar = self.line = self.figure = None

    def start_epoch(self, epoch, steps):
        if not self.enabled:
            return
        if self.notebook:
            from IPython.display import display
            text = self._text(epoch, 0, steps, None)
            if self.line is None:
                self.line = display(_Text(text), display_id=True)
            else:
                self.line.update(_Text(text))
        else:
            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.total_epochs}", leave=False,
                            file=sys.stderr, dynamic_ncols=True)
        self.epoch, self.steps = epoch, steps

    def step(self, done, loss=None):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = done
            if loss is not None:
                self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self.bar.refresh()
        elif self.line is not None:
            self.line.update(_Text(self._text(self.epoch, done, self.steps, loss)))

    def end_epoch(self, history):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        summary = summary_text(history.last)
        if self.line is not None:
            self.line.update(_Text(summary))
        elif self.summary:
            print(summary, flush=True)
        if self.live_plot and self.notebook:
            self._draw(history)

    def _draw(self, history):
        import matplotlib.pyplot as plt
        from IPython.display import display
        fig = history.plot()
        if self.figure is None:
            self.figure = display(fig, display_id=True)
        else:
            self.figure.update(fig)
        plt.close(fig)

    def _text(self, epoch, done, steps, loss):
        text = f"epoch {epoch + 1}/{self.total_epochs}: step {done}" + (f"/{steps}" if steps else "")
        return text + (f", loss {loss:.4f}" if loss is not None else "")


def summary_text(row, width=COLUMN):
    """An epoch's row as "name value" pairs, wrapped to `width` characters (the book's column)."""
    pairs = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()]
    lines = [""]
    for pair in pairs:
        if lines[-1] and len(lines[-1]) + 2 + len(pair) > width:
            lines.append("  ")
        lines[-1] += ("  " if lines[-1].strip() else "") + pair
    return "\n".join(lines)


class _Text:
    """Plain text for a display handle (IPython shows str objects with quotes)."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text
