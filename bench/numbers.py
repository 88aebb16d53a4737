"""What counts as a number in a record or a matrix: a finite int or float, not a bool (TOML's inf and nan are not)."""

from __future__ import annotations

import math
from typing import Any


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
