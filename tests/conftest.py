"""Fixtures shared by the test files."""

from tests.slurm_cluster import slurm_cluster  # noqa: F401 - a fixture, found by its name
