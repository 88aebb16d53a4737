"""The metrics a report's tables show, one Metric object each, and the marks a figure can carry.

A matrix column names a metric by its key in METRICS. A table cell is an Entry: its value (a number,
a cell field's value, or None) with its marks kept apart (Fail in place of a figure, "(emulated)"
after one); text is made from an Entry only where a table is printed. Which ok record is a training
speed is bench.verdicts' rule, asked by every metric read from a record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bench.numbers import is_number
from bench.verdicts import LOADER_BOUND as LOADER_BOUND_TEXT
from bench.verdicts import NONFINITE, loader_bound, nonfinite, training_speed


@dataclass(frozen=True)
class Mark:
    """A word printed in place of a figure (Fail, Error) or after one ("(emulated)")."""

    text: str
    meaning: str = ""
    """The legend's line for it under a table; empty where it needs none (Fail is the published convention)."""
    follows: bool = False
    """Printed after a figure, not in its place."""


FAIL = Mark("Fail")
ERROR = Mark("Error", "the job failed for a reason other than memory (see the record's error in results.jsonl)")
TIMEOUT = Mark("Timeout", "the job was stopped at the wall-clock or inactivity limit")
SKIPPED = Mark("Skipped", "not run")
NOT_YET = Mark("—", "not run yet")
NOT_RUN = Mark("Not run", "a published row pfcbench does not run, shown with its published figures")
NO_SPEED = Mark("no speed", "the record is ok but holds no usable samples/sec (a damaged or hand-edited record)")
"""An ok record without a usable samples/sec."""
NAN = Mark(NONFINITE)
"""An ok record whose loss was not finite: no training speed (bench.verdicts.legend_lines explains it)."""
EMULATED = Mark(
    "(emulated)",
    "only rank 0 of the cell's ranks ran, alone on one device, fed made-up embeddings of the others: its memory "
    "is rank 0's, its samples/sec an estimate without communication",
    follows=True,
)
LOADER_BOUND = Mark(LOADER_BOUND_TEXT, follows=True)
"""After the samples/sec of a cell whose steps waited for their batches (bench.verdicts.legend_lines explains it)."""
BOTH_FAIL, MEASURED_FAIL, PUBLISHED_FAIL = Mark("both Fail"), Mark("measured Fail"), Mark("published Fail")
"""The ratio of a row where both, the measured cell alone, or the published run alone ran out of memory."""
NO_GPU = Mark("no GPU")
"""In place of the cost of a training run of a cell on the CPU, which uses no GPU-hours."""

STATUS_MARKS = {"oom": FAIL, "error": ERROR, "timeout": TIMEOUT, "skipped": SKIPPED, "not_run": NOT_RUN, None: NOT_YET}
"""The mark of a cell that did not finish; None is a cell not run yet, "not_run" a published row pfcbench
does not run (the matrix says why). Any other status reads as Error."""
STATUSES = tuple(STATUS_MARKS.values())


def status_mark(record: dict | None) -> Mark:
    """The mark of a cell without a figure: Fail, Error, Timeout, Skipped, Not run or —."""
    return STATUS_MARKS.get(record["status"] if record else None, ERROR)


def is_emulated(record: dict | None) -> bool:
    return bool(record and record.get("config", {}).get("emulated"))


FORMATTERS: dict[str, Callable[[Any], str]] = {
    "text": str,
    "check": lambda value: "√" if value else "×",
    "speed": lambda value: f"~{round(value)}",
    "approx1": lambda value: f"~{value:.1f}",
    "int": lambda value: str(round(value)),
    "float1": lambda value: f"{value:.1f}",
    "float2": lambda value: f"{value:.2f}",
    "percent": lambda value: f"{value * 100:.1f}%",
    "ratio": lambda value: f"{value:.2f}",
    "thousands1": lambda value: f"{value:,.1f}",
    "thousands0": lambda value: f"{value:,.0f}",
}
"""How a value prints, by format name."""

FORMATS = ("auto", "text", "check", "speed", "approx1", "int", "float1", "float2", "percent", "ratio")
"""The formats a matrix column may give: auto (its metric's own; √/× for a switch, else as text) or a formatter."""


@dataclass(frozen=True)
class Entry:
    """One cell of a table: a value and its marks, apart, with the format that prints the value.

    label is text the matrix fixes for the cell (a row's label, a column's constant or its label for
    the value): printed instead, it hides the value's marks too.
    """

    value: Any = None
    marks: tuple[Mark, ...] = ()
    format: str = "text"
    label: str | None = None

    @property
    def key(self) -> str:
        """The value as a matrix's column labels name it: str(value), or the mark that stands in its place."""
        return self.marks[0].text if self.value is None and self.marks else str(self.value)

    @property
    def shown_marks(self) -> tuple[Mark, ...]:
        return () if self.label is not None else self.marks

    def value_text(self) -> str:
        """The value formatted ("" where there is none), without its marks."""
        if self.value is None:
            return ""
        return self.value if isinstance(self.value, str) else FORMATTERS[self.format](self.value)

    def text(self) -> str:
        """What the cell prints: its label; else the value formatted, then the marks after it; else its mark."""
        if self.label is not None:
            return self.label
        words = [mark.text for mark in self.marks]
        if self.value is not None:
            words.insert(0, self.value_text())
        return " ".join(words)


class Published(Protocol):
    """What a metric reads of a matrix row besides its record: the published figures (bench.matrix.Row)."""

    published: float | str | None
    published_gpu_mem_gb: float | None


Reader = Callable[["Metric", Published, "dict | None"], Entry]


def read_scaled(metric: Metric, row: Published, record: dict | None) -> Entry:
    """A figure of the record times the metric's factor; blank unless the record is a training speed."""
    value = record.get(metric.key) if training_speed(record) is not None else None
    return Entry(value * metric.factor if is_number(value) else None, format=metric.format)


AFTER_SPEED = {EMULATED: is_emulated, LOADER_BOUND: loader_bound}
"""The marks that may follow samples/sec, and when each does."""


def speed_entry(record: dict | None, after: tuple[Mark, ...] = (EMULATED, LOADER_BOUND)) -> Entry:
    """Samples/sec where the record is a training speed, followed by those marks of after that hold; else NaN
    or no speed for an ok record, the status's mark for any other."""
    speed = training_speed(record)
    if speed is None:
        mark = (NAN if nonfinite(record) else NO_SPEED) if record and record["status"] == "ok" else status_mark(record)
        return Entry(marks=(mark,), format="speed")
    return Entry(speed, tuple(mark for mark in after if AFTER_SPEED[mark](record)), "speed")


def read_speed(metric: Metric, row: Published, record: dict | None) -> Entry:
    entry = speed_entry(record)
    return Entry(entry.value, entry.marks, metric.format)


def read_published(metric: Metric, row: Published, record: dict | None) -> Entry:
    """The row's published samples/sec, or Fail where the published run ran out of memory."""
    if row.published == "Fail":
        return Entry(marks=(FAIL,), format=metric.format)
    return Entry(row.published, format=metric.format)


def read_published_memory(metric: Metric, row: Published, record: dict | None) -> Entry:
    return Entry(row.published_gpu_mem_gb, format=metric.format)


def read_ratio(metric: Metric, row: Published, record: dict | None) -> Entry:
    """Measured over published samples/sec; where either ran out of memory, which did."""
    measured_fail = record is not None and record.get("status") == "oom"
    published_fail = row.published == "Fail"
    speed = training_speed(record)
    if not (measured_fail or speed is not None) or not (published_fail or is_number(row.published)):
        return Entry(format=metric.format)
    if measured_fail or published_fail:
        mark = BOTH_FAIL if measured_fail and published_fail else MEASURED_FAIL if measured_fail else PUBLISHED_FAIL
        return Entry(marks=(mark,), format=metric.format)
    return Entry(speed / row.published, format=metric.format)


def read_memory_ratio(metric: Metric, row: Published, record: dict | None) -> Entry:
    """Measured over published GPU memory."""
    measured = METRICS["gpu_mem_gb"].read(row, record).value
    published = row.published_gpu_mem_gb
    return Entry(measured / published if is_number(measured) and published else None, format=metric.format)


def read_spread(metric: Metric, row: Published, record: dict | None) -> Entry:
    """(fastest - slowest window) / median samples/sec, of a training speed."""
    if training_speed(record) is None:
        return Entry(format=metric.format)
    low, high, median = (record.get(k) for k in ("samples_per_s_min", "samples_per_s_max", "samples_per_s"))
    spread = (high - low) / median if all(is_number(v) for v in (low, high, median)) and median else None
    return Entry(spread, format=metric.format)


def read_status(metric: Metric, row: Published, record: dict | None) -> Entry:
    return Entry(record["status"] if record else "not run", format=metric.format)


def read_search(metric: Metric, row: Published, record: dict | None) -> Entry:
    """A search's answer, which the record it shows carries (bench.report.tables.search_answer); the
    largest value that fit is the status's mark where none did. A probe that trained NaN still answers
    the memory question it was run for."""
    value = record[metric.name] if record else None
    if value is None and metric.name == "largest":
        return Entry(marks=(status_mark(record),), format=metric.format)
    return Entry(value, format=metric.format)


HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True, kw_only=True)
class Metric:
    """A result a table's column may show: where its value comes from, how it prints and compares."""

    name: str
    """The column's field in a matrix."""
    header: str
    """Its column's heading where a report adds the column itself."""
    label: str
    """What it is, in a few words, for an axis or a line."""
    unit: str = ""
    format: str
    """The format of a column left at auto (a FORMATTERS name)."""
    better: str | None = None
    """HIGHER or LOWER where one value is better than another."""
    marks: tuple[Mark, ...] = ()
    """The marks its entries can carry."""
    key: str | None = None
    """The record's figure it is read from, times factor (a GB here is 1024 MiB, as nvidia-smi users read it)."""
    factor: float = 1.0
    reader: Reader = read_scaled
    search_only: bool = False
    """Only a search section has it: its answer and the probes it took."""

    def read(self, row: Published, record: dict | None) -> Entry:
        """The entry of one table row: row gives the published figures, record the measured ones."""
        return self.reader(self, row, record)

    def improves(self, new: float, old: float) -> bool:
        """Whether new is better than old; False for a metric without a better direction."""
        return new > old if self.better == HIGHER else new < old if self.better == LOWER else False


SPEED_MARKS = (*STATUSES, NO_SPEED, NAN, EMULATED, LOADER_BOUND)


def _metrics(*metrics: Metric) -> dict[str, Metric]:
    return {metric.name: metric for metric in metrics}


METRICS = _metrics(
    Metric(name="samples_per_s", header="Samples/sec", label="samples/sec", unit="samples/s", format="speed",
           better=HIGHER, marks=SPEED_MARKS, key="samples_per_s", reader=read_speed),
    Metric(name="spread", header="Spread", label="spread of window samples/sec over their median", format="percent",
           better=LOWER, reader=read_spread),
    Metric(name="step_time_ms", header="Step (ms)", label="median step time", unit="ms", format="float1",
           better=LOWER, key="step_time_s_median", factor=1000.0),
    Metric(name="gpu_mem_gb", header="GPU Mem(GB)", label="peak GPU memory (NVML)", unit="GB", format="float1",
           better=LOWER, key="gpu_mem_used_mib_max", factor=1 / 1024),
    Metric(name="peak_allocated_gib", header="Peak allocated (GiB)", label="peak torch allocated", unit="GiB",
           format="float2", better=LOWER, key="peak_allocated_mib_max", factor=1 / 1024),
    Metric(name="peak_rss_gib", header="Peak RSS (GiB)", label="peak RSS", unit="GiB", format="float2",
           better=LOWER, key="peak_rss_mib_max", factor=1 / 1024),
    Metric(name="power_w", header="Power (W)", label="power of its GPUs, summed", unit="W", format="int", better=LOWER,
           key="power_w"),
    Metric(name="energy_per_1k_j", header="Energy / 1k samples (J)", label="energy per 1000 samples", unit="J",
           format="float1", better=LOWER, key="energy_j_per_1k_samples"),
    Metric(name="published", header="Published", label="published samples/sec", unit="samples/s", format="speed",
           better=HIGHER, marks=(FAIL,), reader=read_published),
    Metric(name="ratio", header="Ratio", label="measured over published samples/sec", format="ratio",
           better=HIGHER, marks=(BOTH_FAIL, MEASURED_FAIL, PUBLISHED_FAIL), reader=read_ratio),
    Metric(name="published_gpu_mem_gb", header="Published Mem(GB)", label="published GPU memory", unit="GB",
           format="approx1", better=LOWER, reader=read_published_memory),
    Metric(name="gpu_mem_ratio", header="Mem ratio", label="measured over published GPU memory", format="ratio",
           better=LOWER, reader=read_memory_ratio),
    Metric(name="status", header="Status", label="the record's status", format="text", reader=read_status),
    Metric(name="tflops", header="TFLOP/s", label="achieved TFLOP/s", unit="TFLOP/s", format="float2",
           better=HIGHER, key="achieved_tflops"),
    Metric(name="mfu", header="MFU", label="model FLOPs utilisation", format="percent", better=HIGHER, key="mfu"),
    Metric(name="largest", header="Largest", label="largest value that fits", format="int", better=HIGHER,
           marks=STATUSES, reader=read_search, search_only=True),
    Metric(name="smallest_oom", header="Out of memory at", label="smallest value that ran out of memory",
           format="int", reader=read_search, search_only=True),
    Metric(name="num_probes", header="Probes", label="probes the search took", format="int", better=LOWER,
           reader=read_search, search_only=True),
)  # fmt: skip
"""Every metric a matrix column may show, by name."""

SEARCH_METRICS = tuple(name for name, metric in METRICS.items() if metric.search_only)
"""Metrics of a search section alone."""
