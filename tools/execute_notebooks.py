"""Run notebooks top to bottom, one at a time, and (with --store) keep their outputs.

    python tools/execute_notebooks.py [--store] [--force] [--timeout S] NOTEBOOK...

    CNNLIB_BUDGET=smoke python tools/execute_notebooks.py chapters/01_mlp/*.ipynb    # a dry run
    CNNLIB_BUDGET=cpu python tools/execute_notebooks.py --store chapters/*/*.ipynb  # the book's outputs

Without --store the executed copy goes to ``_build/executed/<same path>`` and the notebook itself
is not touched. With --store the notebook is overwritten in place, in the form the book keeps:
execution counts 1, 2, 3, ..., kernelspec ``python3``, no per-cell execution metadata. A stored run
of the ``cpu`` or ``full`` budget also records one row per notebook in the runtimes table
(``chapters/90_appendix/runtimes.csv``, shown by the book's page "How long each page takes"),
replacing that notebook's earlier row for the same budget and device.

Timings are only worth recording on an idle machine, so before a stored run the 1-minute load
average is compared with the number of cores: above it, the tool refuses (``--force`` runs anyway,
and then records no timing). Without --store it only warns.

A cell that fails stops its notebook with a message naming the notebook and the cell, leaves the
stored notebook as it was (the partial copy, error included, goes to ``_build/executed/``), goes on
with the next notebook, and makes the exit status non-zero.
"""
import argparse
import atexit
import csv
import datetime
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError
from tqdm import tqdm
from traitlets.config import Config

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "chapters" / "90_appendix" / "runtimes.csv"
EXECUTED = Path("_build") / "executed"
COLUMNS = ["notebook", "budget", "device", "seconds", "torch", "date", "cores", "load"]
RECORDED_BUDGETS = ("cpu", "full")  # smoke timings say nothing a reader needs
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
# The kernel talks to this process over Unix sockets: over TCP (the default) ipykernel warns on
# every run that the connection is unencrypted. Windows has no Unix sockets, so it keeps TCP.
# The sockets' path must be absolute: the kernel runs in the notebook's folder, not ours.
SOCKETS = tempfile.mkdtemp(prefix="cnnlib-kernel-")
atexit.register(shutil.rmtree, SOCKETS, ignore_errors=True)
KERNEL_CONFIG = Config({"KernelManager": {"transport": "tcp"} if os.name == "nt" else
                        {"transport": "ipc", "ip": os.path.join(SOCKETS, "kernel")}})
# What cnnlib.setup() prints in every notebook's first cell.
DESCRIBE = re.compile(r"budget: (?P<budget>\S+) \| device: (?P<device>.+?) \| torch (?P<torch>\S+)")


class CellFailed(Exception):
    pass


def cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_average():
    return os.getloadavg()[0]


def machine_is_busy():
    """(busy, message): busy when the 1-minute load average is above the core count."""
    load, n = load_average(), cores()
    return load > n, f"load average {load:.2f} on {n} cores"


def display_path(path):
    """The notebook's path relative to the repository (or the working folder), for tables and copies."""
    path = Path(path).resolve()
    for base in (ROOT, Path.cwd()):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            pass
    return path.name


def clear(nb):
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)


def tidy(nb):
    """The stored form: counts 1, 2, 3, ... over the code cells, no execution metadata."""
    count = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = count
    nb.metadata["kernelspec"] = dict(KERNELSPEC)


def run(nb, folder, timeout, name, claims_may_fail=False):
    """Execute every code cell of nb in a fresh kernel, with a per-cell progress bar.

    claims_may_fail: a cell that stops on an AssertionError (a page's claim, which a dry run of a
    few steps cannot meet) is noted and the run goes on; returns the numbers of those cells."""
    unmet = []
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", config=KERNEL_CONFIG,
                            resources={"metadata": {"path": str(folder)}})
    code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    with client.setup_kernel():
        with tqdm(total=len(code), desc=name, unit="cell", file=sys.stderr, dynamic_ncols=True,
                  bar_format="{desc}: cell {n_fmt}/{total_fmt} |{bar}| {elapsed}") as bar:
            for k, (index, cell) in enumerate(code, start=1):
                try:
                    client.execute_cell(cell, index)
                except (CellExecutionError, CellTimeoutError) as err:
                    if claims_may_fail and getattr(err, "ename", None) == "AssertionError":
                        unmet.append(k)
                        bar.update(1)
                        continue
                    first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                    raise CellFailed(f"{name}: code cell {k} of {len(code)} (cell {index} of the notebook, "
                                     f"starting {first_line[:60]!r}) failed:\n{_error_summary(err)}") from None
                bar.update(1)
    return unmet


def _error_summary(err):
    text = str(err).strip().splitlines()
    return "\n".join("    " + line for line in text[-6:])


def describe(nb):
    """budget, device and torch version as the notebook's own first output printed them."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            match = DESCRIBE.search(out.get("text", "") or "")
            if match:
                return match.groupdict()
    return {"budget": os.environ.get("CNNLIB_BUDGET", "?"), "device": "?", "torch": "?"}


def read_table(path):
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def record(path, row):
    """Add row to the table at path, replacing the same notebook's row for the same budget and device."""
    key = lambda r: (r["notebook"], r["budget"], r["device"])  # noqa: E731
    rows = [r for r in read_table(path) if key(r) != key(row)] + [{c: row[c] for c in COLUMNS}]
    rows.sort(key=key)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def execute(path, *, store=False, timeout=1800, table=TABLE, record_timing=True, dry_run=False):
    """Run one notebook; store it or write the executed copy. Returns the wall time in seconds.

    dry_run (never with store): claims that fail are reported, not fatal (see run)."""
    path = Path(path)
    name = display_path(path)
    nb = nbformat.read(path, as_version=4)
    clear(nb)
    load = load_average()
    start = time.perf_counter()
    try:
        unmet = run(nb, path.resolve().parent, timeout, name, claims_may_fail=dry_run and not store)
    except CellFailed:
        _write(nb, EXECUTED / name)
        raise
    seconds = time.perf_counter() - start
    tidy(nb)
    if not store:
        _write(nb, EXECUTED / name)
        claims = f" ({len(unmet)} claims not met at this size: code cells {unmet})" if unmet else ""
        print(f"{name}: {seconds:.0f} s, executed copy in {EXECUTED / name}{claims}")
        return seconds
    nbformat.write(nb, path)
    info = describe(nb)
    note = ""
    if not record_timing:
        note = " (timing not recorded: the machine was busy)"
    elif info["budget"] not in RECORDED_BUDGETS:
        note = f" (timing not recorded: {info['budget']} budget)"
    else:
        record(table, dict(notebook=name, seconds=f"{seconds:.1f}", date=datetime.date.today().isoformat(),
                           cores=cores(), load=f"{load:.2f}", **info))
    print(f"{name}: {seconds:.0f} s, stored{note}")
    return seconds


def _write(nb, target):
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)


def order(paths):
    """The given order, except that pages reading the runtimes table run last (they show it)."""
    reads_table = lambda p: TABLE.name in Path(p).read_text()  # noqa: E731
    return [p for p in paths if not reads_table(p)] + [p for p in paths if reads_table(p)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="+", metavar="NOTEBOOK")
    parser.add_argument("--store", action="store_true", help="overwrite the notebooks with their outputs "
                        "and record their timings")
    parser.add_argument("--force", action="store_true", help="store even when the machine is busy "
                        "(no timing is recorded then)")
    parser.add_argument("--timeout", type=float, default=1800, metavar="S",
                        help="seconds one cell may run (default 1800)")
    parser.add_argument("--dry-run", action="store_true", help="a run of a few steps per fit "
                        "(CNNLIB_MAX_STEPS): a page's claim (an AssertionError) is reported and the run goes "
                        "on; any other error fails. Not with --store")
    parser.add_argument("--table", default=str(TABLE), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.dry_run and args.store:
        parser.error("--dry-run outputs are not the book's: it cannot be combined with --store")

    missing = [p for p in args.notebooks if not Path(p).is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    busy, load = machine_is_busy()
    if busy and args.store and not args.force:
        print(f"refusing to store: the machine is busy ({load}); timings and outputs would be those of a "
              "busy machine. Wait until it is idle, or pass --force (then no timing is recorded).",
              file=sys.stderr)
        return 2
    if busy:
        print(f"warning: the machine is busy ({load}); timings are not representative", file=sys.stderr)

    failed = []
    for path in order(args.notebooks):
        try:
            execute(path, store=args.store, timeout=args.timeout, table=args.table, record_timing=not busy,
                    dry_run=args.dry_run)
        except CellFailed as err:
            failed.append(display_path(path))
            print(f"FAILED {err}", file=sys.stderr)
            print(f"  the stored notebook is unchanged; the partial run is in {EXECUTED / display_path(path)}",
                  file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(args.notebooks)} notebooks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
