"""The results folder: results.jsonl (one JSON record per finished cell attempt), env/, and how a record reads.

A record is written whole or not at all: one write of one line, flushed and fsynced. A line that
a crash or a full disk cut short is never a record: the next append cuts it off, and readers skip
it and every other line that is not a record, saying how many and where. A whole last record that
only lacks its newline is kept.

Each run's machine description is kept in env/<hash>.json, and its records name theirs ("env").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.rank.output import temporary_path as temporary_path  # re-exported: the store writes as the rank does
from bench.rank.output import write_atomic
from bench.store.files import FileError, open_regular
from bench.store.records import SCHEMA
from bench.units import MIB

FINAL = ("ok", "oom", "error", "timeout", "skipped")
FAILED = ("error", "timeout")
MAX_RECORD_BYTES = 16 * MIB
"""Longest line read as a record; a record is a few kB (its step times), so a longer line is damage."""
BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = MIB
SHOWN_SKIPS = 3


class ReportError(ValueError):
    """A results directory that cannot be reported: a missing or unreadable file."""


class ResultsError(ValueError):
    """A results file that cannot be used at all; the text is one line naming it."""


class NotARecord(ValueError):
    """A line of a results file that is not a record; the text says why."""


@dataclass(frozen=True)
class Results:
    """What a results file holds: its records, oldest first, and the lines skipped as not records."""

    path: Path
    records: list[dict]
    skipped: list[tuple[int, str]]
    """(line number, why) of each line that is not a record."""

    def warning(self) -> str | None:
        """One line saying how many lines were skipped, where and why; None when none were."""
        if not self.skipped:
            return None
        shown = "; ".join(f"line {number}: {why}" for number, why in self.skipped[:SHOWN_SKIPS])
        more = f"; {len(self.skipped) - SHOWN_SKIPS:,} more" if len(self.skipped) > SHOWN_SKIPS else ""
        return f"{self.path}: skipped {len(self.skipped):,} line(s) that are not whole records ({shown}{more})"


def is_ok(record: dict | None) -> bool:
    return record is not None and record.get("status") == "ok"


def parse_record(line: bytes) -> dict:
    """The record a line holds; NotARecord says why it holds none."""
    try:
        value = json.loads(line.removeprefix(BOM))
    except (ValueError, RecursionError):
        raise NotARecord("not JSON") from None
    if not (
        isinstance(value, dict)
        and isinstance(value.get("cell_id"), str)
        and isinstance(value.get("status"), str)
        and isinstance(value.get("config"), dict)
    ):
        raise NotARecord("JSON but not a record (no cell_id, status and config)")
    schema = value.get("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise NotARecord(f"schema is not a version number: {str(schema)[:40]!r}")
    return value


SEARCHED = ("batch_size", "classes")
"""The fields a search probes: a probe's record holds whole numbers there."""


def usable_record(line: bytes) -> dict:
    """The record a line of a results file holds, for a reader; NotARecord also for a search probe whose
    searched values are not whole numbers (a damaged record no search, plan or report could place).

    Only readers skip such a line: appending keeps it, as it keeps any whole line.
    """
    record = parse_record(line)
    if "search_start" in record:
        for key, value in [("search_start", record["search_start"]), *((k, record["config"].get(k)) for k in SEARCHED)]:
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                name = key if key == "search_start" else f"config.{key}"
                raise NotARecord(f"a search probe whose {name} is not a whole number: {str(value)[:40]!r}")
    return record


def append_record(path: Path, record: dict) -> None:
    """Append one record as one line; on any failure the file is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = open_regular(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
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
    """Make the file end in a newline; return its size.

    A last line that is a whole record missing only its newline gets the newline; any other last
    line without one (a write cut short, NUL bytes after a power loss) is cut off, however long.
    """
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    start = last_line_start(fd, size)
    if size - start <= MAX_RECORD_BYTES:
        try:
            parse_record(os.pread(fd, size - start, start))
        except NotARecord:
            pass
        else:
            os.write(fd, b"\n")
            return size + 1
    os.ftruncate(fd, start)
    return start


def last_line_start(fd: int, size: int) -> int:
    """The offset just past the file's last newline (0 if it has none), searched backwards a chunk at a time."""
    end = size
    while end > 0:
        begin = max(0, end - CHUNK_BYTES)
        found = os.pread(fd, end - begin, begin).rfind(b"\n")
        if found >= 0:
            return begin + found + 1
        end = begin
    return 0


def bounded_lines(f) -> Iterator[bytes | None]:
    """Yield each line of a binary file; None stands for a line longer than MAX_RECORD_BYTES (not kept)."""
    while line := f.readline(MAX_RECORD_BYTES + 1):
        if len(line) <= MAX_RECORD_BYTES:
            yield line
            continue
        while line and not line.endswith(b"\n"):
            line = f.readline(CHUNK_BYTES)
        yield None


def read_results(path: Path) -> Results:
    """Every whole record in the file, oldest first, and the lines that are not records.

    Raises ResultsError for a file that is not a regular file, and for records of a newer schema
    (which this version would misread).
    """
    path = Path(path)
    try:
        if not path.exists() and not path.is_symlink():
            return Results(path, [], [])
    except OSError as exc:  # a name too long for the file system, a loop of symlinks
        raise ResultsError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    try:
        fd = open_regular(path)
    except FileError as exc:
        raise ResultsError(str(exc)) from None
    records, skipped = [], []
    with os.fdopen(fd, "rb") as f:
        for number, line in enumerate(bounded_lines(f), start=1):
            if line is None:
                skipped.append((number, f"longer than {MAX_RECORD_BYTES >> 20} MiB"))
                continue
            if not line.strip():
                continue
            try:
                records.append(usable_record(line))
            except NotARecord as exc:
                skipped.append((number, str(exc) if line.endswith(b"\n") else "cut short (the file ends inside it)"))
                continue
            if records[-1].get("schema", 1) > SCHEMA:
                raise ResultsError(
                    f"{path}: line {number} is a record of schema {records[-1]['schema']}, newer than this "
                    f"pfcbench reads ({SCHEMA}); read these results with a newer pfcbench"
                )
    return Results(path, records, skipped)


def read_records(path: Path) -> list[dict]:
    """Every whole record in the file, oldest first; lines that are not records are skipped."""
    return read_results(path).records


def latest_by_cell(records: list[dict]) -> dict[str, dict]:
    """The newest record of each cell id."""
    latest: dict[str, dict] = {}
    for record in records:
        latest[record["cell_id"]] = record
    return latest


def save_env(results_dir: Path, machine: dict) -> str:
    """Keep a run's machine description as env/<hash>.json (once per distinct one); return that name.

    env.json, read by older versions, is written only when absent: it is never overwritten.
    """
    text = json.dumps(machine, indent=2, sort_keys=True) + "\n"
    name = f"env/{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    (results_dir / "env").mkdir(parents=True, exist_ok=True)
    if not (results_dir / name).exists():
        write_atomic(results_dir / name, text)
    if not (results_dir / "env.json").exists():
        write_atomic(results_dir / "env.json", text)
    return name
