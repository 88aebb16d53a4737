"""The files `pfcbench report` writes, and the record of them that lets it replace those and nothing else.

Each folder a report goes to holds `.pfcbench-report.json`: the name and SHA-256 of every file a report
wrote there. A report replaces a file only where it is listed with the content it has now, so that `-o`
pointed at a file of the user's (notes, a config, /etc/passwd) is refused in one line, never written over,
and a report the user edited since is the user's. Everything is rendered into a staging folder beside the
target first, then checked, then moved in: a refusal writes nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.rank.output import write_atomic
from bench.store.files import FileError, read_bytes

MANIFEST = ".pfcbench-report.json"
"""What a report wrote in its folder: {"files": {name: [sha256, ...]}}."""


def write_owned(out: Path, render: Callable[[Path], str]) -> None:
    """Write out whole, with the files render writes beside it: render(staging) puts them in a staging folder beside
    out and returns out's text; all are moved into out's folder once none would replace a file a report did not write.

    FileError (one line, nothing written) where one would; OSError where the file system refuses.
    """
    with staging_folder(out) as staging:
        write_atomic(staging / out.name, render(staging))
        move_in(staging, out.parent)


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A new hidden folder beside out, removed with whatever is left in it."""
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def move_in(staging: Path, folder: Path) -> None:
    """Move every file of staging into folder, after checking that each replaces nothing but a file a report wrote.

    The record lists both contents of a replaced file while the files move, so that a stop half-way leaves each
    file's content listed.
    """
    written = read_manifest(folder)
    names = sorted(path.name for path in staging.iterdir())
    for name in names:
        target = folder / name
        if os.path.lexists(target) and not wrote(target, written.get(name, [])):
            what = (
                f"changed since pfcbench report wrote it ({folder / MANIFEST} has its checksum)"
                if name in written
                else f"not a file pfcbench report wrote ({folder / MANIFEST} does not list it)"
            )
            raise FileError(f"{target}: {what}; move it away or give another -o")
    kept = {name: hashes for name, hashes in written.items() if (folder / name).exists()}
    new = {name: [sha256(staging / name)] for name in names}
    write_manifest(folder, kept | {name: [*kept.get(name, []), *new[name]] for name in names})
    for name in names:
        os.replace(staging / name, folder / name)
    write_manifest(folder, kept | new)


def wrote(path: Path, hashes: list[str]) -> bool:
    """Whether path is a regular file (not a link) with one of the contents a report wrote there."""
    return bool(hashes) and stat.S_ISREG(os.lstat(path).st_mode) and sha256(path) in hashes


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, list[str]]:
    """What the record says a report wrote in folder; nothing where it is missing or damaged (nothing is replaced)."""
    try:
        data = json.loads(read_bytes(folder / MANIFEST))
    except (FileError, ValueError):
        return {}
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        return {}
    return {
        name: hashes
        for name, hashes in files.items()
        if isinstance(hashes, list) and all(isinstance(h, str) for h in hashes)
    }


def write_manifest(folder: Path, files: dict[str, list[str]]) -> None:
    write_atomic(folder / MANIFEST, json.dumps({"written_by": "pfcbench report", "files": files}, indent=1) + "\n")
