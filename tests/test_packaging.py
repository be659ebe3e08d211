"""requirements.txt is cnnlib's dependency list and the Colab bootstrap's install list."""
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def requirement_lines(path):
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_every_requirement_parses_as_setuptools_reads_it():
    for line in requirement_lines(ROOT / "requirements.txt"):
        Requirement(line)   # raises on a trailing comment or a pip option, which setuptools rejects


def test_pyproject_reads_its_dependencies_from_requirements_txt():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "dependencies" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"] == {"file": ["requirements.txt"]}


def test_colab_keeps_its_own_stack_because_nothing_is_pinned():
    for line in requirement_lines(ROOT / "requirements.txt"):
        assert "==" not in line and "<" not in str(Requirement(line).specifier), line
