"""Run one page's code cells in this process and keep what each fit reached, even when stopped.

    python benchmarks/run_page.py chapters/05_modern_cnns/05_dlfs_deep_cnn.ipynb --results out/
    timeout -s INT 300 python benchmarks/run_page.py PAGE --results out/   # a window of 5 minutes

benchmarks/gpu_check.sh uses it for its windows on a GPU: the cells run in order in one namespace
(a kernel's), every epoch of every fit is printed and written to RESULTS/<page>.json as it ends, and
an interrupt (SIGINT, which `timeout -s INT` sends at the window's end) stops the page cleanly: fit
finishes or abandons the step, saves its checkpoint if it has one and re-raises, and this script
records where the page stopped and exits 0. `--inject CELL:CODE` runs CODE just before code cell
CELL (0-based, counting code cells only), e.g. to keep one network of a page that trains several;
`--until CELL` stops before code cell CELL (a page whose later cells compare the networks removed).
`--table CSV` appends the page's time to the runtimes table when the page completes (not for a
rehearsal under CNNLIB_MAX_STEPS, whose times mean nothing).
"""
import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # figures are drawn and closed; nothing to show

import cnnlib
import torch

ROOT = Path(__file__).resolve().parent.parent


def code_cells(page):
    return ["".join(c["source"]) for c in json.loads(Path(page).read_text())["cells"] if c["cell_type"] == "code"]


def parse_injections(items):
    """['7:x = 1'] -> {7: ['x = 1']}."""
    injected = {}
    for item in items:
        cell, sep, code = item.partition(":")
        if not sep or not cell.strip().isdigit():
            raise SystemExit(f"--inject must be CELL:CODE with CELL a code cell's number, got {item!r}")
        injected.setdefault(int(cell), []).append(code)
    return injected


class Record:
    """What the page reached, written to disk after every epoch (a killed run keeps it)."""

    def __init__(self, page, path):
        self.path = path
        self.data = dict(page=str(page), device=cnnlib.config.describe(), status="running", cell=None,
                         seconds=0.0, fits=[])
        self.start = time.perf_counter()

    def new_fit(self):
        self.data["fits"].append([])

    def epoch(self, row):
        self.data["fits"][-1].append(row)
        self.write()

    def finish(self, status, cell=None, error=None):
        self.data.update(status=status, cell=cell, error=error)
        self.write()

    def write(self):
        self.data["seconds"] = round(time.perf_counter() - self.start, 1)
        self.path.write_text(json.dumps(self.data, indent=1, default=str))


def watch_fits(record):
    """cnnlib.fit, with every epoch's row printed and recorded (the page's own callback still runs)."""
    real_fit = cnnlib.train.fit

    def fit(*args, on_epoch_end=None, **kwargs):
        record.new_fit()
        number = len(record.data["fits"])

        def look(epoch, history):
            row = {k: v for k, v in history.last.items()}
            print(f"[fit {number}, epoch {epoch}] " + "  ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
            record.epoch(row)
            if on_epoch_end is not None:
                on_epoch_end(epoch, history)
        return real_fit(*args, on_epoch_end=look, **kwargs)
    cnnlib.fit = cnnlib.train.fit = fit


def append_runtime(table, page, seconds):
    """The page's row in the runtimes table (tools/execute_notebooks.py's columns), replacing the row
    of the same page, budget and device (that tool imports nbclient, which a bare GPU image lacks)."""
    dev = cnnlib.config.device()
    page = Path(page).resolve()
    name = page.relative_to(ROOT).as_posix() if page.is_relative_to(ROOT) else page.name
    row = dict(notebook=name, budget=cnnlib.config.budget_name(),
               device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else dev.type,
               seconds=f"{seconds:.1f}", torch=torch.__version__, date=time.strftime("%Y-%m-%d"),
               cores=len(os.sched_getaffinity(0)), load=f"{os.getloadavg()[0]:.2f}")

    def key(r):
        return r["notebook"], r["budget"], r["device"]

    table = Path(table)
    rows = list(csv.DictReader(table.open(newline=""))) if table.exists() else []
    rows = sorted([r for r in rows if key(r) != key(row)] + [row], key=key)
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"runtime recorded in {table}: {row}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page")
    parser.add_argument("--results", required=True, help="folder for <page>.json and the page's own files")
    parser.add_argument("--inject", action="append", default=[], metavar="CELL:CODE")
    parser.add_argument("--table", help="runtimes table to append the page's time to, when it completes")
    parser.add_argument("--until", type=int, metavar="CELL", help="stop before code cell CELL (0-based)")
    args = parser.parse_args(argv)
    page = Path(args.page).resolve()
    table = Path(args.table).resolve() if args.table else None
    injected = parse_injections(args.inject)
    results = Path(args.results).resolve()
    work = results / f"work-{page.stem}"   # the page's runs/ and checkpoints land here
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    record = Record(page, results / f"{page.stem}.json")
    watch_fits(record)
    namespace = {"__name__": "__main__"}
    print(f"== {page.name}: {cnnlib.config.describe()}", flush=True)
    for index, source in enumerate(code_cells(page)):
        if index == args.until:
            record.finish(f"completed up to code cell {index}", cell=index)
            print(f"== {page.name}: stopped as asked before code cell {index} after "
                  f"{record.data['seconds']:.0f} s; {record.path}", flush=True)
            return 0    # part of a page: no runtime to record
        try:
            for code in injected.get(index, []):
                print(f"[before code cell {index}] {code}", flush=True)
                exec(compile(code, f"injected before code cell {index}", "exec"), namespace)
            exec(compile(source, f"{page.name} code cell {index}", "exec"), namespace)
        except KeyboardInterrupt:
            record.finish("stopped at the window's end", cell=index)
            print(f"== {page.name}: stopped at the window's end in code cell {index} after "
                  f"{record.data['seconds']:.0f} s; what it reached is in {record.path}", flush=True)
            return 0
        except Exception as error:
            record.finish("failed", cell=index, error=f"{type(error).__name__}: {error}")
            print(f"== {page.name}: code cell {index} failed after {record.data['seconds']:.0f} s:\n{source}",
                  flush=True)
            raise
    record.finish("completed")
    print(f"== {page.name}: completed in {record.data['seconds']:.0f} s; {record.path}", flush=True)
    if table and not os.environ.get("CNNLIB_MAX_STEPS"):
        append_runtime(table, page, record.data["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
