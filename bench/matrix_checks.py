"""The value checks of a matrix file: each mistake becomes a MatrixError naming the place and the key."""

from __future__ import annotations

import math
import re
from typing import Any

from bench.config import FIELD_TYPES, check_type, shown, unknown_field

MAX_NAME_BYTES = 100
"""Longest matrix name: it names the results folder and the report's files (255 bytes at most on most filesystems)."""


class MatrixError(ValueError):
    """A matrix file that cannot be run as written."""


def check_cell_fields(values: dict, where: str) -> None:
    for key, value in values.items():
        expect(key in FIELD_TYPES, f"{where}: {unknown_field(key)}")
        check_value(key, value, f"{where} {key}")


def check_value(key: str, value: Any, where: str) -> None:
    try:
        check_type(key, value)
    except ValueError as exc:
        raise MatrixError(f"{where}: {exc}") from None
    expect(
        not isinstance(value, float) or math.isfinite(value), f"{where}: must be a finite number, not {shown(value)}"
    )


def check_value_with(check, name: str, value: Any) -> None:
    """Run one of config's number checks, its ValueError becoming a MatrixError."""
    try:
        check(name, value)
    except ValueError as exc:
        raise MatrixError(str(exc)) from None


def check_keys(data: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    expect(not unknown, f"{where}: unknown key {shown(unknown[0])}" if unknown else "")


def table(data: dict, key: str, where: str | None = None) -> dict:
    value = data.get(key, {})
    expect(isinstance(value, dict), f"{where or key}: must be a table")
    return value


def is_folder_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and name == name.strip()
        and 0 < len(name.encode()) <= MAX_NAME_BYTES
        and re.search(r"[/\\\x00-\x1f\x7f]", name) is None
        and name not in (".", "..")
    )


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise MatrixError(message)
