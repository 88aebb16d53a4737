"""The results file: append-only JSON lines, one record per finished cell attempt, and how a record reads.

A record is written whole or not at all: one write of one line, flushed and fsynced. A line that
a crash or a full disk cut short is never a record; it is dropped before the next append.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

FINAL = ("ok", "oom", "error", "timeout", "skipped")
FAILED = ("error", "timeout")
MARKS = {"oom": "Fail", "error": "Error", "timeout": "Timeout", "skipped": "Skipped", None: "—"}
"""What a cell that did not finish prints instead of its samples/sec; None is a cell not run yet."""


class ReportError(ValueError):
    """A results directory that cannot be reported: a missing or unreadable file."""


def is_ok(record: dict | None) -> bool:
    return record is not None and record.get("status") == "ok"


def mark(record: dict | None) -> str:
    """The printed mark of a cell that has no samples/sec: Fail, Error, Timeout, Skipped or —."""
    return MARKS.get(record["status"] if record else None, "Error")


def speed_text(record: dict | None) -> str:
    """Samples/sec as the published reports print it (~2190), or the cell's mark."""
    return f"~{round(record['samples_per_s'])}" if is_ok(record) else mark(record)


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or none: a temporary file beside it, fsync, then an atomic rename.

    The temporary name carries host and pid, so that nodes sharing a folder never collide.
    """
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_record(path: Path, record: dict) -> None:
    """Append one record as one line; on any failure the file is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = drop_torn_tail(fd)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to {path}: {written} of {len(line)} bytes")
            os.fsync(fd)
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


def drop_torn_tail(fd: int) -> int:
    """Cut a last line that has no newline (a write cut short); return the file's size."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    tail_start = max(0, size - (1 << 20))
    tail = os.pread(fd, size - tail_start, tail_start)
    keep = tail_start + tail.rfind(b"\n") + 1 if b"\n" in tail else 0
    os.ftruncate(fd, keep)
    return keep


def read_records(path: Path) -> list[dict]:
    """Every whole record in the file, oldest first; a torn last line is ignored."""
    if not path.exists():
        return []
    records = []
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def latest_by_cell(records: list[dict]) -> dict[str, dict]:
    """The newest record of each cell id."""
    latest: dict[str, dict] = {}
    for record in records:
        latest[record["cell_id"]] = record
    return latest
