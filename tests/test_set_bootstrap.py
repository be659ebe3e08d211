"""`make bootstrap` (tools/set_bootstrap.py) on a fork: every place that names the repository
follows _config.yml. Run on a temporary copy of the course, never on the real notebooks."""
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import set_bootstrap  # noqa: E402

FORK = "https://github.com/someone/cnn-course"
RUNTIMES = "chapters/90_appendix/02_runtimes.ipynb"
PAGES = (RUNTIMES, "chapters/01_mlp/01_linear_models.ipynb")


@pytest.fixture
def fork(tmp_path):
    """A copy of the course whose _config.yml names a fork and another branch."""
    for page in PAGES:
        (tmp_path / page).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / page, tmp_path / page)
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["repository"].update(url=FORK, branch="dev")
    (tmp_path / "_config.yml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_the_real_course_agrees_with_its_config():
    assert set_bootstrap.main(["--check"]) == 0


def test_a_fork_gets_its_url_in_every_cell_and_link(fork):
    assert set_bootstrap.main(["--root", str(fork), "--check"]) == 1
    assert set_bootstrap.main(["--root", str(fork)]) == 0
    readme = (fork / "README.md").read_text()
    assert "https://colab.research.google.com/github/someone/cnn-course/blob/dev/" in readme
    runtimes = (fork / RUNTIMES).read_text()
    assert "https://raw.githubusercontent.com/someone/cnn-course/dev/chapters/90_appendix/runtimes.csv" in runtimes
    for page in PAGES:
        nb = nbformat.read(fork / page, as_version=4)
        assert set_bootstrap.first_code_cell(nb).source == set_bootstrap.canonical_source(FORK)
    old = set_bootstrap.repository_url().removeprefix("https://github.com/")
    for path in [fork / "README.md", *(fork / page for page in PAGES)]:
        assert old not in path.read_text(), f"{path.name} still names {old}"
    assert set_bootstrap.main(["--root", str(fork), "--check"]) == 0


def test_only_the_links_change(fork):
    config = set_bootstrap.repository()
    ours = f"{config['url'].removeprefix('https://github.com/')}/{config['branch']}"
    before = {page: nbformat.read(fork / page, as_version=4) for page in PAGES}
    set_bootstrap.main(["--root", str(fork)])
    for page in PAGES:
        after = nbformat.read(fork / page, as_version=4)
        bootstrap = set_bootstrap.first_code_cell(after)
        for old, new in zip(before[page].cells, after.cells):
            assert new.get("outputs") == old.get("outputs")
            if new is not bootstrap:
                assert new.source.replace("someone/cnn-course/dev", ours) == old.source


def test_links_to_other_repositories_are_left_alone():
    text = ("see https://github.com/d2l-ai/d2l-en and "
            "https://colab.research.google.com/github/a/b/blob/main/x.ipynb, then https://github.com/a/b.")
    out = set_bootstrap.retarget_links(text, FORK, "dev")
    assert out == ("see https://github.com/d2l-ai/d2l-en and "
                   "https://colab.research.google.com/github/someone/cnn-course/blob/dev/x.ipynb, "
                   "then https://github.com/someone/cnn-course.")
