"""Test-run settings: the smoke budget, and nbval's comparison rules."""
import os

os.environ.setdefault("CNNLIB_BUDGET", "smoke")


def pytest_collectstart(collector):
    # Warnings and progress bars go to stderr; they are never part of what a cell claims.
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)
