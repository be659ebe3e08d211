"""The notebooks follow the course's conventions (CONTRIBUTING.md)."""
import json
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from set_bootstrap import canonical_source, first_code_cell  # noqa: E402

NOTEBOOKS = sorted(p for p in (ROOT / "chapters").glob("*/*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())


def cells(path):
    return json.loads(path.read_text())["cells"]


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_bootstrap_installs_from_the_books_repository(path):
    first_code = next(c for c in cells(path) if c["cell_type"] == "code")
    source = "".join(first_code["source"])
    assert f'"git+{CONFIG["repository"]["url"]}"' in source, "bootstrap URL differs from _config.yml"
    assert "--no-deps" in source and "cnnlib.setup()" in source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_is_the_canonical_bootstrap(path):
    cell = first_code_cell(nbformat.read(path, as_version=4))
    assert cell.source == canonical_source(), "run `make bootstrap` (tools/set_bootstrap.py)"
    assert "hide-input" in cell.metadata.get("tags", [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_title_and_a_listed_page(path):
    titles = [line for c in cells(path) if c["cell_type"] == "markdown"
              for line in "".join(c["source"]).splitlines() if line.startswith("# ")]
    assert len(titles) == 1, f"{path.name} has {len(titles)} '#' titles"
    assert str(path.relative_to(ROOT).with_suffix("")) in (ROOT / "_toc.yml").read_text()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernelspec_is_portable(path):
    meta = json.loads(path.read_text())["metadata"]
    assert meta["kernelspec"]["name"] == "python3"
