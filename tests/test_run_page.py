"""benchmarks/run_page.py: a page's cells in one process, each fit's epochs kept, a window's end clean."""
import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("run_page", ROOT / "benchmarks" / "run_page.py")
run_page = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_page)

FIT = """
import torch, cnnlib
from cnnlib import data
loader = data.TensorLoader(torch.rand(64, 1, 4, 4), torch.randint(0, 2, (64,)), 32, device="cpu")
model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
seen = []
history = cnnlib.fit(model, loader, epochs=EPOCHS, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                     progress=False, verbose=False, device="cpu", on_epoch_end=lambda e, h: seen.append(e))
assert seen == list(range(1, EPOCHS + 1))   # the page's own callback still runs
"""


def page(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A page")] + [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


@pytest.fixture(autouse=True)
def restore_fit(monkeypatch):
    import cnnlib
    monkeypatch.setattr(cnnlib, "fit", cnnlib.train.fit)
    monkeypatch.setattr(cnnlib.train, "fit", cnnlib.train.fit)
    monkeypatch.delenv("CNNLIB_MAX_STEPS", raising=False)
    monkeypatch.chdir(ROOT)   # run_page moves into its work folder


def test_an_interrupt_stops_the_page_cleanly_with_the_epochs_it_reached(tmp_path, capsys):
    path = page(tmp_path / "p.ipynb", "EPOCHS = 2", FIT, "raise KeyboardInterrupt", "never = 1")
    table = tmp_path / "runtimes.csv"
    assert run_page.main([str(path), "--results", str(tmp_path / "out"), "--table", str(table)]) == 0
    record = json.loads((tmp_path / "out" / "p.json").read_text())
    assert (record["status"], record["cell"]) == ("stopped at the window's end", 2)
    assert [row["epoch"] for row in record["fits"][0]] == [1, 2]
    assert "train_loss" in record["fits"][0][-1]
    assert "[fit 1, epoch 2]" in capsys.readouterr().out
    assert not table.exists()   # a stopped page has no runtime to record


def test_injected_code_runs_before_its_cell_and_a_completed_page_is_timed(tmp_path):
    path = page(tmp_path / "p.ipynb", "EPOCHS = 3", FIT)
    table = tmp_path / "runtimes.csv"
    assert run_page.main([str(path), "--results", str(tmp_path / "out"), "--inject", "1:EPOCHS = 1",
                          "--table", str(table)]) == 0
    record = json.loads((tmp_path / "out" / "p.json").read_text())
    assert record["status"] == "completed" and len(record["fits"][0]) == 1
    [row] = run_page_rows(table)
    assert (row["budget"], row["device"]) == (run_page.cnnlib.config.budget_name(), "cpu")
    assert float(row["seconds"]) >= 0


def test_until_stops_before_its_cell_and_records_no_runtime(tmp_path):
    path = page(tmp_path / "p.ipynb", "EPOCHS = 1", FIT, "raise AssertionError('a cell after the stop ran')")
    table = tmp_path / "runtimes.csv"
    assert run_page.main([str(path), "--results", str(tmp_path / "out"), "--until", "2",
                          "--table", str(table)]) == 0
    record = json.loads((tmp_path / "out" / "p.json").read_text())
    assert (record["status"], record["cell"]) == ("completed up to code cell 2", 2)
    assert len(record["fits"][0]) == 1
    assert not table.exists()   # part of a page has no runtime to record


def run_page_rows(table):
    import csv
    return list(csv.DictReader(Path(table).open()))


def test_a_failing_cell_is_recorded_and_raised(tmp_path):
    path = page(tmp_path / "p.ipynb", "x = 1", "1 / 0")
    with pytest.raises(ZeroDivisionError):
        run_page.main([str(path), "--results", str(tmp_path / "out")])
    record = json.loads((tmp_path / "out" / "p.json").read_text())
    assert (record["status"], record["cell"]) == ("failed", 1)
    assert record["error"].startswith("ZeroDivisionError")


def test_inject_names_its_format(tmp_path):
    with pytest.raises(SystemExit, match="CELL:CODE"):
        run_page.main([str(tmp_path / "p.ipynb"), "--results", str(tmp_path), "--inject", "x = 1"])
