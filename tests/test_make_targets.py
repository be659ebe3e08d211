"""What the Makefile's student targets print and pass on: `make lab` as root, `make run`."""
import os
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent


def dry_run(*args):
    """The commands make would run (make -n runs nothing, set-up included)."""
    # Run as a newcomer's make, not as a sub-make of `make test` (which prints its directories).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = subprocess.run(["make", "--no-print-directory", "-n", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()[-1]


def test_lab_passes_allow_root_exactly_when_run_as_root():
    command = dry_run("lab", "VENV=/venv")
    assert command.startswith("/venv/bin/jupyter lab") and command.endswith("chapters/")
    assert ("--allow-root" in command) == (os.geteuid() == 0), command


def test_lab_takes_jupyterlabs_flags_from_labflags():
    command = dry_run("lab", "VENV=/venv", "LABFLAGS=--no-browser --port 8899")
    assert command == "/venv/bin/jupyter lab --no-browser --port 8899 chapters/"


def test_run_prints_no_kernel_transport_warning(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A page"), nbformat.v4.new_code_cell("print(6 * 7)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "page.ipynb")
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "execute_notebooks.py"), "page.ipynb"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "without encryption" not in out.stderr, out.stderr
    executed = nbformat.read(tmp_path / "_build" / "executed" / "page.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["text"] == "42\n"
