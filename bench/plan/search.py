"""The largest batch size or class count that fits: probes that are real cells, bracketed and bisected.

A probe is an ordinary cell (a fresh torchrun job, so an out-of-memory never poisons the next
try) whose record goes to a results file like any other. The next value to probe is a pure
function of the start and the outcomes known so far, so a search that was interrupted and run
again reuses its recorded probes and goes on where it stopped.

From a start predicted within 15% of the answer, a search takes at most 4 probes: the start, one
value 19% above (after an ok) or 14% below (after an out-of-memory), then two bisections.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bench.config import Cell

FIELDS = ("batch_size", "classes")
"""Cell fields a search can look for the largest value of."""

TOLERANCE = 0.05
"""A search ends when the smallest out-of-memory value is within this fraction of the largest ok."""

UP_AFTER_START = 1.19
"""After the start ran ok: a start at least 85% of the answer puts this beyond it."""

DOWN_AFTER_START = 0.86
"""After the start ran out of memory: a start at most 115% of the answer puts this below it."""

PROBE_STEPS = {"warmup_steps": 1, "num_windows": 1, "steps_per_window": 2}
"""A probe's steps: the second step, with the optimizer's momentum in memory, is the peak; a third confirms it."""

PROBES_PER_SEARCH = 4
"""What a search from a good prediction takes, for progress bars."""

OUTCOMES = ("ok", "oom")
"""Statuses that answer a probe; any other (error, timeout) stops the search."""


class ProbeFailed(RuntimeError):
    """A probe ended neither ok nor out of memory, so the search cannot go on."""

    def __init__(self, value: int, record: dict) -> None:
        super().__init__(f"probe at {value} ended {record['status']}")
        self.value = value
        self.record = record


@dataclass(frozen=True, kw_only=True)
class Probe:
    value: int
    record: dict
    recorded_before: bool
    """Whether the record was already in the results file (a resumed search)."""


@dataclass(frozen=True, kw_only=True)
class Answer:
    field: str
    largest: int | None
    """The largest value that ran ok; None when even the smallest ran out of memory."""
    smallest_oom: int | None
    """The smallest value above `largest` that ran out of memory."""
    probes: list[Probe]

    @classmethod
    def of(cls, field: str, probes: list[Probe]) -> Answer:
        """The answer that a search's probes give."""
        largest, smallest_oom = bounds({p.value: p.record["status"] == "ok" for p in probes})
        return cls(field=field, largest=largest, smallest_oom=smallest_oom, probes=probes)

    @property
    def start(self) -> int | None:
        """The first value the search probed (what its probes record as its start)."""
        return next((p.record["search_start"] for p in self.probes if p.record.get("search_start")), None)

    def to_dict(self) -> dict:
        return {
            "field": self.field,
            "largest": self.largest,
            "smallest_oom": self.smallest_oom,
            "start": self.start,
            "probes": [dict(p.record, recorded_before=p.recorded_before) for p in self.probes],
        }


def check_field(field: str) -> None:
    if field not in FIELDS:
        raise ValueError(f"a search looks for {' or '.join(FIELDS)}, not {field!r}")


def smallest_value(cell: Cell) -> int:
    """The smallest batch or class count a cell of this many ranks can have: one per rank."""
    return cell.world_size


def value_step(cell: Cell, field: str) -> int:
    """Values a search may probe are multiples of this: the ranks for a batch (it must split), else 1."""
    return cell.world_size if field == "batch_size" else 1


def bounds(outcomes: dict[int, bool]) -> tuple[int | None, int | None]:
    """(largest ok value, smallest out-of-memory value above it); None where there is none."""
    largest = max((v for v, ok in outcomes.items() if ok), default=None)
    smallest_oom = min((v for v, ok in outcomes.items() if not ok and (largest is None or v > largest)), default=None)
    return largest, smallest_oom


def next_value(start: int, outcomes: dict[int, bool], *, minimum: int, step: int) -> int | None:
    """The next value to probe, or None when the answer is known to within TOLERANCE.

    outcomes maps each probed value to whether it ran ok. Before any ok: the start, then 14%
    below it, then halving; before any out-of-memory: the start, 19% above, then doubling; with
    both, the midpoint. Values are multiples of step, at least minimum.
    """
    start = max(minimum, round_to(start, step, math.ceil))
    lo, hi = bounds(outcomes)
    if lo is None and hi is None:
        return start
    if hi is None:
        return start if lo < start else round_to(lo * (UP_AFTER_START if lo == start else 2), step, math.ceil)
    if lo is None:
        if hi <= minimum:
            return None
        below = start if hi > start else round_to(hi * (DOWN_AFTER_START if hi == start else 0.5), step, math.floor)
        return max(minimum, min(below, hi - step))
    if hi <= lo * (1 + TOLERANCE) or hi - lo <= step:
        return None
    return round_to((lo + hi) / 2, step, math.floor)


def round_to(value: float, step: int, direction: Callable[[float], int]) -> int:
    return int(direction(value / step)) * step


def search_key(config: dict, field: str) -> dict:
    """What the probes of one search share: every cell field but the one searched."""
    return {k: v for k, v in config.items() if k != field}


def recorded_probes(records: dict[str, dict], cell: Cell, field: str) -> dict[int, dict]:
    """Value -> latest ok or oom record of a cell that differs from this one only in field."""
    key = search_key(cell.to_dict(), field)
    found = {}
    for record in records.values():
        config = record.get("config", {})
        value = config.get(field) if isinstance(config, dict) else None
        whole = isinstance(value, int) and not isinstance(value, bool) and value > 0
        if (
            record.get("status") in OUTCOMES
            and whole
            and search_key(config, field) == key
            and is_cell(cell, field, value)
        ):
            found[value] = record
    return found


def all_probes(searches: list[tuple[Cell, str]], records: dict[str, dict]) -> list[dict]:
    """The recorded probes of every (start cell, field) search."""
    return [record for cell, field in searches for record in recorded_probes(records, cell, field).values()]


def is_cell(cell: Cell, field: str, value: int) -> bool:
    """Whether cell with field set to value is a cell a probe could have run (a damaged record's may not be)."""
    try:
        dataclasses.replace(cell, **{field: value})
    except ValueError:
        return False
    return True


def start_value(cell: Cell, field: str) -> int:
    """Where a search starts: the value whose predicted peak fills the rank's memory (its cap, else
    its GPU's), by the memory model; the cell's own value where no memory size or prediction is had.
    """
    from bench.memory import GIB, memory_size_gib
    from bench.rank.host import gpu_memory_gib

    size_gib = memory_size_gib(cell, None, gpu_memory_gib() if cell.on_gpu else None)
    if size_gib is None:
        return getattr(cell, field)
    try:
        return predicted_start(cell, field, int(size_gib * GIB))
    except RuntimeError:  # the tracer failed: the search still finds the answer, in more probes
        return getattr(cell, field)


def predicted_start(cell: Cell, field: str, memory_bytes: int) -> int:
    """The value of field at which the memory model's predicted peak fills memory_bytes.

    The peak grows about linearly in the batch and in the classes: a line through the
    predictions at the cell's value and twice it gives a first guess, and a line through the
    guess and the nearer of those two corrects it.
    """
    from bench.memory import predict_cells

    def predicted(values: list[int]) -> list[tuple[int, int]]:
        cells = [dataclasses.replace(cell, **{field: value}) for value in values]
        return list(zip(values, (p.peak_bytes for p in predict_cells(cells))))

    def crossing(a: tuple[int, int], b: tuple[int, int]) -> int:
        slope = (b[1] - a[1]) / (b[0] - a[0])
        guess = a[0] + (memory_bytes - a[1]) / slope if slope > 0 else b[0]
        return max(smallest_value(cell), round_to(guess, value_step(cell, field), math.floor))

    first, second = predicted([getattr(cell, field), 2 * getattr(cell, field)])
    guess = predicted([crossing(first, second)])[0]
    nearer = min((first, second), key=lambda point: abs(point[0] - guess[0]))
    return crossing(nearer, guess) if nearer[0] != guess[0] else guess[0]


def is_settled(cell: Cell, field: str, records: dict[str, dict]) -> bool:
    """Whether the recorded probes already answer this search, whatever its start."""
    outcomes = {value: record["status"] == "ok" for value, record in recorded_probes(records, cell, field).items()}
    # With no bound recorded on one side the next value depends on the start; None means settled.
    return (
        bool(outcomes)
        and next_value(smallest_value(cell), outcomes, minimum=smallest_value(cell), step=value_step(cell, field))
        is None
    )


def search(
    cell: Cell,
    field: str,
    start: Callable[[], int],
    records: dict[str, dict],
    probe: Callable[[Cell, dict], dict],
) -> Iterator[Probe]:
    """Probe until the answer is known to within TOLERANCE, yielding every probe; see Answer.of.

    records maps cell id -> latest record (the results file so far): the probes recorded there
    come first, as recorded_before, and are not run again. start gives the first value; it is
    called only when needed, and a search that has recorded probes keeps the start they record.
    probe(cell, extra) runs a cell and returns its record with extra, once recorded. A probe that
    ends in error or timeout raises ProbeFailed.
    """
    check_field(field)
    known = recorded_probes(records, cell, field)
    for value, record in sorted(known.items(), key=lambda item: item[1].get("started_at", 0)):
        yield Probe(value=value, record=record, recorded_before=True)
    outcomes = {value: record["status"] == "ok" for value, record in known.items()}
    minimum, step = smallest_value(cell), value_step(cell, field)
    first = next((r["search_start"] for r in known.values() if r.get("search_start") is not None), None)
    if first is None:
        first = start() if None in bounds(outcomes) else minimum
    while (value := next_value(first, outcomes, minimum=minimum, step=step)) is not None:
        record = probe(dataclasses.replace(cell, **{field: value}), {"search_start": first})
        if record["status"] not in OUTCOMES:
            raise ProbeFailed(value, record)
        outcomes[value] = record["status"] == "ok"
        yield Probe(value=value, record=record, recorded_before=False)
