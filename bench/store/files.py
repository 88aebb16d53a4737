"""Files a user hands to pfcbench, read and written so that no mistake hangs, floods memory or destroys results.

Every input file is opened without blocking, must be a regular file (not a FIFO, a device or a
folder) and is read up to a bound; every problem is an FileError whose text is one line naming
the file. Outputs are refused where they would write over what a run recorded.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from bench.units import MIB

MAX_TEXT_BYTES = 4 * MIB
"""Largest matrix or environment file read: far above any real one (the RTX 3080 matrix is 4 KiB)."""

RESULTS_FILES = ("results.jsonl", "env.json", "matrix.toml")
"""What a run records in its results folder; no command writes over them (env/ holds the rest)."""

ENV_FOLDER = "env"


class FileError(ValueError):
    """A file or folder that cannot be used as asked; the text is one line naming it."""


def open_regular(path: Path, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """Open path without blocking (a FIFO with no writer would wait forever) and return the descriptor.

    Raises FileError unless it is a regular file.
    """
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, mode)
    except FileNotFoundError:
        raise FileError(f"{path}: no such file") from None
    except OSError as exc:
        raise FileError(f"{path}: cannot open: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, socket or device)"
        raise FileError(f"{path}: is {kind}")
    os.set_blocking(fd, True)
    return fd


def read_bytes(path: Path, max_bytes: int = MAX_TEXT_BYTES) -> bytes:
    """The whole content of a regular file of at most max_bytes."""
    with os.fdopen(open_regular(path), "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileError(f"{path}: larger than {max_bytes:,} bytes; not a file pfcbench reads")
    return data


def read_text(path: Path, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A UTF-8 text file (a leading byte-order mark is dropped) of at most max_bytes."""
    data = read_bytes(path, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FileError(f"{path}: cannot read as UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})") from None


def refuse_results_file(out: Path) -> None:
    """Raise FileError if out would write over a file that a run recorded in its results folder."""
    target = Path(out).resolve()
    folder = target.parent
    if folder.name == ENV_FOLDER and (folder.parent / "results.jsonl").exists():
        folder = folder.parent
    elif target.name not in RESULTS_FILES:
        return
    if any((folder / name).exists() for name in RESULTS_FILES):
        raise FileError(f"{out}: is part of the results folder {folder}; write the output elsewhere")


def make_folder(path: Path, what: str) -> None:
    """mkdir -p, with a failure (a file in the way, no permission) as one line naming the folder."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileError(f"{what} {path}: cannot create the folder: {exc.strerror}") from None


def remove(path: Path, made_in: Path, *, only_if_empty: bool = False) -> None:
    """Delete path (a file, or a folder with all it holds); every deletion pfcbench makes goes through here.

    The rule: nothing pfcbench deletes lies outside what it made. made_in is a folder pfcbench made
    (a results folder's scratch area results/<matrix>/work, or the results folder for its ledger);
    path, with every symlink on it followed, must lie strictly inside it, or FileError says so and
    nothing is deleted. A missing path is already gone. only_if_empty deletes a folder only when it
    holds nothing.
    """
    target, root = Path(path).resolve(), Path(made_in).resolve()
    if target == root or not target.is_relative_to(root):
        raise FileError(f"{path}: lies outside {made_in}, which pfcbench made; not deleted")
    try:
        if only_if_empty:
            target.rmdir()
        elif target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        if only_if_empty and exc.errno == errno.ENOTEMPTY:
            return
        raise FileError(f"{path}: cannot delete: {exc.strerror}") from None
