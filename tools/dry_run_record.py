"""Which pages' `full` schedule changed since `make full-dry-run` last proved it on the CPU.

    python tools/dry_run_record.py --changed              # the notebooks to dry-run again
    python tools/dry_run_record.py --update RESULTS.tsv   # merge a dry run's results into the record

A page's fingerprint is a hash of cnnlib/budget.py (the budgets themselves) and of the page's code
cells (its schedules, models and loaders); markdown and outputs do not count. The record,
benchmarks/full_dry_run.tsv, keeps for every page the fingerprint of the code its last dry run
passed with, its peak memory and its time. CI dry-runs the pages whose fingerprint is not in the
record (`make dry-run-changed`), so a change to a schedule or to budget.py is proven at `full`
before it lands, without the 20 minutes of running every page each time.
"""
import argparse
import csv
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "benchmarks" / "full_dry_run.tsv"
FOOTPRINT = ROOT / "benchmarks" / "full_footprint.csv"    # cnnlib.footprint's rows, every page's
FIELDS = ("notebook", "fingerprint", "peak_rss_mib", "seconds")


def footprint_log(notebook, root=ROOT):
    """Where a dry run of one notebook has fit write its footprint (make full-dry-run sets it)."""
    return root / "_build" / "footprint" / (str(notebook).replace("/", "_") + ".csv")


def fingerprint(notebook, root=ROOT):
    digest = hashlib.sha256((root / "cnnlib" / "budget.py").read_bytes())
    cells = json.loads((root / notebook).read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] == "code":
            digest.update("".join(cell["source"]).encode())
    return digest.hexdigest()[:16]


def read(record=RECORD):
    if not Path(record).exists():
        return {}
    with open(record, newline="") as f:
        return {row["notebook"]: row for row in csv.DictReader(f, delimiter="\t")}


def changed(notebooks, record=RECORD, root=ROOT):
    """The notebooks whose code or budgets differ from those their last passing dry run saw."""
    known = read(record)
    return [nb for nb in notebooks if known.get(nb, {}).get("fingerprint") != fingerprint(nb, root)]


def update(results, record=RECORD, root=ROOT, footprint=FOOTPRINT):
    """Merge a dry run's table (notebook, peak_rss_mib, seconds, result): pages that passed get
    their current fingerprint, and their footprint rows replace their old ones; a page that
    failed loses its row, so it stays 'changed'."""
    rows = read(record)
    with open(results, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["result"] == "ok":
                rows[row["notebook"]] = {"notebook": row["notebook"], "fingerprint": fingerprint(row["notebook"], root),
                                         "peak_rss_mib": row["peak_rss_mib"], "seconds": row["seconds"]}
                _replace_footprint(footprint, row["notebook"], footprint_log(row["notebook"], root))
            else:
                rows.pop(row["notebook"], None)
    Path(record).parent.mkdir(parents=True, exist_ok=True)
    with open(record, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[nb] for nb in sorted(rows))


def _replace_footprint(table, notebook, log):
    """The notebook's rows of the footprint table become those of its new log (none if it trains nothing)."""
    kept, header = [], None
    if Path(table).exists():
        with open(table, newline="") as f:
            reader = csv.DictReader(f)
            header, kept = reader.fieldnames, [r for r in reader if r["page"] != notebook]
    new = []
    if Path(log).exists():
        with open(log, newline="") as f:
            reader = csv.DictReader(f)
            header, new = reader.fieldnames, list(reader)
    if header is None:
        return
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(sorted(kept + new, key=lambda r: r["page"]))   # stable: a page's fits in order


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--changed", action="store_true", help="print the notebooks to dry-run again")
    group.add_argument("--update", metavar="RESULTS", help="merge a dry run's results table")
    args = parser.parse_args(argv)
    if args.update:
        update(args.update)
    else:
        notebooks = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("chapters/*/*.ipynb"))
        print(" ".join(changed(notebooks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
