"""Fixtures shared by the test files, and the order the tests are handed to the workers in."""

import os
import shutil
import tempfile

import pytest

from tests.slurm_cluster import slurm_cluster  # noqa: F401 - a fixture, found by its name

# The suite's caches (memory traces, this machine's probed rates) in a folder of its own, shared by the tests of
# one worker and the commands they start, never the user's ~/.cache; tests of the cache itself set their own.
CACHE = os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="pfcbench-tests-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(CACHE, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Slurm group's tests first (one worker runs them all, the longest chain), then the other slow
    ones, then the quick: no long test starts last and runs alone while the other worker has nothing
    left. Within each kind the order is the files'."""
    items.sort(
        key=lambda item: (item.get_closest_marker("xdist_group") is None, item.get_closest_marker("slow") is None)
    )
