"""Fixtures shared by the test files, and the order the tests are handed to the workers in."""

import os
import shutil
import tempfile

import pytest

from tests.slurm_cluster import slurm_cluster  # noqa: F401 - a fixture, found by its name

# The suite's caches (memory traces, this machine's probed rates) in a folder of its own, made by the pytest
# process that starts the workers and shared by them and the commands they start (each entry is written whole
# under a temporary name, then renamed), never the user's ~/.cache; tests of the cache itself set their own.
MADE_HERE = "PFCBENCH_TESTS_CACHE" not in os.environ
if MADE_HERE:
    os.environ["PFCBENCH_TESTS_CACHE"] = tempfile.mkdtemp(prefix="pfcbench-tests-cache-")
CACHE = os.environ["XDG_CACHE_HOME"] = os.environ["PFCBENCH_TESTS_CACHE"]


def pytest_unconfigure(config: pytest.Config) -> None:
    if MADE_HERE:
        shutil.rmtree(CACHE, ignore_errors=True)


LONGEST = ("tests/test_smoke.py::", "tests/test_search_cli.py::test_search_answers")
"""The tests that take minutes (the whole smoke sweep; a search stopped twice and run to its end)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Slurm group's tests first (one worker runs them all, the longest chain), then the longest tests,
    the other slow ones and the quick: no long test starts last and runs alone while the other workers have
    nothing left. Within each kind the order is the files'."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("xdist_group") is None,
            not item.nodeid.startswith(LONGEST),
            item.get_closest_marker("slow") is None,
        )
    )
