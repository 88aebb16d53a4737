"""The search's choice of values: few probes from a good start, the answer to within 5%, resumable."""

from __future__ import annotations

import pytest

from bench.config import Cell
from bench.plan.search import TOLERANCE, Answer, next_value, search


def outcome_of(answer: int):
    """A memory where a value fits exactly when it is at most answer."""
    return lambda value: value <= answer


def walk(start: int, fits, *, minimum: int = 2, step: int = 1, outcomes: dict | None = None) -> dict[int, bool]:
    outcomes = dict(outcomes or {})
    while (value := next_value(start, outcomes, minimum=minimum, step=step)) is not None:
        assert value not in outcomes, f"probed {value} twice"
        outcomes[value] = fits(value)
    return outcomes


def bounds_of(outcomes: dict[int, bool]) -> tuple[int, int]:
    largest = max(v for v, ok in outcomes.items() if ok)
    return largest, min(v for v, ok in outcomes.items() if not ok and v > largest)


@pytest.mark.parametrize("answer", [1000, 187_345, 4_000_000])
@pytest.mark.parametrize("error", [-0.15, -0.1, -0.03, 0.0, 0.02, 0.07, 0.15])
def test_a_start_within_15_percent_takes_at_most_4_probes(answer, error):
    start = round(answer * (1 + error))
    outcomes = walk(start, outcome_of(answer))
    largest, smallest_oom = bounds_of(outcomes)
    assert largest <= answer < smallest_oom
    assert smallest_oom <= largest * (1 + TOLERANCE)
    assert len(outcomes) <= 4, outcomes


@pytest.mark.parametrize("start", [2, 50, 10**8])
def test_a_far_start_still_brackets_and_bisects(start):
    outcomes = walk(start, outcome_of(187_345))
    largest, smallest_oom = bounds_of(outcomes)
    assert largest <= 187_345 < smallest_oom <= largest * (1 + TOLERANCE)
    assert len(outcomes) <= 30


def test_batch_sizes_are_multiples_of_the_ranks_and_stop_at_one_step():
    outcomes = walk(100, outcome_of(37), minimum=8, step=8)
    assert all(value % 8 == 0 for value in outcomes)
    assert bounds_of(outcomes) == (32, 40)


def test_nothing_fits_ends_at_the_smallest_value():
    outcomes = walk(1000, lambda value: False, minimum=8, step=8)
    assert min(outcomes) == 8 and not any(outcomes.values())


def test_an_interrupted_search_goes_on_where_it_stopped():
    whole = walk(150_000, outcome_of(187_345))
    order = list(whole)
    for stopped_after in range(1, len(order)):
        recorded = {value: whole[value] for value in order[:stopped_after]}
        assert walk(150_000, outcome_of(187_345), outcomes=recorded) == whole


def test_search_reuses_recorded_probes_and_runs_only_the_rest():
    cell = Cell(backbone="none", classes=1000, batch_size=8, nproc_per_node=2, device="cpu", max_memory_gib=1.0)
    fits = outcome_of(5_000)
    ran = []

    def probe(probed: Cell, extra: dict) -> dict:
        ran.append(probed.classes)
        status = "ok" if fits(probed.classes) else "oom"
        return {"cell_id": probed.cell_id, "config": probed.to_dict(), "status": status, **extra}

    first = Answer.of("classes", list(search(cell, "classes", lambda: 4_800, {}, probe)))
    assert first.largest <= 5_000 < first.smallest_oom and len(first.probes) <= 4
    records = {p.record["cell_id"]: p.record for p in first.probes[:2]}
    other = {"cell_id": "x", "config": {**cell.to_dict(), "classes": 4_000, "seed": 1}, "status": "oom"}
    ran.clear()
    again = Answer.of("classes", list(search(cell, "classes", unused_start, {**records, "x": other}, probe)))
    assert [p.recorded_before for p in again.probes[:2]] == [True, True]
    assert ran == [p.value for p in first.probes[2:]]
    assert (again.largest, again.smallest_oom, again.start) == (first.largest, first.smallest_oom, 4_800)


def unused_start() -> int:
    raise AssertionError("a resumed search asked for a new start instead of the recorded one")
