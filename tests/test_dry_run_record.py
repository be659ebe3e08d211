"""The record of which pages' full schedules were dry-run with their current code."""
import csv
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("dry_run_record", ROOT / "tools" / "dry_run_record.py")
record = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record)


def _course(tmp_path):
    (tmp_path / "cnnlib").mkdir()
    (tmp_path / "cnnlib" / "budget.py").write_text("SHRINK = {}\n")
    (tmp_path / "chapters" / "01").mkdir(parents=True)
    for name in ("a", "b"):
        page = {"cells": [{"cell_type": "markdown", "source": ["# A page"]},
                          {"cell_type": "code", "source": [f"plan = budget.schedule(epochs={len(name)})"],
                           "outputs": []}]}
        (tmp_path / "chapters" / "01" / f"{name}.ipynb").write_text(json.dumps(page))
    return ["chapters/01/a.ipynb", "chapters/01/b.ipynb"]


def _edit(path, cell, text):
    page = json.loads(path.read_text())
    page["cells"][cell]["source"] = [text]
    path.write_text(json.dumps(page))


def test_fingerprint_follows_code_and_budgets_not_prose(tmp_path):
    pages = _course(tmp_path)
    before = record.fingerprint(pages[0], tmp_path)
    _edit(tmp_path / pages[0], 0, "# Another title")                       # prose: same
    assert record.fingerprint(pages[0], tmp_path) == before
    _edit(tmp_path / pages[0], 1, "plan = budget.schedule(epochs=20)")      # a schedule: changed
    assert record.fingerprint(pages[0], tmp_path) != before
    after_edit = record.fingerprint(pages[0], tmp_path)
    (tmp_path / "cnnlib" / "budget.py").write_text("SHRINK = {'cpu': {}}\n")  # the budgets: changed
    assert record.fingerprint(pages[0], tmp_path) != after_edit


def test_update_records_passing_pages_and_their_footprint_and_changed_lists_the_rest(tmp_path):
    pages = _course(tmp_path)
    rec, table = tmp_path / "record.tsv", tmp_path / "footprint.csv"
    assert record.changed(pages, rec, tmp_path) == pages                     # nothing recorded yet
    log = record.footprint_log(pages[0], tmp_path)
    log.parent.mkdir(parents=True)
    log.write_text("page,label,flops_per_step\nchapters/01/a.ipynb,LeNet,10\n")
    results = tmp_path / "results.tsv"
    results.write_text("notebook\tpeak_rss_mib\tseconds\tresult\n"
                       f"{pages[0]}\t900\t12.5\tok\n{pages[1]}\t800\t3.0\tFAILED\n")
    record.update(results, rec, tmp_path, table)
    assert record.changed(pages, rec, tmp_path) == [pages[1]]                # the failed one stays
    rows = list(csv.DictReader(table.open()))
    assert [(r["page"], r["flops_per_step"]) for r in rows] == [(pages[0], "10")]
    log.write_text("page,label,flops_per_step\nchapters/01/a.ipynb,LeNet,20\nchapters/01/a.ipynb,VGG,30\n")
    record.update(results, rec, tmp_path, table)                             # a re-run replaces the page's rows
    assert [r["flops_per_step"] for r in csv.DictReader(table.open())] == ["20", "30"]
    _edit(tmp_path / pages[0], 1, "plan = budget.schedule(epochs=99)")
    assert record.changed(pages, rec, tmp_path) == pages
