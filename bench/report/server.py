"""The "Test Server Spec" of a report, from a machine description (bench.rank.host.describe_machine).

`server_spec` turns a description into the rows of arcface_torch's table; `env_problem` says what
makes a description read from a file unusable.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from bench.config import shown


def server_spec(env: dict[str, Any], *, cpu_counts: bool | None = None) -> list[tuple[str, str]]:
    """Rows of the "Test Server Spec" table, from a `describe_machine` dict.

    A list of pairs because "Installation" repeats, as in the published
    arcface_torch reports. cuDNN and the installer (pip, conda) are shown where known. cpu_counts
    adds the cores and threads to the CPU row; by default where the machine has no GPU, so that its
    cells ran on those cores, and a GPU server's row reads as the published reports write it.
    """
    if cpu_counts is None:
        cpu_counts = not env.get("gpus")
    counts = _cpu_count_text(env) if cpu_counts else ""
    rows = [
        ("CPU", f"{env['cpu_sockets']} x {env['cpu_model']}{counts}"),
        ("Memory", f"{round(env['memory_gib'])}GB"),
        ("GPU", _gpu_summary(env.get("gpus") or [])),
        ("OS", env["os"]),
    ]
    if env.get("torch_cuda") and env.get("gpus"):
        cudnn = _cudnn_text(env.get("cudnn"))
        rows.append(("Installation", f"CUDA {env['torch_cuda']}" + (f", cuDNN {cudnn}" if cudnn else "")))
    rows.append(("Installation", f"Python {env['python']}"))
    installer = env.get("torch_installer")
    rows.append(("Installation", f"PyTorch {env['torch']}" + (f" ({installer})" if installer else "")))
    return rows


TEXT = (str,)


NUMBER = (int, float)


ENV_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {
    "cpu_model": (TEXT, True),
    "cpu_sockets": ((int,), True),
    "memory_gib": (NUMBER, True),
    "os": (TEXT, True),
    "python": (TEXT, True),
    "torch": (TEXT + (type(None),), True),
    "hostname": (TEXT, False),
    "cpu_cores": ((int, type(None)), False),
    "cpu_threads": ((int,), False),
    "gpus": ((list,), False),
    "gpu_driver": (TEXT + (type(None),), False),
    "cuda_driver": (TEXT + (type(None),), False),
    "torch_cuda": (TEXT + (type(None),), False),
    "cudnn": (TEXT + (int, type(None)), False),
    "torch_installer": (TEXT + (type(None),), False),
    "kernel": (TEXT, False),
}
"""The keys of a machine description a report reads: (the types its value may have, whether it must be there)."""


def env_problem(env: dict[str, Any]) -> str | None:
    """What makes a machine description read from a file unusable for a report (a key missing, a value
    of the wrong type, a name that is empty or holds a control character), or None."""
    for key, (types, required) in ENV_KEYS.items():
        if key not in env:
            if required:
                return f"key {key!r} is missing"
            continue
        problem = value_problem(env[key], types)
        if problem:
            return f"key {key!r}: {problem}"
    for index, gpu in enumerate(env.get("gpus") or []):
        if not isinstance(gpu, dict):
            return f"gpus[{index}] is not an object"
        problem = value_problem(gpu.get("name"), TEXT) or value_problem(gpu.get("memory_mib"), (int, type(None)))
        if problem:
            return f"gpus[{index}]: {problem}"
    return None


def value_problem(value: Any, types: tuple[type, ...]) -> str | None:
    if isinstance(value, bool) or not isinstance(value, types):
        return f"{shown(value)} is not {' or '.join('null' if t is type(None) else t.__name__ for t in types)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{shown(value)} is not a finite number"
    if isinstance(value, (int, float)) and value < 0:
        return f"{shown(value)} is negative"
    if isinstance(value, str) and (not value.strip() or not value.isprintable()):
        return f"{shown(value)} is empty or holds a control character"
    return None


def _cpu_count_text(env: dict[str, Any]) -> str:
    """The CPU row's " (2 cores, 4 threads)": physical cores (where known) and logical CPUs of all sockets.

    A description written before cpu_threads was recorded holds the logical CPUs in cpu_cores.
    """
    threads, cores = env.get("cpu_threads"), env.get("cpu_cores")
    if threads is None:
        return f" ({cores} logical CPUs)" if cores else ""
    return f" ({cores} cores, {threads} threads)" if cores else f" ({threads} threads)"


def _gpu_summary(gpus: list[dict[str, Any]]) -> str:
    """The GPU row: "8 x NVIDIA GeForce RTX 3080", one "n x model" per model."""
    if not gpus:
        return "none"
    counts = Counter(gpu["name"] for gpu in gpus)
    return " + ".join(f"{count} x {name}" for name, count in counts.items())


def _cudnn_text(version: int | str | None) -> str | None:
    """cuDNN's version as text: "8.0.5" as it is, or torch's number (8005, 90100) decoded."""
    if not isinstance(version, int) or isinstance(version, bool):
        return version or None
    major, rest = (version // 10000, version % 10000) if version >= 90000 else (version // 1000, version % 1000)
    return f"{major}.{rest // 100}.{rest % 100}"
