"""tools/execute_notebooks.py on tiny generated notebooks (each run starts one small kernel)."""
import csv
import importlib.util
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "tools" / "execute_notebooks.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)


def notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A page")]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "some-local-env", "display_name": "mine", "language": "python"}
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="stale\n")]
    nb.cells[1].execution_count = 42
    nb.cells[1].metadata["execution"] = {"iopub.execute_input": "2026-01-01"}
    nbformat.write(nb, path)
    return path


DESCRIBE = 'print("budget: cpu | device: cpu | torch 9.9.9")'


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tool, "load_average", lambda: 0.0)
    return tmp_path


def test_without_store_the_notebook_is_untouched(here):
    path = notebook(here / "page.ipynb", "x = 6 * 7", "print(x)")
    before = path.read_text()
    assert tool.main([str(path)]) == 0
    assert path.read_text() == before
    executed = nbformat.read(here / "_build" / "executed" / "page.ipynb", as_version=4)
    assert executed.cells[2].outputs[0]["text"] == "42\n"
    assert not (here / "runtimes.csv").exists()


def test_store_writes_the_clean_form_and_a_row(here):
    path = notebook(here / "page.ipynb", DESCRIBE, "1 + 1", "print('three')")
    table = here / "runtimes.csv"
    assert tool.main(["--store", "--table", str(table), str(path)]) == 0
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2, 3]
    assert code[0].outputs[0]["text"].startswith("budget: cpu")       # the stale output is gone
    assert code[1].outputs[0]["execution_count"] == 2 and code[1].outputs[0]["data"]["text/plain"] == "2"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert all("execution" not in c.metadata for c in nb.cells)
    [row] = tool.read_table(table)
    assert (row["notebook"], row["budget"], row["device"], row["torch"]) == ("page.ipynb", "cpu", "cpu", "9.9.9")
    assert float(row["seconds"]) > 0 and int(row["cores"]) == tool.cores()


def test_a_failing_cell_is_named_and_nothing_is_stored(here, capsys):
    path = notebook(here / "broken.ipynb", "a = 1", "raise ValueError('the data is missing')", "print('never')")
    good = notebook(here / "good.ipynb", "print('fine')")
    before = path.read_text()
    assert tool.main(["--store", "--table", str(here / "t.csv"), str(path), str(good)]) == 1
    err = capsys.readouterr().err
    assert "broken.ipynb: code cell 2 of 3" in err and "the data is missing" in err
    assert path.read_text() == before                                   # stored notebook untouched
    assert nbformat.read(good, as_version=4).cells[1].execution_count == 1  # the next one still ran
    partial = nbformat.read(here / "_build" / "executed" / "broken.ipynb", as_version=4)
    assert partial.cells[2].outputs[0]["output_type"] == "error"


def test_a_busy_machine_refuses_to_store_unless_forced(here, monkeypatch, capsys):
    monkeypatch.setattr(tool, "load_average", lambda: tool.cores() + 5.0)
    path = notebook(here / "page.ipynb", DESCRIBE)
    before = path.read_text()
    assert tool.main(["--store", str(path)]) == 2                      # refused before any kernel starts
    assert "busy" in capsys.readouterr().err and path.read_text() == before
    table = here / "t.csv"
    assert tool.main(["--store", "--force", "--table", str(table), str(path)]) == 0
    assert path.read_text() != before and not table.exists()            # stored, but no timing recorded
    assert "not recorded" in capsys.readouterr().out


def test_rows_are_replaced_per_notebook_budget_and_device(tmp_path):
    table = tmp_path / "runtimes.csv"
    row = dict(notebook="a.ipynb", budget="cpu", device="cpu", seconds="10.0", torch="2", date="d",
               cores=2, load="0.1")
    tool.record(table, row)
    tool.record(table, {**row, "device": "NVIDIA T4", "budget": "full", "seconds": "5.0"})
    tool.record(table, {**row, "notebook": "0.ipynb"})
    tool.record(table, {**row, "seconds": "12.5"})                     # same key: replaces the first
    rows = tool.read_table(table)
    assert [(r["notebook"], r["budget"], r["seconds"]) for r in rows] == [
        ("0.ipynb", "cpu", "10.0"), ("a.ipynb", "cpu", "12.5"), ("a.ipynb", "full", "5.0")]
    with table.open() as f:
        assert next(csv.reader(f)) == tool.COLUMNS


def test_smoke_runs_record_no_timing(here):
    path = notebook(here / "page.ipynb", 'print("budget: smoke | device: cpu | torch 9")')
    table = here / "t.csv"
    assert tool.main(["--store", "--table", str(table), str(path)]) == 0
    assert not table.exists()


def test_the_page_showing_the_table_runs_last(tmp_path):
    a, b, c = (tmp_path / f"{n}.ipynb" for n in "abc")
    a.write_text(f"pd.read_csv('{tool.TABLE.name}')")
    b.write_text("{}")
    c.write_text("{}")
    assert tool.order([a, b, c]) == [b, c, a]


def test_a_gpu_name_with_spaces_is_the_rows_device():
    # the runtimes page groups by this column and must never treat it as a torch device string
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("cnnlib.setup()")]
    nb.cells[0].outputs = [nbformat.v4.new_output(
        "stream", text="budget: full | device: Tesla T4 | torch 2.5.1+cu121\n")]
    assert tool.describe(nb) == {"budget": "full", "device": "Tesla T4", "torch": "2.5.1+cu121"}


def test_a_notebook_in_another_folder_runs(here):
    """The kernel runs in the notebook's folder: its sockets must not be found relative to ours."""
    (here / "chapters").mkdir()
    path = notebook(here / "chapters" / "page.ipynb", "print(6 * 7)")
    assert tool.main([str(path)]) == 0
    executed = nbformat.read(here / "_build" / "executed" / "chapters" / "page.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["text"] == "42\n"


def test_a_dry_run_reports_unmet_claims_and_goes_on(here, capsys):
    path = notebook(here / "page.ipynb", "assert 0.1 > 0.75, 'a claim a few steps cannot meet'", "print(42)")
    assert tool.main(["--dry-run", str(path)]) == 0
    executed = nbformat.read(here / "_build" / "executed" / "page.ipynb", as_version=4)
    assert executed.cells[2].outputs[0]["text"] == "42\n"          # the cell after the claim ran
    assert "1 claims not met at this size: code cells [1]" in capsys.readouterr().out


def test_a_dry_run_still_fails_on_any_other_error(here):
    path = notebook(here / "page.ipynb", "raise ValueError('a shape only full gives')", "print(42)")
    assert tool.main(["--dry-run", str(path)]) == 1
    with pytest.raises(SystemExit):
        tool.main(["--dry-run", "--store", str(path)])
