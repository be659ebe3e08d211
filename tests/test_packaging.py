"""requirements.txt is cnnlib's dependency list and the Colab bootstrap's install list."""
import ast
import importlib.metadata as md
import json
import sys
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def top_level_imports(source):
    """The top-level module names a notebook cell imports (IPython magics dropped)."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def requirement_closure():
    """requirements.txt's distributions and, installed here, everything they depend on."""
    todo = [Requirement(line).name for line in requirement_lines(ROOT / "requirements.txt")]
    seen = set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [Requirement(r).name for r in requires if "extra ==" not in r]
    return seen


# The Jupyter kernel itself brings these; a notebook cannot run without them.
KERNEL_MODULES = {"IPython", "ipykernel", "matplotlib_inline"}


def test_every_package_a_notebook_imports_is_a_requirement():
    provided = requirement_closure()
    distributions = md.packages_distributions()
    local = {"cnnlib", "google"}     # this package; `google.colab` only in Colab's bootstrap branch
    missing = set()
    for path in sorted((ROOT / "chapters").glob("*/*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            for module in top_level_imports("".join(cell["source"])):
                if module in sys.stdlib_module_names or module in local | KERNEL_MODULES:
                    continue
                names = {canonicalize_name(d) for d in distributions.get(module, [module])}
                if not names & provided:
                    missing.add(f"{module} ({path.relative_to(ROOT)})")
    assert not missing, f"imported by notebooks, not in requirements.txt: {sorted(missing)}"
