"""What an ok record's figures mean: a training speed or not, loader-bound or step-bound, a rank far from the others.

Small functions of one record each, for the report (a mark after samples/sec and its line under the
table) and for compare (a record whose loss was not finite is never called faster or slower).
"""

from __future__ import annotations

import statistics

from bench.numbers import is_number

LOADER_BOUND_FRACTION = 0.2
"""A cell is loader-bound when its steps spent more than this fraction of the measured time waiting
for their batches (the slowest rank's wait per window, summed over the windows). Below it the step
is the limit: more loader workers would not make it faster."""

MIN_GRAD_SCALE = 1.0
"""An fp16 cell whose GradScaler scale fell below this has collapsed (insightface issue 2262, "Grad
Scale 0"): its steps skip their updates."""

RANK_OUTLIER_RATIO = 1.5
"""A rank is named when its peak memory or its backbone forward time is more than this times the median
of the other ranks'. The forward is timed, not the whole step: a synchronous job's collectives make
every rank's step as long as the slowest one's, while the forward, which has no collective, shows
which rank is slow."""

NONFINITE = "NaN"
LOADER_BOUND = "(loader-bound)"
MEMORY_KEYS = ("peak_reserved_mib", "peak_rss_mib")


def nonfinite(record: dict | None) -> bool:
    """Whether an ok record's samples/sec are not a training speed: a non-finite loss, or a collapsed fp16 scale."""
    if not record or record.get("status") != "ok":
        return False
    scale = record.get("grad_scale")
    scale_collapsed = isinstance(scale, (int, float)) and not isinstance(scale, bool) and not scale >= MIN_GRAD_SCALE
    return bool(nonfinite_count(record)) or scale_collapsed


def nonfinite_count(record: dict) -> int | float:
    """How many timed steps had a NaN or infinite loss; a figure that is not a number (a damaged record) counts as absent."""
    count = record.get("nonfinite_losses")
    return count if is_number(count) and count > 0 else 0


def nonfinite_reason(record: dict) -> str:
    """Why nonfinite(record) holds, in a few words."""
    count = nonfinite_count(record)
    if count:
        return f"{count} of {record.get('measured_steps')} timed steps had a NaN or infinite loss"
    return f"the fp16 loss scale collapsed to {record.get('grad_scale')}"


def training_speed(record: dict | None) -> float | None:
    """The samples/sec of a record that is a training speed, else None: the one rule every output asks.

    A training speed is an ok record with a positive, finite samples/sec whose loss stayed finite (and
    whose fp16 loss scale did not collapse). A cell that trained NaN ran its steps, but what they cost
    is not what training costs: no table, plot, progress line, hours, cost or comparison shows it.
    """
    if not record or record.get("status") != "ok" or nonfinite(record):
        return None
    speed = record.get("samples_per_s")
    return float(speed) if is_number(speed) and speed > 0 else None


def not_a_speed(record: dict) -> str:
    """Why an ok record has no training_speed, in a few words: "NaN loss", "loss scale collapsed" or "no samples/sec"."""
    if nonfinite_count(record):
        return f"{NONFINITE} loss"
    return "loss scale collapsed" if nonfinite(record) else "no samples/sec"


def loader_bound(record: dict | None) -> bool:
    """Whether an ok record's steps waited for their batches more than LOADER_BOUND_FRACTION of the time."""
    fraction = (record or {}).get("loader_wait_fraction")
    return is_number(fraction) and fraction > LOADER_BOUND_FRACTION


def outlier_ranks(record: dict | None) -> list[str]:
    """One phrase per rank whose peak memory or forward time is far above the other ranks' median."""
    ranks = rank_figures(record)
    found: dict[str, list[str]] = {"peak memory": [], "forward time": []}
    for key, what in [*((k, "peak memory") for k in MEMORY_KEYS), ("forward_time_s_median", "forward time")]:
        values = {r["rank"]: r.get(key) for r in ranks if is_number(r.get(key))}
        if len(values) < 2 or found[what]:  # reserved memory, where there is some, names the rank; RSS need not
            continue
        for rank, value in values.items():
            median = statistics.median(v for r, v in values.items() if r != rank)
            if median > 0 and value > RANK_OUTLIER_RATIO * median:
                found[what].append(f"rank {rank} {what} {value / median:.1f}x the others'")
    return found["peak memory"] + found["forward time"]


def rank_figures(record: dict | None) -> list[dict]:
    """The per-rank figures of a record; an entry that is not an object with a whole-number rank (a damaged
    record) is left out, as absent."""
    ranks = (record or {}).get("ranks")
    if not isinstance(ranks, list):
        return []
    return [
        r for r in ranks if isinstance(r, dict) and isinstance(r.get("rank"), int) and not isinstance(r["rank"], bool)
    ]


def nonfinite_lines(records: list[dict | None]) -> list[str]:
    """The line under a table that explains its NaN cells, if it has any."""
    if not any(nonfinite(r) for r in records):
        return []
    reasons = "; ".join(dict.fromkeys(nonfinite_reason(r) for r in records if nonfinite(r)))
    return [f"{NONFINITE}: the loss was not finite, so samples/sec are not a training speed ({reasons})."]


def legend_lines(records: list[dict | None]) -> list[str]:
    """The lines under a table for its loader-bound cells, its far-off ranks and its NaN cells."""
    lines = nonfinite_lines(records)
    if any(loader_bound(r) for r in records):
        lines.append(
            f"{LOADER_BOUND}: the steps waited for their batches more than {LOADER_BOUND_FRACTION:.0%} of the "
            "measured time; the loader, not the step, set the speed."
        )
    if phrases := list(dict.fromkeys(phrase for r in records for phrase in outlier_ranks(r))):
        lines.append(
            f"Ranks far from the others (peak memory or backbone forward time over {RANK_OUTLIER_RATIO}x the "
            f"median of the other ranks'): {'; '.join(phrases)}."
        )
    return lines
