"""The browser check passes on a tiny book built with the course's _config.yml, and fails when
a figure, its description, an equation, a printed output's width or the table of contents is
broken on purpose."""
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import browser_check  # noqa: E402
import set_alt_text  # noqa: E402

FIGURE_ALT = "A straight line rising from (0, 0) to (1, 1)."

pytestmark = pytest.mark.skipif(
    not (Path(browser_check.CHROMIUM).exists() and Path(browser_check.CHROMEDRIVER).exists()),
    reason="Debian's chromium and chromedriver are not installed (.ci/run installs them)")


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory):
    book = tmp_path_factory.mktemp("book")
    shutil.copytree(ROOT / "tests" / "fixtures" / "tinybook", book, dirs_exist_ok=True)
    # The figure's description, written by the course's own tool, as for the book's notebooks.
    (book / "tools").mkdir()
    (book / "tools" / "alt_text.json").write_text(json.dumps({f"{PAGE}.ipynb": {"cell1": FIGURE_ALT}}))
    assert set_alt_text.main(["--root", str(book)]) == 0
    for name in ("_config.yml", "references.bib", "_static", "_ext"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, book / name)
    # A virtual environment inside the tree, as `make book` makes one: its files are no pages.
    junk = book / ".venv" / "lib" / "site-packages" / "pkg" / "templates"
    junk.mkdir(parents=True)
    (junk / "module.rst").write_text("Junk\n====\n\n.. autoclass:: pkg.Thing\n")
    (junk / "notes.md").write_text("# Junk\n")
    jb = Path(sys.executable).parent / "jupyter-book"
    out = subprocess.run([str(jb), "build", str(book), "-W", "--keep-going"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "WARNING" not in out.stdout + out.stderr
    assert not (book / "_build" / "html" / ".venv").exists()
    return book


def test_a_sound_book_passes(tiny_book):
    report = browser_check.check_book(tiny_book / "_build" / "html", tiny_book)
    assert set(report) == {"index", "chapters/00_demo/01_page"}
    assert report == {page: [] for page in report}


def test_a_broken_figure_equation_and_page_fail(tiny_book, tmp_path):
    html = tmp_path / "html"
    shutil.copytree(tiny_book / "_build" / "html", html)
    for image in (html / "_images").glob("*.png"):
        image.unlink()                                     # the figure is gone
    shutil.rmtree(html / "_static" / "mathjax")            # MathJax is not served: raw TeX
    (html / "stray.html").write_text("<html><body>not in the toc</body></html>")
    report = browser_check.check_book(html, tiny_book)
    page = "\n".join(report["chapters/00_demo/01_page"])
    assert "image not loaded" in page
    assert "raw TeX left untypeset" in page
    assert "console error" in page
    assert report["stray"] == ["page not listed in _toc.yml: stray.html"]


PAGE = "chapters/00_demo/01_page"
WIDE_OUTPUT = ('<div class="cell_output docutils container"><div class="output stream highlight-myst-ansi '
               'notranslate"><div class="highlight"><pre><span></span>' + "epoch 1 | " * 30 + '</pre></div></div></div>')


def with_page_edited(tiny_book, tmp_path, *insertions):
    """A copy of the built book whose demo page has these HTML snippets before its last section end."""
    html = tmp_path / "html"
    shutil.copytree(tiny_book / "_build" / "html", html)
    page = html / f"{PAGE}.html"
    text = page.read_text()
    at = text.rindex("</section>")
    page.write_text(text[:at] + "".join(insertions) + text[at:])
    return html


def test_untypeset_dollar_math_and_an_overwide_output_fail(tiny_book, tmp_path):
    html = with_page_edited(tiny_book, tmp_path, "<p>converges at $O(1/k^2)$ per step</p>", WIDE_OUTPUT)
    report = browser_check.check_book(html, tiny_book)
    assert "raw $...$ left untypeset: '$O(1/k^2)$'" in report[PAGE]
    wide = [line for line in report[PAGE] if "px wide in a" in line]
    assert len(wide) == 1 and wide[0].startswith("output "), report[PAGE]
    width, column = (int(w) for w in wide[0].split()[1:7:5])
    assert width > column > 0
    assert browser_check.failures(report[PAGE]) == report[PAGE]


def test_the_figure_s_alt_text_is_its_description(tiny_book):
    page = (tiny_book / "_build" / "html" / f"{PAGE}.html").read_text()
    assert f'alt="{FIGURE_ALT}"' in page


def test_a_figure_named_by_its_file_fails(tiny_book, tmp_path):
    html = tmp_path / "html"
    shutil.copytree(tiny_book / "_build" / "html", html)
    page = html / f"{PAGE}.html"
    # What Sphinx writes when the cell gives no alt text: the image's path, a hash.
    hashed, found = re.subn(r'<img alt="[^"]*" src="([^"]*_images/[^"]*)"', r'<img alt="\1" src="\1"',
                            page.read_text())
    assert found == 1
    page.write_text(hashed)
    src = re.search(r'<img alt="([^"]*_images/[^"]*)"', hashed)[1]
    report = browser_check.check_book(html, tiny_book)
    assert report[PAGE] == [f"figure without a description (alt {src!r}): {src}"]
    assert browser_check.failures(report[PAGE]) == report[PAGE]


@pytest.mark.parametrize("alt, described", [
    ("", False), ("   ", False), ("../../_images/" + "3f" * 32 + ".png", False), ("e3b0c442" * 8, False),
    ("plot.PNG", False), (FIGURE_ALT, True), ("Loss of each batch against the learning rate, 1e-4 to 10.", True)])
def test_an_alt_text_that_only_names_a_file_is_no_description(alt, described):
    assert browser_check.undescribed(alt) is not described


def test_an_overwide_output_on_a_known_page_is_a_note(tiny_book, tmp_path, monkeypatch):
    monkeypatch.setitem(browser_check.KNOWN_OVERWIDE, PAGE, "fixture")
    html = with_page_edited(tiny_book, tmp_path, WIDE_OUTPUT)
    lines = browser_check.check_book(html, tiny_book)[PAGE]
    assert len(lines) == 1 and lines[0].startswith("note: known over-wide: output ")
    assert browser_check.failures(lines) == []


def test_a_dollar_sign_in_prose_is_not_math():
    assert browser_check.raw_tex("it costs $5 a month, or $50 a year") == []
    assert browser_check.raw_tex("the rate $O(1/k^2)$") == ["raw $...$ left untypeset: '$O(1/k^2)$'"]


def test_no_chromium_profile_is_left_behind(tiny_book, tmp_path, monkeypatch):
    (temp := tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    report = browser_check.check_book(tiny_book / "_build" / "html", tiny_book)
    assert report[PAGE] == []
    assert list(temp.iterdir()) == []


def test_a_folded_solution_is_labelled_as_one(tiny_book):
    page = (tiny_book / "_build" / "html" / f"{PAGE}.html").read_text()
    assert page.count("Show solution") == 1 and page.count("Hide solution") == 1
    assert "Show code cell content" not in page


def page_title(tiny_book, page):
    text = (tiny_book / "_build" / "html" / f"{page}.html").read_text()
    return text[text.index("<title>") + 7:text.index("</title>")]


def test_the_home_page_title_does_not_repeat_the_book_title(tiny_book):
    assert page_title(tiny_book, "index") == "A tiny book"
    assert page_title(tiny_book, PAGE) == "1. A page &#8212; CNNs from the ground up"
    for page in ("index", PAGE):          # the sidebar still names the course on every page
        html = (tiny_book / "_build" / "html" / f"{page}.html").read_text()
        assert '<p class="title logo__title">CNNs from the ground up</p>' in html
