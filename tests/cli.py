"""`pfcbench ARGS` as a real process (`python -m bench.cli`), as the test files run it."""

from __future__ import annotations

import subprocess
import sys


def pfcbench(*args: str, timeout_s: float = 300, env=None, cwd=None) -> subprocess.CompletedProcess:
    """Run the command to its end, its output captured; a hang past timeout_s fails the test instead of blocking it."""
    argv = [sys.executable, "-m", "bench.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=cwd)


def start_pfcbench(*args: str, **popen: object) -> subprocess.Popen:
    """Start the command and return at once, its output piped (for a test that signals it or runs two at once)."""
    argv = [sys.executable, "-m", "bench.cli", *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
