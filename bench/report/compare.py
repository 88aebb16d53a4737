"""Compare two runs cell by cell: is B faster, slower or the same as A, and what began or stopped failing.

A change of speed is called only when the ratio of samples/sec passes a threshold AND a
Mann-Whitney U test on the per-step times agrees (asv's rule), so that noise is not news. The U
test is a few lines here (normal approximation, tie- and continuity-corrected) rather than a
scipy dependency; for the 20 to 100 steps of a cell the approximation is close to the exact test.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.config import Cell, check_number
from bench.metrics import EMULATED, METRICS, speed_entry
from bench.report.marks import speed_text
from bench.report.tables import markdown_table
from bench.store.results import ReportError, Results, is_ok, read_results
from bench.verdicts import not_a_speed, training_speed

SPEED = METRICS["samples_per_s"]

MAX_THRESHOLD = 100.0
"""Largest --threshold: a change of samples/sec by a factor of 101."""


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """One cell of two runs and what changed."""

    cell_id: str
    config: dict
    """The cell's configuration (from whichever run has it)."""
    a: dict | None
    """The cell's latest record in run A; None if A has no record of it."""
    b: dict | None
    ratio: float | None
    """Samples/sec of B over A; None unless both finished."""
    p_value: float | None
    """Two-sided Mann-Whitney p-value of the per-step times; None unless both finished with samples."""
    verdict: str
    """faster, slower, same, incomparable (also where either run's loss was not finite), newly failing or fixed."""
    why: str = ""
    """Why an incomparable cell is: "B: NaN loss", say; empty otherwise."""


def mann_whitney_p(x: list[float], y: list[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test of x against y (normal approximation, ties corrected)."""
    n_x, n_y = len(x), len(y)
    values = pd.Series([*x, *y], dtype=float)
    u_x = values.rank().iloc[:n_x].sum() - n_x * (n_x + 1) / 2
    n = n_x + n_y
    ties = values.value_counts()
    variance = n_x * n_y / 12 * ((n + 1) - float((ties**3 - ties).sum()) / (n * (n - 1)))
    if variance <= 0:
        return 1.0
    z = max(abs(u_x - n_x * n_y / 2) - 0.5, 0.0) / math.sqrt(variance)
    return min(1.0, math.erfc(z / math.sqrt(2)))


def timing_samples(record: dict) -> list[float]:
    """Per-step times, or failing those the per-window rates (the test's p-value is the same either way round)."""
    steps = record.get("step_times_s") or []
    return steps if len(steps) >= 2 else record.get("samples_per_s_windows") or []


def incomparable_why(a: dict | None, b: dict | None) -> str:
    """Why a cell of two runs has no verdict ("only in A", "B: NaN loss"), or "" when it has one."""
    if a is None or b is None:
        return "only in A" if b is None else "only in B"
    if not (is_ok(a) or is_ok(b)):
        return "neither ran ok"
    return "; ".join(
        f"{run}: {not_a_speed(r)}" for run, r in (("A", a), ("B", b)) if is_ok(r) and not training_speed(r)
    )


def compare_cell(a: dict | None, b: dict | None, threshold: float, alpha: float) -> Comparison:
    """The verdict for one cell; a and b are its latest records in the two runs (None where absent)."""
    config = (a or b)["config"]
    cell_id = (a or b)["cell_id"]
    if why := incomparable_why(a, b):
        return Comparison(
            cell_id=cell_id, config=config, a=a, b=b, ratio=None, p_value=None, verdict="incomparable", why=why
        )
    if not is_ok(b) or not is_ok(a):
        verdict = "newly failing" if is_ok(a) else "fixed"
        return Comparison(cell_id=cell_id, config=config, a=a, b=b, ratio=None, p_value=None, verdict=verdict)
    speed_a, speed_b = training_speed(a), training_speed(b)
    ratio = speed_b / speed_a
    samples_a, samples_b = timing_samples(a), timing_samples(b)
    p_value = mann_whitney_p(samples_a, samples_b) if samples_a and samples_b else None
    changed = abs(ratio - 1) > threshold and p_value is not None and p_value < alpha
    verdict = ("faster" if SPEED.improves(speed_b, speed_a) else "slower") if changed else "same"
    return Comparison(cell_id=cell_id, config=config, a=a, b=b, ratio=ratio, p_value=p_value, verdict=verdict)


def compare_records(
    records_a: dict[str, dict],
    records_b: dict[str, dict],
    *,
    threshold: float = 0.05,
    alpha: float = 0.01,
    ignore: tuple[str, ...] = (),
) -> list[Comparison]:
    """Every cell in either run (latest record per cell), in A's order then B's new cells.

    Cells pair by cell id; with `ignore`, by their config less those fields, so that a run made
    with one setting changed (`pfcbench run ... --set precision=bf16`) compares with the baseline.
    """
    check_number("threshold", threshold, 0, MAX_THRESHOLD)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, not {alpha}")
    unknown = sorted(set(ignore) - {f.name for f in dataclasses.fields(Cell)})
    if unknown:
        raise ValueError(f"--ignore {unknown[0]}: not a cell field")
    keyed_a, keyed_b = pair_keys(records_a, ignore), pair_keys(records_b, ignore)
    keys = list(dict.fromkeys([*keyed_a, *keyed_b]))
    return [compare_cell(keyed_a.get(k), keyed_b.get(k), threshold, alpha) for k in keys]


def pair_keys(records: dict[str, dict], ignore: tuple[str, ...]) -> dict[str, dict]:
    """Records keyed by what pairs them across runs: the cell id, or the config less `ignore`."""
    if not ignore:
        return records
    return {
        json.dumps({k: v for k, v in r["config"].items() if k not in ignore}, sort_keys=True): r
        for r in records.values()
    }


def load_results(path: Path) -> Results:
    """The records of a results directory (or of a results.jsonl file given directly)."""
    path = Path(path)
    results = path / "results.jsonl" if path.is_dir() else path
    if not results.exists():
        raise ReportError(f"{results}: no such results file or directory")
    return read_results(results)


def no_shared_cell(
    records_a: dict[str, dict], records_b: dict[str, dict], comparisons: list[Comparison], ignore: tuple[str, ...]
) -> str | None:
    """What is wrong when two runs, one of them at least with records, have no cell in common; else None."""
    if not (records_a or records_b) or any(c.a is not None and c.b is not None for c in comparisons):
        return None
    values_a, values_b = config_values(records_a), config_values(records_b)
    differ = [name for name in values_a if name not in ignore and values_a[name] != values_b.get(name)]
    hint = f"; their cells differ in {', '.join(differ)} (pair them with --ignore FIELD)" if differ else ""
    return f"the runs share no cell (A has {len(records_a)} cells, B has {len(records_b)}): nothing to compare{hint}"


def config_values(records: dict[str, dict]) -> dict[str, set[str]]:
    """The values each cell field takes in a run's records, as text."""
    return {f.name: {json.dumps(r["config"].get(f.name)) for r in records.values()} for f in dataclasses.fields(Cell)}


def key_fields(comparisons: list[Comparison]) -> list[str]:
    """Cell fields whose values differ between the compared cells: what tells the rows apart."""
    names = [
        name
        for name in (f.name for f in dataclasses.fields(Cell))
        if len({str(c.config.get(name)) for c in comparisons}) > 1
    ]
    return names or ["backbone", "classes", "batch_size"]


def comparison_frame(comparisons: list[Comparison]) -> pd.DataFrame:
    """One row per cell: what tells it apart, samples/sec in A and B as entries, their ratio, the verdict."""
    fields = key_fields(comparisons)
    rows = [
        {
            "cell": c.cell_id,
            **{name: "" if c.config.get(name) is None else str(c.config[name]) for name in fields},
            "A": speed_entry(c.a, after=(EMULATED,)),
            "B": speed_entry(c.b, after=(EMULATED,)),
            "ratio": "" if c.ratio is None else f"{c.ratio:.3f}",
            "p-value": "" if c.p_value is None else f"{c.p_value:.2g}",
            "verdict": f"{c.verdict} ({c.why})" if c.why else c.verdict,
        }
        for c in comparisons
    ]
    return pd.DataFrame(rows)


def render_comparison(comparisons: list[Comparison]) -> str:
    """The comparison table (tabulate, github style) and a one-line count of verdicts."""
    if not comparisons:
        return "No records in either run."
    table = markdown_table(comparison_frame(comparisons))
    counts = Counter(c.verdict for c in comparisons)
    return table + "\n\n" + ", ".join(f"{count} {verdict}" for verdict, count in counts.items())


GATES = {"slower": ("slower",), "failing": ("newly failing",), "incomparable": ("incomparable",)}
"""What `compare --fail-on` can fail on, and the verdicts each name covers."""


def parse_gates(text: str) -> tuple[str, ...]:
    """--fail-on's comma-separated names, each one of GATES."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in GATES]
    if unknown or not names:
        raise ValueError(f"--fail-on {text!r}: give one or more of {', '.join(GATES)}, comma-separated")
    return names


def gate_failures(comparisons: list[Comparison], gates: tuple[str, ...]) -> list[str]:
    """One line per cell whose verdict a gate fails on: the verdict, the cell id and what tells it apart."""
    verdicts = {verdict for gate in gates for verdict in GATES[gate]}
    fields = key_fields(comparisons)
    lines = []
    for c in comparisons:
        if c.verdict in verdicts:
            setting = ", ".join(f"{name} {c.config.get(name)}" for name in fields)
            ratio = f", {c.ratio:.2f}x" if c.ratio is not None else ""
            why = f" ({c.why})" if c.why else ""
            lines.append(
                f"{c.verdict}: cell {c.cell_id} ({setting}{ratio}): {speed_text(c.a)} -> {speed_text(c.b)}{why}"
            )
    return lines
