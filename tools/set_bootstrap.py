"""Write the canonical bootstrap cell into every notebook under chapters/ (`make bootstrap`).

    python tools/set_bootstrap.py            # rewrite the cells (after changing the URL)
    python tools/set_bootstrap.py NB.ipynb   # only these notebooks
    python tools/set_bootstrap.py --check    # only list the notebooks whose cell differs

The repository URL is one setting, `repository.url` in `_config.yml`: the book's launch button
reads it, and this script writes it into each notebook's first code cell. The whole cell source
is replaced (older bootstrap cells included), tagged `hide-input`; its outputs are kept, since
the cell prints the same budget line as before.
"""
import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent

TEMPLATE = '''\
# In Colab: install cnnlib from the course repository, then those of its requirements
# (requirements.txt) that Colab lacks; Colab's own torch, numpy, pandas and matplotlib are
# kept as they are. Anywhere else this cell only prints the budget and the device.
import importlib.util, importlib.metadata as md, os, re, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("cnnlib") is None:
    url = "git+{url}"
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--no-deps", os.environ.get("CNNLIB_INSTALL_SOURCE", url)], check=True)
    def lacking(requirement):  # not installed at all; versions Colab has are kept
        try:
            return not md.distribution(re.match(r"[\\w.-]+", requirement)[0]).version
        except md.PackageNotFoundError:
            return True
    if missing := [r for r in md.requires("cnnlib") if lacking(r)]:
        subprocess.run([*pip, *missing], check=True)
    importlib.invalidate_caches()
import cnnlib
device = cnnlib.setup()'''


def repository_url(root=ROOT):
    return yaml.safe_load((root / "_config.yml").read_text())["repository"]["url"]


def canonical_source(url=None):
    return TEMPLATE.format(url=url or repository_url())


def notebooks(root=ROOT):
    return sorted((root / "chapters").glob("*/*.ipynb"))


def first_code_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


def set_bootstrap(path, source):
    """Make the notebook's first code cell the bootstrap; True if the file changed."""
    nb = nbformat.read(path, as_version=4)
    cell = first_code_cell(nb)
    tags = cell.metadata.setdefault("tags", [])
    if cell.source == source and "hide-input" in tags:
        return False
    cell.source = source
    if "hide-input" not in tags:
        tags.append("hide-input")
    nbformat.write(nb, path)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any differs")
    parser.add_argument("notebook", nargs="*", type=Path, help="default: every notebook under chapters/")
    args = parser.parse_args(argv)
    source = canonical_source()
    paths = [p.resolve() for p in args.notebook] or notebooks()
    stale = [p for p in paths if "".join(first_code_cell(nbformat.read(p, 4)).source) != source]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)}: bootstrap cell differs (run `make bootstrap`)")
        return 1 if stale else 0
    changed = [p for p in paths if set_bootstrap(p, source)]
    for p in changed:
        print(f"rewrote the bootstrap cell of {p.relative_to(ROOT)}")
    print(f"{len(changed)} of {len(paths)} notebooks changed; URL {repository_url()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
