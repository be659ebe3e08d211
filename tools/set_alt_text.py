"""Give every figure of the book a description: write tools/alt_text.json into the notebooks.

    python tools/set_alt_text.py             # write the descriptions into the cells' metadata
    python tools/set_alt_text.py NB.ipynb    # only these notebooks
    python tools/set_alt_text.py --check     # change nothing; exit 1 on any problem below

A figure is an image output of a code cell (the book's are PNG). MyST-NB takes the alt text of
the images a cell outputs from the cell's metadata, `{"mystnb": {"image": {"alt": "..."}}}`
(`render_image_options`, cell level); the output's own metadata may only set width and height.
So there is one description per cell, which covers all the figures that cell draws. Without
one, Sphinx uses the image's file name, a hash, as its alt text.

tools/alt_text.json maps each notebook (its path from the course's root) to its figure cells,
by the cell's `id`, and each to its description: what is plotted and what the reader should see,
in a sentence or two. Only that metadata key is written; sources, outputs and every other
metadata key stay as they are, and a second run changes nothing. `--check` reports a figure
cell with no description in the file, a description for a cell that no longer exists or draws
no figure, an empty one, and a notebook whose cells do not yet carry the file's text (run this
script then).
"""
import argparse
import json
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
ALT_FILE = ROOT / "tools" / "alt_text.json"


def load_descriptions(path=ALT_FILE):
    """{notebook path: {cell id: description}} from the JSON file."""
    return json.loads(Path(path).read_text())


def notebooks(root=ROOT):
    return sorted((root / "chapters").glob("*/*.ipynb"))


def draws_figure(cell):
    return cell.cell_type == "code" and any(
        mime.startswith("image/") for output in cell.get("outputs", []) for mime in output.get("data", {}))


def figure_cells(nb):
    """{cell id: cell} of the code cells that output an image."""
    return {cell.get("id"): cell for cell in nb.cells if draws_figure(cell)}


def stored_alt(cell):
    return cell.metadata.get("mystnb", {}).get("image", {}).get("alt")


def coverage_problems(nb, descriptions, name):
    """Where the file and the notebook's figure cells disagree, as lines of text."""
    figures = figure_cells(nb)
    ids = {cell.get("id") for cell in nb.cells}
    problems = [f"{name}: cell {cell_id} draws a figure but has no description in {ALT_FILE.name}"
                for cell_id in figures if cell_id not in descriptions]
    for cell_id, text in descriptions.items():
        if cell_id not in ids:
            problems.append(f"{name}: {ALT_FILE.name} describes cell {cell_id}, which no longer exists")
        elif cell_id not in figures:
            problems.append(f"{name}: {ALT_FILE.name} describes cell {cell_id}, which draws no figure")
        elif not text.strip():
            problems.append(f"{name}: the description of cell {cell_id} is empty")
    return problems


def apply_descriptions(nb, descriptions):
    """Set the alt text of each described figure cell; True if any cell changed."""
    changed = False
    for cell_id, cell in figure_cells(nb).items():
        text = descriptions.get(cell_id)
        if text and stored_alt(cell) != text:
            cell.metadata.setdefault("mystnb", {}).setdefault("image", {})["alt"] = text
            changed = True
    return changed


def relative_name(path, root):
    path = Path(path).resolve()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on any problem")
    parser.add_argument("--root", type=Path, default=ROOT, help="the course's folder (default: this one)")
    parser.add_argument("--descriptions", type=Path, default=None,
                        help="the JSON file (default: tools/alt_text.json under --root)")
    parser.add_argument("notebook", nargs="*", type=Path, help="default: every notebook under chapters/")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    descriptions = load_descriptions(args.descriptions or root / "tools" / ALT_FILE.name)
    paths = [p.resolve() for p in args.notebook] or notebooks(root)
    names = [relative_name(p, root) for p in paths]
    problems = [f"{name}: {ALT_FILE.name} describes a notebook that does not exist"
                for name in sorted(set(descriptions) - set(names)) if not args.notebook]
    changed = []
    for path, name in zip(paths, names):
        nb = nbformat.read(path, as_version=4)
        problems += coverage_problems(nb, descriptions.get(name, {}), name)
        if apply_descriptions(nb, descriptions.get(name, {})):
            changed.append(name)
            if not args.check:
                nbformat.write(nb, path)
    for line in problems:
        print(line)
    if args.check:
        for name in changed:
            print(f"{name}: figure cells without the file's alt text (run tools/set_alt_text.py)")
        return 1 if problems or changed else 0
    print(f"alt text written into {len(changed)} of {len(paths)} notebooks; {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
