"""The results file's API for scripts outside the package; the code is bench.store.results."""

from bench.store.results import append_record, latest_by_cell, read_records, write_atomic

__all__ = ["append_record", "latest_by_cell", "read_records", "write_atomic"]
