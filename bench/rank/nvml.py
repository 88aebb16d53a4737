"""NVML, where there is one: every call degrades to "no GPUs" instead of raising.

The host description (bench.rank.host) and the GPU sampler in the ranks (bench.rank.telemetry) both go
through here, so that a machine without NVML runs the harness unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import pynvml
except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
    pynvml = None


def init() -> bool:
    """Initialise NVML; False when the library, driver or module is missing."""
    if pynvml is None:
        return False
    try:
        pynvml.nvmlInit()
    except (pynvml.NVMLError, OSError):
        return False
    return True


def shutdown() -> None:
    try:
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        pass


def value(call: Callable[..., Any], *args: Any) -> Any:
    """The result of an NVML call, or None when it reports an NVML error."""
    try:
        return call(*args)
    except pynvml.NVMLError:
        return None


def text(raw: str | bytes) -> str:
    """NVML's text, which older bindings hand back as bytes."""
    return raw.decode() if isinstance(raw, bytes) else raw
