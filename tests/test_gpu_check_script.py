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
