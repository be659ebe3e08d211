"""Every exercise checks the student's answer, and every solution is folded and never overwrites it.

    python tools/exercises.py             # fold every solution cell for Colab and JupyterLab
    python tools/exercises.py --check     # change nothing; list the problems below, exit 1 if any

The rules (CONTRIBUTING.md, "Exercises"):
- A page's exercises are the numbered items of its "## Exercises" section. Each has a solution
  cell, or is open: its text holds "*Open:*" followed by the outcome to expect and how to check it.
- A solution is a code cell tagged `hide-cell` whose first line is `# @title Solution 1` (or
  `# @title Solutions 1 and 2`, `# @title Solutions 1 to 3`). The book folds it behind "Show solution"; Colab folds a cell whose
  metadata has `"cellView": "form"` and whose first line is a `# @title` comment; JupyterLab
  collapses a cell with `jupyter.source_hidden`. This script writes both keys.
- A visible check cell calls `exercise.check(...)` on the student's answer. No solution cell
  assigns a name that a check cell reads, so running a solution cannot turn a wrong answer right.
"""
import argparse
import ast
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
TITLE = re.compile(r"#\s*@title\s+Solutions?\s+(.*)")
OPEN = "*Open:*"


def is_solution(cell):
    return cell.cell_type == "code" and "hide-cell" in cell.metadata.get("tags", [])


def exercise_items(nb):
    """{number: text} of the numbered items in the "## Exercises" section (markdown only)."""
    items, inside, number = {}, False, None
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                inside, number = line.strip() == "## Exercises", None
            elif inside and (m := re.match(r"(\d+)\. (.*)", line)):
                number = int(m[1])
                items[number] = m[2]
            elif inside and number is not None and line.startswith("   "):
                items[number] += " " + line.strip()
    return items


def solved(nb):
    """The exercise numbers that the solution cells' titles name."""
    numbers = set()
    for cell in filter(is_solution, nb.cells):
        if m := TITLE.match(cell.source.splitlines()[0] if cell.source else ""):
            for low, high in re.findall(r"(\d+)(?:\s+to\s+(\d+))?", m[1]):   # "1 and 2", "1 to 3"
                numbers |= set(range(int(low), int(high or low) + 1))
    return numbers


def _names(source, context):
    """The names a cell assigns (ast.Store) or reads (ast.Load; a lambda's or a comprehension's
    own variables are not read from the page)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names, own = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, context):
            names.add(node.id)
        elif context is ast.Store and isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.Lambda):
            own |= {a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg)}
        elif isinstance(node, ast.comprehension):
            own |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    return names - own if context is ast.Load else names


def problems(nb):
    """What breaks the rules on one page, in words (empty when it keeps them)."""
    found, items = [], exercise_items(nb)
    done = solved(nb)
    for number, text in sorted(items.items()):
        if number not in done and OPEN not in text:
            found.append(f"exercise {number} has no solution cell and is not marked {OPEN}")
    checked = set()
    for cell in nb.cells:
        if cell.cell_type == "code" and not is_solution(cell) and "exercise.check(" in cell.source:
            checked |= _names(cell.source, ast.Load)
    for i, cell in enumerate(nb.cells):
        if not is_solution(cell):
            continue
        first = cell.source.splitlines()[0] if cell.source else ""
        if not TITLE.match(first):
            found.append(f"cell {i}: a solution's first line must be '# @title Solution N', got {first!r}")
        if cell.metadata.get("cellView") != "form" or not cell.metadata.get("jupyter", {}).get("source_hidden"):
            found.append(f"cell {i}: solution not folded for Colab/JupyterLab (run tools/exercises.py)")
        if overwritten := sorted(_names(cell.source, ast.Store) & checked):
            found.append(f"cell {i}: the solution assigns {', '.join(overwritten)}, which a check cell reads")
    return found


def fold(nb):
    """Write the folding metadata into every solution cell; True if anything changed."""
    changed = False
    for cell in filter(is_solution, nb.cells):
        before = (cell.metadata.get("cellView"), cell.metadata.get("jupyter", {}).get("source_hidden"))
        cell.metadata["cellView"] = "form"
        cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
        changed |= before != ("form", True)
    return changed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on a problem")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "chapters").glob("*/*.ipynb"))
    bad = 0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if args.check:
            for problem in problems(nb):
                print(f"{path}: {problem}")
                bad += 1
        elif fold(nb):
            nbformat.write(nb, path)
            print(f"folded the solutions of {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
