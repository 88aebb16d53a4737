"""Traces of cells kept on disk, so that a plan made again reads them instead of tracing again.

An entry is keyed by everything a trace depends on: the cell's fields that change its step, the
torch version, pfcbench's version and a hash of the trace's source files, so that an edit of the
trace, a new torch or a new pfcbench misses. Entries live under $XDG_CACHE_HOME/pfcbench (by
default ~/.cache/pfcbench), never in the working or results folder; each is one small JSON file,
written to a temporary name and renamed, so that a reader sees a whole entry or none. A damaged
entry reads as a miss and is written again. The newest MAX_ENTRIES entries are kept (a hit counts
as new).

Torch-free: bench.memory reads and writes it in the parent.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import tempfile
from pathlib import Path

import bench
from bench.config import Cell

TRACE_INDEPENDENT = (
    "warmup_steps",
    "num_windows",
    "steps_per_window",
    "max_memory_gib",
    "data",
    "data_path",
    "num_workers",
    "tf32",
)
"""Cell fields the traced tensors do not depend on: the trace runs two steps on a synthetic batch,
uncapped, on the CPU (TF32 picks a GPU's kernels, not a tensor; bench.memory adds its cuDNN workspace)."""

TRACE_FIELDS = ("peak_bytes", "parts", "backbone_bytes", "reserved_bytes", "events")
"""What an entry holds: the fields of bench.workload.memtrace.Trace."""

MAX_ENTRIES = 4096
"""Entries kept (about 300 bytes each); the least recently used beyond it are removed."""

BENCH = Path(bench.__file__).resolve().parent
TRACE_SOURCES = ("memory.py", "config.py", "impls.py", "units.py", "workload/*.py")
"""The files of bench the trace runs, as globs under bench/: an edit of any of them misses."""


def cache_root() -> Path:
    """$XDG_CACHE_HOME/pfcbench, pfcbench's caches; ~/.cache when the variable is unset or not an absolute path."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache") / "pfcbench"


def cache_dir() -> Path:
    """Where the traces are cached: cache_root()/traces."""
    return cache_root() / "traces"


@functools.cache
def source_hash() -> str:
    """A hash of the trace's source files (TRACE_SOURCES), their names and contents."""
    digest = hashlib.sha256()
    paths = sorted({path for pattern in TRACE_SOURCES for path in BENCH.glob(pattern)})
    for path in paths:
        digest.update(path.relative_to(BENCH).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def torch_version() -> str:
    """The installed torch's version, read from its package metadata (torch is not imported)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def trace_fields(cell: Cell) -> dict:
    """The cell's fields that change its traced step."""
    return {name: value for name, value in cell.to_dict().items() if name not in TRACE_INDEPENDENT}


def trace_key(cell: Cell) -> str:
    """The cache key of cell's trace: its step's fields, torch's and pfcbench's versions, the trace's sources."""
    inputs = {
        "cell": trace_fields(cell),
        "torch": torch_version(),
        "pfcbench": bench.__version__,
        "sources": source_hash(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


class TraceCache:
    """Trace results (plain dicts) by key, in a folder of JSON files."""

    def __init__(self, folder: Path | None = None, max_entries: int = MAX_ENTRIES) -> None:
        self.folder = folder if folder is not None else cache_dir()
        self.max_entries = max_entries

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The entry under key; None when there is none or it cannot be read whole."""
        path = self.path(key)
        try:
            entry = json.loads(path.read_text())
            trace = entry["trace"] if entry["key"] == key else None
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if not isinstance(trace, dict) or not all(name in trace for name in TRACE_FIELDS):
            return None
        with_suppressed_os_error(os.utime, path)  # a hit keeps the entry among the newest
        return trace

    def put(self, key: str, trace: dict) -> None:
        """Write the entry under key whole or not at all; a cache that cannot be written is no error."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        except OSError:
            return
        try:
            with os.fdopen(handle, "w") as file:
                json.dump({"key": key, "trace": trace}, file)
            os.replace(temporary, self.path(key))
        except OSError:
            with_suppressed_os_error(os.unlink, temporary)
            return
        self.prune()

    def prune(self) -> None:
        """Remove the least recently used entries beyond max_entries."""
        try:
            entries = list(self.folder.glob("*.json"))
            if len(entries) <= self.max_entries:
                return
            entries.sort(key=lambda path: path.stat().st_mtime)
        except OSError:
            return
        for path in entries[: len(entries) - self.max_entries]:
            with_suppressed_os_error(os.unlink, path)


def with_suppressed_os_error(action, path) -> None:
    try:
        action(path)
    except OSError:
        pass
