"""Test-run settings: the smoke budget, and nbval's comparison rules."""
import os

# The test run always uses the smoke budget (CNNLIB_TEST_BUDGET=cpu runs the notebooks longer).
os.environ["CNNLIB_BUDGET"] = os.environ.get("CNNLIB_TEST_BUDGET", "smoke")


def pytest_collectstart(collector):
    # Warnings and progress bars go to stderr; they are never part of what a cell claims.
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("stderr",)

# The browser test's small book is data for that test, not a page of the course.
collect_ignore_glob = ["tests/fixtures/*"]
