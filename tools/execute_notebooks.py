"""Re-run notebooks top to bottom and store their outputs (execution counts 1, 2, 3, ...).

    CNNLIB_BUDGET=cpu python tools/execute_notebooks.py chapters/01_mlp/*.ipynb

Stored outputs say which budget and device produced them (the notebooks' first cell prints it).
"""
import sys
import time

import nbformat
from nbclient import NotebookClient

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def execute(path, timeout=1800):
    nb = nbformat.read(path, as_version=4)
    nb.metadata["kernelspec"] = KERNELSPEC
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.rsplit("/", 1)[0]) if "/" in path else "."}}).execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    print(f"{path}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        execute(p)
