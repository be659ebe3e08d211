"""tools/collect_results.py: chapter 5's per-page results, read from the stored pages."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import collect_results as cr  # noqa: E402


def test_the_results_file_says_what_the_stored_pages_print():
    stored = {(r["model"], r["budget"]): r for r in cr.read()}
    for row in cr.collect():
        key = (row["model"], row["budget"])
        assert key in stored, f"{key} missing: run python tools/collect_results.py"
        assert stored[key] == {k: str(v) for k, v in row.items()}, (
            f"{row['page']} was stored again: run python tools/collect_results.py, then store "
            f"09_comparison")


def test_every_model_of_the_table_has_a_source():
    cells = json.loads((cr.CHAPTER / "09_comparison.ipynb").read_text())["cells"]
    source = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    contenders = source[source.index("contenders = ["):].split("]\n", 1)[0]   # the trained models
    assert set(re.findall(r'\("([^"]+)", lambda', contenders)) == {s.model for s in cr.SOURCES}


def fake_page(folder, source, printed, setting="budget: full | device: cuda | torch 2.9"):
    cells = [{"cell_type": "code", "id": "boot", "source": "", "outputs": [{"output_type": "stream",
                                                                            "text": setting + "\n"}]},
             {"cell_type": "code", "id": "plan", "source": "", "outputs": [{
                 "output_type": "stream", "text": "full budget: 30 epochs, batch 128, train all,\n"
                                                  "  test all, width=1.0, seeds=(0, 1, 2)\n"}]},
             {"cell_type": "code", "id": source.cell, "source": "", "outputs": [{
                 "output_type": "stream", "text": printed}]}]
    (folder / f"{source.page}.ipynb").write_text(json.dumps({"cells": cells}))


def test_a_run_under_full_is_read_and_added_beside_the_cpu_rows(tmp_path):
    printed = {"LeNet-5": "tanh + average pooling:\n    test accuracy by seed 90.00%, 91.00%, 92.50%\n",
               "ResNet-18": "".join(f"ResNet-32  seed {s}   training error 1.00%   test error {e}%\n"
                                    for s, e in ((0, "5.00"), (1, "6.00"), (2, "7.00")))}
    for source in cr.SOURCES:
        fake_page(tmp_path, source, printed.get(source.model, "test accuracy 50.00%\n"
                                                "vgg11_bn: test accuracy by seed 50.00%\n"
                                                "GAP (paper): test accuracy by seed 50.00%\n"
                                                "test accuracy after epoch 20: 50.00%\n"
                                                "aux heads on :   1 parameters in training, "
                                                "test accuracy 50.00%\n"
                                                "DenseNet (concatenation): test accuracy 50.00%\n"))
    rows = {r["model"]: r for r in cr.collect(tmp_path)}
    assert rows["LeNet-5"]["test_acc"] == "91.17" and rows["LeNet-5"]["runs"] == 3
    assert rows["ResNet-18"]["test_acc"] == "94.00"           # from the test error
    assert rows["LeNet-5"]["schedule"] == "30 epochs of 60,000, width 1.0"
    assert {r["budget"] for r in rows.values()} == {"full"} and rows["NiN"]["device"] == "cuda"
    cpu = cr.collect()
    merged = cr.merge(cpu, list(rows.values()))
    assert len(merged) == 2 * len(cr.SOURCES) and merged[:len(cpu)] == cpu    # cpu rows first, kept
    again = cr.merge(merged, [{**rows["NiN"], "test_acc": "60.00"}])
    assert [r["test_acc"] for r in again if r["model"] == "NiN" and r["budget"] == "full"] == ["60.00"]
    assert len(again) == len(merged)


def test_a_page_whose_printout_changed_is_named(tmp_path):
    for source in cr.SOURCES:
        fake_page(tmp_path, source, "nothing of the kind\n")
    with pytest.raises(LookupError, match="01_lenet, cell 799dd85d: nothing matches"):
        cr.collect(tmp_path)
