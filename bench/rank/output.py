"""Files written whole or not at all: a rank's figures, and every file the parent writes the same way."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file or none: a temporary file beside it, fsync, then an atomic rename.

    The temporary name carries host and pid, so that nodes sharing a folder never collide.
    """
    tmp = temporary_path(path)
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def temporary_path(path: Path) -> Path:
    """Where write_atomic writes path before its rename."""
    return path.with_name(f".{path.name}.{socket.gethostname()}-{os.getpid()}.tmp")
