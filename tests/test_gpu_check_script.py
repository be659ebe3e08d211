"""benchmarks/gpu_check.sh cannot run here (no GPU); what it relies on in cnnlib can be checked."""
import re
from pathlib import Path

from cnnlib import cuda_graph

SCRIPT = (Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh").read_text()


def test_the_graph_self_check_stage_records_the_function_fit_really_calls():
    # Stage 1b replaces a module attribute to record fit's verdicts: it must be the name the graph
    # step looks up when it checks a replay against an eager step, or every verdict is lost.
    patched = re.findall(r"^(\w+)\.(\w+) = recording$", SCRIPT, re.M)
    assert patched == [("graphs", "disagrees")]
    assert re.search(r"from cnnlib import cuda_graph as graphs\b", SCRIPT)
    assert "disagrees" in cuda_graph.Stepper._capture_and_check.__code__.co_names


def test_the_comparison_page_keeps_resnet18_where_its_contenders_are_set_and_stops_before_the_eight():
    # Stage 3 keeps ResNet-18 alone on the table of all models: its injection must come after the
    # cell that lists the contenders and before training, and --until must stop before the first
    # cell that looks a network other than ResNet-18 up by name (the rehearsal's first failure).
    import json
    call = re.search(r"09_comparison\.ipynb --until (\d+) \\\n\s+--inject '(\d+):contenders = ", SCRIPT)
    assert call, "stage 3's call of the comparison page changed: update this test"
    until, inject = int(call[1]), int(call[2])
    page = Path(__file__).resolve().parents[1] / "chapters" / "05_modern_cnns" / "09_comparison.ipynb"
    cells = ["".join(c["source"]) for c in json.loads(page.read_text())["cells"] if c["cell_type"] == "code"]
    assert any(re.search(r"^contenders = ", c, re.M) for c in cells[:inject])
    assert not any("train_once(" in c for c in cells[:inject])
    lookups = [i for i, c in enumerate(cells) if re.search(r'r\["name"\] (== "(?!ResNet-18")|in \()', c)]
    assert lookups and min(lookups) == until
