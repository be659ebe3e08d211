"""tools/set_alt_text.py writes each figure's description into its cell's metadata, where
MyST-NB reads it as the image's alt text, and tools/alt_text.json describes every figure of the
book. The script is run on small notebooks in a temporary folder, never on the real ones."""
import base64
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import set_alt_text  # noqa: E402

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n not a real image").decode()
PAGE = "chapters/00_demo/01_page.ipynb"


def figure_cell(cell_id, pngs=1):
    outputs = [new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})
               for _ in range(pngs)]
    return new_code_cell("plot()", id=cell_id, outputs=outputs, execution_count=1)


@pytest.fixture
def course(tmp_path):
    """A course with one notebook: two figure cells (one with two figures), a text cell."""
    nb = new_notebook(cells=[
        new_markdown_cell("# A page", id="title"),
        figure_cell("curves", pngs=2),
        new_code_cell("print(1)", id="text", outputs=[new_output("stream", text="1\n")], execution_count=2),
        figure_cell("grid"),
    ])
    nb.cells[3].metadata["tags"] = ["hide-input"]
    (tmp_path / PAGE).parent.mkdir(parents=True)
    nbformat.write(nb, tmp_path / PAGE)
    (tmp_path / "tools").mkdir()
    return tmp_path


def describe(course, descriptions):
    (course / "tools" / "alt_text.json").write_text(json.dumps(descriptions))


def run(course, *args):
    return set_alt_text.main(["--root", str(course), *args])


def cells(course):
    return {c.id: c for c in nbformat.read(course / PAGE, as_version=4).cells}


def test_descriptions_go_into_the_cells_metadata_and_nothing_else_changes(course):
    describe(course, {PAGE: {"curves": "Loss and accuracy over the epochs.", "grid": "Sixteen digits."}})
    before = cells(course)
    assert run(course, "--check") == 1                  # not written yet
    assert run(course) == 0
    after = cells(course)
    assert after["curves"].metadata == {"mystnb": {"image": {"alt": "Loss and accuracy over the epochs."}}}
    assert after["grid"].metadata == {"tags": ["hide-input"], "mystnb": {"image": {"alt": "Sixteen digits."}}}
    assert after["text"].metadata == before["text"].metadata == {}
    for cell_id in before:
        assert after[cell_id].source == before[cell_id].source
        assert after[cell_id].get("outputs") == before[cell_id].get("outputs")
    assert run(course, "--check") == 0


def test_a_second_run_changes_no_byte(course):
    describe(course, {PAGE: {"curves": "Curves.", "grid": "A grid."}})
    run(course)
    written = (course / PAGE).read_bytes()
    assert run(course) == 0
    assert (course / PAGE).read_bytes() == written


def test_other_image_options_of_a_cell_are_kept(course):
    nb = nbformat.read(course / PAGE, as_version=4)
    nb.cells[1].metadata["mystnb"] = {"image": {"width": "80%", "alt": "old"}, "number_source_lines": True}
    nbformat.write(nb, course / PAGE)
    describe(course, {PAGE: {"curves": "New.", "grid": "A grid."}})
    assert run(course) == 0
    assert cells(course)["curves"].metadata["mystnb"] == {
        "image": {"width": "80%", "alt": "New."}, "number_source_lines": True}


def test_a_changed_description_is_rewritten(course):
    describe(course, {PAGE: {"curves": "Curves.", "grid": "A grid."}})
    run(course)
    describe(course, {PAGE: {"curves": "Curves, better described.", "grid": "A grid."}})
    assert run(course, "--check") == 1
    run(course)
    assert set_alt_text.stored_alt(cells(course)["curves"]) == "Curves, better described."


@pytest.mark.parametrize("descriptions, expected", [
    ({PAGE: {"curves": "Curves."}},
     f"{PAGE}: cell grid draws a figure but has no description in alt_text.json"),
    ({PAGE: {"curves": "Curves.", "grid": "A grid.", "gone": "A figure deleted since."}},
     f"{PAGE}: alt_text.json describes cell gone, which no longer exists"),
    ({PAGE: {"curves": "Curves.", "grid": "A grid.", "text": "Not a figure."}},
     f"{PAGE}: alt_text.json describes cell text, which draws no figure"),
    ({PAGE: {"curves": "Curves.", "grid": "  "}},
     f"{PAGE}: the description of cell grid is empty"),
    ({PAGE: {"curves": "Curves.", "grid": "A grid."}, "chapters/00_demo/02_gone.ipynb": {"x": "X."}},
     "chapters/00_demo/02_gone.ipynb: alt_text.json describes a notebook that does not exist"),
])
def test_check_names_each_mismatch(course, capsys, descriptions, expected):
    describe(course, descriptions)
    run(course)                                          # writes what it can, still reports
    capsys.readouterr()
    assert run(course, "--check") == 1
    assert expected in capsys.readouterr().out.splitlines()


def test_a_figure_cell_without_a_description_is_left_alone(course):
    describe(course, {PAGE: {"curves": "Curves."}})
    assert run(course) == 1
    assert set_alt_text.stored_alt(cells(course)["grid"]) is None


def test_the_file_describes_every_figure_cell_of_the_book():
    descriptions = set_alt_text.load_descriptions()
    problems = []
    for path in set_alt_text.notebooks():
        name = path.relative_to(ROOT).as_posix()
        problems += set_alt_text.coverage_problems(nbformat.read(path, as_version=4),
                                                   descriptions.get(name, {}), name)
    names = {p.relative_to(ROOT).as_posix() for p in set_alt_text.notebooks()}
    problems += [f"{name} is not a notebook of the book" for name in set(descriptions) - names]
    assert problems == []


def test_the_book_s_descriptions_say_something():
    for name, by_cell in set_alt_text.load_descriptions().items():
        for cell_id, text in by_cell.items():
            assert 30 <= len(text) <= 200, f"{name} cell {cell_id}: {len(text)} characters: {text!r}"
            assert not text.lower().rstrip(".").endswith((".png", ".svg")), f"{name} cell {cell_id}"
