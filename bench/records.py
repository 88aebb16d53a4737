"""The record builder's API for scripts outside the package; the code is bench.store.records."""

from bench.store.records import build_record

__all__ = ["build_record"]
