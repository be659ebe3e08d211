"""Write the canonical bootstrap cell into every notebook under chapters/ (`make bootstrap`),
and point the course's other links at the same repository.

    python tools/set_bootstrap.py            # rewrite the cells and links (after changing the URL)
    python tools/set_bootstrap.py NB.ipynb   # only these notebooks (README.md too)
    python tools/set_bootstrap.py --check    # only list the files that differ

The repository URL is one setting, `repository.url` (and `repository.branch`) in `_config.yml`:
the book's launch button reads it, and this script writes it into each notebook's first code
cell. The whole cell source is replaced (older bootstrap cells included), tagged `hide-input`;
its outputs are kept, since the cell prints the same budget line as before. It also rewrites the
links that name the repository elsewhere: Colab links (README.md's Colab line) and raw links
to files under chapters/ (the runtimes page reads its table from one in Colab), and in README.md
the plain GitHub URL those links named before.
"""
import argparse
import re
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


# Links that can only mean the course's repository: a notebook opened in Colab, a raw file of
# chapters/. The owner/name and branch they carry are rewritten.
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/(?P<repo>[\w.-]+/[\w.-]+)/blob/[\w.-]+/")
RAW_LINK = re.compile(r"https://raw\.githubusercontent\.com/(?P<repo>[\w.-]+/[\w.-]+)/[\w.-]+/(?=chapters/)")


def repository(root=ROOT):
    return yaml.safe_load((root / "_config.yml").read_text())["repository"]


def repository_url(root=ROOT):
    return repository(root)["url"]


def retarget_links(text, url, branch):
    """text with its Colab and raw links, and the plain repository URL they named, on url/branch."""
    repo = url.rstrip("/").removeprefix("https://github.com/")
    old = {m["repo"] for link in (COLAB_LINK, RAW_LINK) for m in link.finditer(text)} - {repo}
    text = COLAB_LINK.sub(f"https://colab.research.google.com/github/{repo}/blob/{branch}/", text)
    text = RAW_LINK.sub(f"https://raw.githubusercontent.com/{repo}/{branch}/", text)
    for name in old:
        text = re.sub(rf"https://github\.com/{re.escape(name)}(?![\w-]|\.\w)", url.rstrip("/"), text)
    return text


def canonical_source(url=None):
    return TEMPLATE.format(url=url or repository_url())


def notebooks(root=ROOT):
    return sorted((root / "chapters").glob("*/*.ipynb"))


def first_code_cell(nb):
    return next(c for c in nb.cells if c.cell_type == "code")


def set_bootstrap(path, source, repo=None, write=True):
    """Make the notebook's first code cell the bootstrap and retarget its links; True if it
    changed (with write=False: True if it would)."""
    repo = repo or repository()
    nb = nbformat.read(path, as_version=4)
    cell = first_code_cell(nb)
    tags = cell.metadata.setdefault("tags", [])
    changed = cell.source != source or "hide-input" not in tags
    cell.source = source
    if "hide-input" not in tags:
        tags.append("hide-input")
    for c in nb.cells:
        linked = retarget_links(c.source, repo["url"], repo.get("branch", "main"))
        changed |= linked != c.source
        c.source = linked
    if changed and write:
        nbformat.write(nb, path)
    return changed


def set_readme_links(path, repo, write=True):
    """Retarget README.md's links; True if it changed (with write=False: if it would)."""
    text = path.read_text()
    linked = retarget_links(text, repo["url"], repo.get("branch", "main"))
    if linked != text and write:
        path.write_text(linked)
    return linked != text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any differs")
    parser.add_argument("--root", type=Path, default=ROOT, help="the course's folder (default: this one)")
    parser.add_argument("notebook", nargs="*", type=Path, help="default: every notebook under chapters/")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    repo = repository(root)
    source = canonical_source(repo["url"])
    paths = [p.resolve() for p in args.notebook] or notebooks(root)
    write = not args.check
    changed = [p for p in paths if set_bootstrap(p, source, repo, write)]
    readme = root / "README.md"
    changed += [readme] if readme.exists() and set_readme_links(readme, repo, write) else []
    verb = "differs (run `make bootstrap`)" if args.check else "rewritten"
    for p in changed:
        print(f"{p.relative_to(root)}: bootstrap cell or repository links {verb}")
    if args.check:
        return 1 if changed else 0
    print(f"{len(changed)} of {len(paths) + readme.exists()} files changed; URL {repo['url']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
