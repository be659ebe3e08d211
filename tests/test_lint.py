"""cnnlib passes ruff: the rules and the complexity ceiling (15) are in pyproject.toml."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing_in_cnnlib():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "cnnlib"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_fit_stays_readable_in_one_sitting():
    """At most about 60 lines of body (ruff checks its complexity)."""
    import ast
    tree = ast.parse((ROOT / "cnnlib" / "train.py").read_text())
    fit = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "fit")
    body = fit.body[1:]  # after the docstring
    assert fit.end_lineno - body[0].lineno + 1 <= 62


def test_no_file_of_cnnlib_is_excused_from_a_rule():
    tomllib = pytest.importorskip("tomllib")   # Python 3.11+
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert lint["mccabe"]["max-complexity"] == 15 and "C901" in lint["select"]
    assert not lint.get("per-file-ignores"), lint.get("per-file-ignores")
    noqa = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "cnnlib").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if "noqa: C901" in line]
    assert not noqa, f"complexity excused by noqa: {noqa}"
