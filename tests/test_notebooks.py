"""The notebooks follow the course's conventions (CONTRIBUTING.md): the bootstrap cell, one title,
every notebook listed in _toc.yml, and stored outputs from one clean top-to-bottom run."""
import json
import re
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
def test_one_title(path):
    titles = [line for c in cells(path) if c["cell_type"] == "markdown"
              for line in "".join(c["source"]).splitlines() if line.startswith("# ")]
    assert len(titles) == 1, f"{path.name} has {len(titles)} '#' titles"


def toc_files():
    """The `file:` entries of _toc.yml, root included."""
    toc, files = yaml.safe_load((ROOT / "_toc.yml").read_text()), []

    def walk(entries):
        for entry in entries or []:
            files.append(entry.get("file"))
            walk(entry.get("sections"))
    for part in toc.get("parts", [toc]):
        walk(part.get("chapters"))
    return {toc["root"], *filter(None, files)}


def test_every_notebook_is_a_page_of_the_book():
    listed = toc_files()
    unlisted = [str(p.relative_to(ROOT)) for p in NOTEBOOKS
                if str(p.relative_to(ROOT).with_suffix("")) not in listed]
    assert not unlisted, f"not in _toc.yml: {unlisted}"


def clean_run_problems(nb):
    """Why a notebook's stored outputs are not from one clean run from the top (empty: they are)."""
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    problems = []
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"execution counts {counts[:12]}... are not 1..{len(code)}")
    problems += [f"stored error {o.get('ename')}" for c in code for o in c.get("outputs", [])
                 if o.get("output_type") == "error"]
    if not any(c.get("outputs") for c in code):
        problems.append("no stored outputs")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_are_from_one_clean_run(path):
    problems = clean_run_problems(json.loads(path.read_text()))
    assert not problems, f"re-run it from the top (tools/execute_notebooks.py --store): {problems}"


@pytest.mark.parametrize("nb, problem", [
    ({"cells": [{"cell_type": "code", "execution_count": 1, "outputs": [{"output_type": "stream"}]},
                {"cell_type": "code", "execution_count": 3, "outputs": []}]}, "not 1..2"),
    ({"cells": [{"cell_type": "code", "execution_count": 1,
                 "outputs": [{"output_type": "error", "ename": "ValueError"}]}]}, "stored error ValueError"),
    ({"cells": [{"cell_type": "code", "execution_count": 1, "outputs": []}]}, "no stored outputs"),
])
def test_the_clean_run_check_catches_a_rerun_cell_an_error_and_no_outputs(nb, problem):
    assert any(problem in p for p in clean_run_problems(nb))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernelspec_is_portable(path):
    meta = json.loads(path.read_text())["metadata"]
    assert meta["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_cell_the_student_edits_is_never_folded(path):
    """The exercise cell whose answers start as None ("not answered yet") shows in the book."""
    folded = [c["source"][0] if isinstance(c["source"], list) else c["source"].splitlines()[0]
              for c in cells(path) if c["cell_type"] == "code" and "not answered yet" in "".join(c["source"])
              and {"hide-input", "hide-cell", "remove-input", "remove-cell"} & set(c["metadata"].get("tags", []))]
    assert not folded, f"the exercise cell is folded in the book: {folded}"


def glossary_entries():
    """{English term: [the other names of its entry]} from glossary.md's glossary directive."""
    body = (ROOT / "glossary.md").read_text().split("```{glossary}")[1].split("```")[0]
    entries = {}
    for block in body.strip().split("\n\n"):
        names = [line for line in block.splitlines() if line and not line.startswith(" ")]
        entries[names[0]] = names[1:]
    return entries


def linked_terms(path):
    text = "".join("".join(c["source"]) for c in cells(path) if c["cell_type"] == "markdown")
    return {m.strip() for m in re.findall(r"\{term\}`(?:[^`<]*<)?([^`<>]+)>?`", text)}


def test_every_glossary_term_has_its_korean_name():
    hangul = re.compile(r"[\uac00-\ud7a3]")
    missing = [term for term, others in glossary_entries().items() if not any(map(hangul.search, others))]
    assert not missing, f"no Korean name under: {missing}"


def test_every_glossary_term_is_linked_from_a_page_and_every_link_is_a_term():
    entries = glossary_entries()
    names = set(entries) | {n for others in entries.values() for n in others}
    links = {path.name: linked_terms(path) for path in NOTEBOOKS}
    unknown = {page: sorted(terms - names) for page, terms in links.items() if terms - names}
    assert not unknown, f"{{term}} links to no glossary entry: {unknown}"
    never = sorted(set(entries) - set().union(*links.values()))
    assert not never, f"glossary terms no page links: {never}"
