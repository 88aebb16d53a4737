"""Tie a process's life to its parent's: the runner's torchrun and every rank die when their parent does."""

from __future__ import annotations

import ctypes
import signal
import sys


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send sig to this process when its parent dies, however it dies (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # PR_SET_PDEATHSIG
