"""Each chapter 5 model's result on its own page, read from the pages' stored outputs.

The table of all models (chapters/05_modern_cnns/09_comparison) trains every model at one short
recipe; this file gives it the other view: what each model reached on its own page, with that
page's network, data and schedule. It reads the numbers the pages printed, so nothing is typed
by hand, and writes them to chapters/05_modern_cnns/results.csv, one row per model and budget:

    python tools/collect_results.py                        # the stored notebooks (after a store)
    python tools/collect_results.py --from _build/executed # e.g. the pages run under full on a GPU

A run under another budget adds its rows beside the stored ones (the table's `full` column is
filled that way). tests/test_collect_results.py fails when the file and the stored pages differ,
so store the pages first, then run this, then store the table of all models.
"""
import argparse
import csv
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "chapters" / "05_modern_cnns"
RESULTS = CHAPTER / "results.csv"
FIELDS = ["model", "page", "network", "data", "schedule", "runs", "test_acc", "budget", "device"]


@dataclass(frozen=True)
class Source:
    model: str      # as the table of all models names it
    page: str       # notebook name in chapters/05_modern_cnns
    cell: str       # id of the cell that prints the result
    network: str    # what the page trains
    data: str
    pattern: str    # a regex whose group 1 holds the percentage(s) of that network
    error: bool = False  # the page prints test error, not accuracy
    sizes: tuple = ("width", "growth")  # the plan's settings that size this network


SOURCES = [
    Source("LeNet-5", "01_lenet", "799dd85d", "LeNet-5, tanh + average pooling", "Fashion-MNIST",
           r"^tanh \+ average pooling:\s*\n\s*test accuracy by seed (.+)$"),
    Source("AlexNet", "02_alexnet", "bd627d07", "AlexNet as the paper built it", "Fashion-MNIST",
           r"^test accuracy (\S+%)$"),
    Source("VGG-11-BN", "03_vgg", "42f280de", "VGG-11 with batch norm", "Fashion-MNIST",
           r"^vgg11_bn: test accuracy by seed (.+)$"),
    Source("NiN", "04_nin", "e7bd99b0", "NiN with global average pooling", "Fashion-MNIST",
           r"^GAP \(paper\): test accuracy by seed (.+)$"),
    Source("DLfS deep CNN", "05_dlfs_deep_cnn", "fd281fac", "the book's network and recipe", "MNIST",
           r"^test accuracy after epoch \d+: (\S+%)"),
    Source("GoogLeNet", "06_googlenet", "d2c7c919", "GoogLeNet with its aux heads", "Fashion-MNIST",
           r"^aux heads on\s*:.*test accuracy (\S+%)$"),
    Source("ResNet-18", "07_resnet", "18236e07", "ResNet-32 (CIFAR-style, option A)",
           "Fashion-MNIST", r"^ResNet-32\s+seed \d+\s.*test error (\S+%)$", error=True,
           sizes=("channels",)),
    Source("DenseNet-BC-40", "08_densenet", "d48360d7", "DenseNet-BC-40", "Fashion-MNIST",
           r"^DenseNet \(concatenation\): test accuracy (\S+%)$"),
]


def _text(cell):
    """The printed text of a cell: its streams and plain-text results."""
    parts = []
    for out in cell.get("outputs", []):
        text = out.get("text") or out.get("data", {}).get("text/plain", "")
        parts.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(parts)


def _plan(cells, before):
    """The last schedule line ("cpu budget: 6 epochs, ...") printed up to cell `before`."""
    found = None
    for cell in cells[:before + 1]:
        match = re.search(r"^\w+ budget: (.+(?:\n  .+)*)", _text(cell), re.M)
        if match:
            found = " ".join(match.group(1).split())
    return found


def schedule(plan, sizes=("width", "growth"), full_size=60_000):
    """'6 epochs, batch 256, train all, width=0.25, ...' -> '6 epochs of 60,000, width 0.25'."""
    epochs = re.search(r"(\d+) epochs?", plan).group(0)
    train = re.search(r"train (\w+)", plan)
    size = full_size if train is None or train.group(1) == "all" else int(train.group(1))
    extra = [f"{key} {value}" for key, value in re.findall(r"\b(\w+)=([\d.]+)", plan) if key in sizes]
    return ", ".join([f"{epochs} of {size:,}", *extra])


def collect(folder=CHAPTER):
    """One row per source, from the notebooks in `folder` (stored or executed copies)."""
    rows = []
    for source in SOURCES:
        cells = json.loads((Path(folder) / f"{source.page}.ipynb").read_text())["cells"]
        at = next((i for i, c in enumerate(cells) if c.get("id") == source.cell), None)
        if at is None:
            raise LookupError(f"{source.page}: no cell {source.cell} (its id changed? update SOURCES)")
        found = re.findall(source.pattern, _text(cells[at]), re.M)
        if not found:
            raise LookupError(f"{source.page}, cell {source.cell}: nothing matches {source.pattern!r} "
                              f"(was the page run? did its printout change? update SOURCES)")
        values = [float(v) for group in found for v in re.findall(r"([\d.]+)%", group)]
        if source.error:
            values = [100 - v for v in values]
        setting = re.search(r"budget: (\w+) \| device: (\w+)", "".join(_text(c) for c in cells[:3]))
        rows.append(dict(model=source.model, page=source.page, network=source.network,
                         data=source.data, schedule=schedule(_plan(cells, at), source.sizes), runs=len(values),
                         test_acc=f"{statistics.mean(values):.2f}", budget=setting.group(1),
                         device=setting.group(2)))
    return rows


def read(path=RESULTS):
    if not Path(path).exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def merge(old, new):
    """The new rows replace the old ones of the same model and budget; the others stay."""
    replaced = {(r["model"], r["budget"]) for r in new}
    kept = [r for r in old if (r["model"], r["budget"]) not in replaced]
    order = {s.model: i for i, s in enumerate(SOURCES)}
    return sorted(kept + new, key=lambda r: (r["budget"] != "cpu", order.get(r["model"], 99)))


def write(rows, path=RESULTS):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="folder", type=Path, default=CHAPTER,
                        help="a folder with the chapter's notebooks (default: the stored ones); "
                             "a folder that mirrors chapters/ is entered for you")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    folder = args.folder
    if not (folder / f"{SOURCES[0].page}.ipynb").exists():
        folder = folder / "chapters" / "05_modern_cnns"
    rows = collect(folder)
    write(merge(read(args.out), rows), args.out)
    for r in rows:
        print(f"{r['model']:<15} {r['test_acc']:>6}%  {r['budget']:<5} {r['schedule']}")


if __name__ == "__main__":
    main()
