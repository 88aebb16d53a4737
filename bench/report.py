"""The report of a matrix run: result records -> markdown in the arcface_torch layout, PNG plots, flat exports.

`render_markdown` follows insightface's published speed reports (title, blurb, "Test Server Spec",
numbered notes, one table per section); the tables are pandas DataFrames printed by tabulate.
`write_report` is what `pfcbench report` runs: it reads a results directory and writes the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config import Cell, shown
from bench.files import FileError, make_folder, read_text, refuse_results_file
from bench.machine import server_spec
from bench.matrix import METRICS, SEARCH_METRICS, Column, Matrix, Row, Section, load_matrix
from bench.results import (
    EMULATED,
    ReportError,
    Results,
    emulated_mark,
    is_ok,
    latest_by_cell,
    mark,
    read_results,
    write_atomic,
)
from bench.search import bounds, recorded_probes
from bench.verdicts import NONFINITE, legend_lines, nonfinite, speed_mark

LEGEND = {
    "Error": "the job failed for a reason other than memory (see the record's error in results.jsonl)",
    "Timeout": "the job was stopped at the wall-clock or inactivity limit",
    "Skipped": "not run",
    "—": "not run yet",
    EMULATED.strip(): "only rank 0 of the cell's ranks ran, alone on one device, fed made-up embeddings of the "
    "others: its memory is rank 0's, its samples/sec an estimate without communication",
}
"""Explanation printed under a table for each mark in it; "Fail" (out of memory) is the published convention."""

AUTO_FORMATS = {
    "samples_per_s": "speed",
    "published": "speed",
    "spread": "percent",
    "ratio": "ratio",
    "published_gpu_mem_gb": "approx1",
    "gpu_mem_ratio": "ratio",
    "step_time_ms": "float1",
    "gpu_mem_gb": "float1",
    "peak_allocated_gib": "float2",
    "peak_rss_gib": "float2",
    "power_w": "int",
    "energy_per_1k_j": "float1",
    "tflops": "float2",
    "mfu": "percent",
    "largest": "int",
    "smallest_oom": "int",
    "num_probes": "int",
}

FORMATTERS = {
    "text": str,
    "check": lambda value: "√" if value else "×",
    "speed": lambda value: f"~{round(value)}",
    "approx1": lambda value: f"~{value:.1f}",
    "int": lambda value: str(round(value)),
    "float1": lambda value: f"{value:.1f}",
    "float2": lambda value: f"{value:.2f}",
    "percent": lambda value: f"{value * 100:.1f}%",
    "ratio": lambda value: f"{value:.2f}",
}

SCALED_METRICS = {
    "samples_per_s": ("samples_per_s", 1.0),
    "step_time_ms": ("step_time_s_median", 1000.0),
    "gpu_mem_gb": ("gpu_mem_used_mib_max", 1 / 1024),
    "peak_allocated_gib": ("peak_allocated_mib_max", 1 / 1024),
    "peak_rss_gib": ("peak_rss_mib_max", 1 / 1024),
    "power_w": ("power_w", 1.0),
    "energy_per_1k_j": ("energy_j_per_1k_samples", 1.0),
    "tflops": ("achieved_tflops", 1.0),
    "mfu": ("mfu", 1.0),
}
"""Metric -> (record key, factor): a GB here is 1024 MiB, as nvidia-smi and gpustat users read it."""

MEMORY_KEYS = {
    "gpu_mem_used_mib_max": "peak GPU memory (NVML), GiB",
    "peak_allocated_mib_max": "peak torch allocated, GiB",
    "peak_rss_mib_max": "peak RSS, GiB",
}
"""Peak memory a plot shows: the first of these that the section's records have, and its axis label."""

FORMAT_SUFFIXES = {"md": ".md", "csv": ".csv", "json": ".json"}

PUBLISHED_COLUMNS = {
    "samples_per_s": (Column(header="Published", field="published"), Column(header="Ratio", field="ratio")),
    "gpu_mem_gb": (
        Column(header="Published Mem(GB)", field="published_gpu_mem_gb"),
        Column(header="Mem ratio", field="gpu_mem_ratio"),
    ),
}
"""Columns a report adds after a measured one where rows have a published figure to set beside it."""

FAIL_AGAINST_FAIL = {
    (True, True): "both Fail",
    (True, False): "measured Fail",
    (False, True): "published Fail",
}
"""The ratio column of a row where the cell (first) or the published run (second) ran out of memory."""


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def metric_value(name: str, row: Row, record: dict | None) -> Any:
    """A result column's value for one row: a number, a mark, "Fail" (published) or None (blank)."""
    if name == "published":
        return row.published
    if name == "status":
        return record["status"] if record else "not run"
    if name == "published_gpu_mem_gb":
        return row.published_gpu_mem_gb
    if nonfinite(record):  # not a training speed: neither it nor figures from it are shown
        return NONFINITE if name == "samples_per_s" else None
    if name == "ratio":
        return speed_ratio(row, record)
    if name == "gpu_mem_ratio":
        measured = metric_value("gpu_mem_gb", row, record)
        return measured / row.published_gpu_mem_gb if is_number(measured) and row.published_gpu_mem_gb else None
    if name in SEARCH_METRICS:
        value = record[name] if record else None
        return mark(record) if name == "largest" and value is None else value
    if not is_ok(record):
        return mark(record) if name == "samples_per_s" else None
    if name == "spread":
        low, high, median = (record.get(k) for k in ("samples_per_s_min", "samples_per_s_max", "samples_per_s"))
        return (high - low) / median if all(is_number(v) for v in (low, high, median)) and median else None
    key, factor = SCALED_METRICS[name]
    value = record.get(key)
    return value * factor if is_number(value) else None


def speed_ratio(row: Row, record: dict | None) -> float | str | None:
    """Measured over published samples/sec; where either ran out of memory, which did (see FAIL_AGAINST_FAIL)."""
    measured_fail = record is not None and record.get("status") == "oom"
    if (measured_fail or is_ok(record)) and (row.published == "Fail" or is_number(row.published)):
        if measured_fail or row.published == "Fail":
            return FAIL_AGAINST_FAIL[(measured_fail, row.published == "Fail")]
        return record["samples_per_s"] / row.published
    return None


def with_published(section: Section) -> tuple[Column, ...]:
    """The section's columns plus Published and Ratio after each measured column that rows have a published figure for.

    A section that shows a published column itself is left as written.
    """
    fields = {c.field for c in section.columns}
    has_figure = {
        "samples_per_s": any(row.published is not None for row in section.rows),
        "gpu_mem_gb": any(row.published_gpu_mem_gb is not None for row in section.rows),
    }
    columns = []
    for column in section.columns:
        columns.append(column)
        added = PUBLISHED_COLUMNS.get(column.field, ())
        if has_figure.get(column.field) and not fields & {c.field for c in added}:
            columns.extend(added)
    return tuple(columns)


def format_value(value: Any, fmt: str, field: str | None) -> str:
    """Print a value in a column format; text (marks, "Fail") prints as it is and None as blank."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if fmt == "auto":
        fmt = AUTO_FORMATS.get(field, "check" if isinstance(value, bool) else "text")
    return FORMATTERS[fmt](value)


def cell_text(column: Column, row: Row, record: dict | None) -> str:
    """What one table cell prints: the row's label, else the column's text, label or formatted value."""
    if column.header in row.labels:
        return row.labels[column.header]
    if column.text is not None:
        return column.text
    value = metric_value(column.field, row, record) if column.field in METRICS else getattr(row.cell, column.field)
    if str(value) in column.labels:
        return column.labels[str(value)]
    text = format_value(value, column.format, column.field)
    return (
        text + emulated_mark(record) + speed_mark(record)
        if column.field == "samples_per_s" and is_number(value)
        else text
    )


def row_records(section: Section, records_by_id: dict[str, dict]) -> list[dict | None]:
    """The record each row shows: its cell's, or in a search section its search's answer."""
    if section.search is None:
        return [records_by_id.get(row.cell.cell_id) for row in section.rows]
    return [search_answer(row.cell, section.search, records_by_id) for row in section.rows]


def search_answer(cell: Cell, field: str, records_by_id: dict[str, dict]) -> dict | None:
    """The record of the largest value that ran ok (an oom record if none did), with the search's answer."""
    probes = recorded_probes(records_by_id, cell, field)
    if not probes:
        return None
    largest, smallest_oom = bounds({value: record["status"] == "ok" for value, record in probes.items()})
    shown = probes[largest] if largest is not None else probes[min(probes)]
    return dict(shown, largest=largest, smallest_oom=smallest_oom, num_probes=len(probes))


def section_frame(section: Section, records_by_id: dict[str, dict], *, as_published: bool = False) -> pd.DataFrame:
    """The section's table as text, one row per matrix row, columns in the matrix's order.

    Unless as_published, rows with a published figure get it and the ratio beside the measured one.
    """
    columns = section.columns if as_published else with_published(section)
    records = row_records(section, records_by_id)
    rows = [[cell_text(c, row, record) for c in columns] for row, record in zip(section.rows, records)]
    return pd.DataFrame(rows, columns=[c.header for c in columns])


def markdown_table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def legend(frame: pd.DataFrame, records: list[dict | None]) -> str:
    """One line explaining each mark that appears in the table, with the reasons cells were skipped."""
    shown = set(frame.to_numpy().ravel())
    if any(emulated_mark(record) for record in records):
        shown.add(EMULATED.strip())
    reasons = list(dict.fromkeys(r["reason"] for r in records if r and r["status"] == "skipped" and r.get("reason")))
    parts = []
    for text, meaning in LEGEND.items():
        if text in shown:
            detail = f" ({'; '.join(reasons)})" if text == "Skipped" and reasons else ""
            parts.append(f"{text}: {meaning}{detail}.")
    return " ".join(parts + legend_lines(records))


def spec_frame(env: dict[str, Any], overrides: dict[str, str]) -> pd.DataFrame:
    """The "Test Server Spec" rows, in the order of the matrix's spec (its lines become rows).

    A key the matrix gives replaces the measured rows of that key; a measured key it does not give
    keeps its place before the next one it does (System before CPU, Cooling after GPU).
    """
    measured = list(server_spec(env))
    rows: list[tuple[str, str]] = []
    for key, value in overrides.items():
        place = next((i for i, (k, _) in enumerate(measured) if k == key), 0)
        rows += [r for r in measured[:place] if r[0] not in overrides]
        measured = measured[place:]
        rows += [(key, line) for line in value.strip().splitlines() or [""]]
    rows += [r for r in measured if r[0] not in overrides]
    return pd.DataFrame(rows, columns=["Key", "Value"])


def provenance(matrix: Matrix, records_by_id: dict[str, dict]) -> str:
    """The note saying which harness, implementation and precision produced the numbers."""
    probes = [r for cell, field in matrix.searches() for r in recorded_probes(records_by_id, cell, field).values()]
    cells = [c for c in matrix.cells() if c.cell_id in records_by_id] + [Cell.from_dict(r["config"]) for r in probes]
    if not cells:
        return "No cell of this matrix has been run yet."
    versions = listed(records_by_id[c.cell_id].get("harness_version") for c in cells) or "(version not recorded)"
    precisions = listed(c.precision for c in cells)
    per_row = " (per row as shown)" if "," in precisions else ""
    return (
        f"Measured with pfcbench {versions}, {impl_note(matrix, records_by_id)}; "
        f"precision {precisions}{per_row}; TF32 {listed('on' if c.tf32 else 'off' for c in cells)}; "
        f"device {listed(c.device for c in cells)}."
    )


def impl_note(matrix: Matrix, records_by_id: dict[str, dict]) -> str:
    """Which impl made each number: one name, else each impl with the sections and rows it made.

    A section whose table has an impl column is left to its table ("per row as shown").
    """
    measured = {}
    for number, section in enumerate(matrix.sections, start=1):
        rows = [(i, row.cell.impl) for i, row in enumerate(section.rows, start=1) if row.cell.cell_id in records_by_id]
        if rows:
            measured[number] = (section, rows)
    impls = listed(impl for _, rows in measured.values() for _, impl in rows)
    if "," not in impls:
        return f"impl {impls}"
    places: dict[str, list[str]] = {}
    in_tables = []
    for number, (section, rows) in measured.items():
        if any(c.field == "impl" for c in section.columns):
            in_tables.append(str(number))
            continue
        for impl in dict.fromkeys(impl for _, impl in rows):
            made = [str(i) for i, row_impl in rows if row_impl == impl]
            which = "" if len(made) == len(rows) else f" row{'s' * (len(made) > 1)} {', '.join(made)}"
            places.setdefault(impl, []).append(f"section {number}{which}")
    parts = [f"{impl} ({' and '.join(where)})" for impl, where in places.items()]
    if in_tables:
        parts.append(f"per row as shown in section {', '.join(in_tables)}")
    return "impl " + ", ".join(parts)


def listed(values) -> str:
    """Distinct values in order of first appearance, comma-separated; None is left out."""
    return ", ".join(dict.fromkeys(str(v) for v in values if v is not None))


def render_markdown(
    matrix: Matrix,
    records_by_id: dict[str, dict],
    env: dict[str, Any],
    *,
    plots_dir: Path | None = None,
    markdown_dir: Path | None = None,
    notes: list[str] | None = None,
    as_published: bool = False,
) -> str:
    """The report of a matrix: records_by_id maps cell id -> latest record, env is describe_machine().

    With plots_dir, each section with a finished cell gets a PNG there, linked relative to
    markdown_dir (default plots_dir), where the markdown is meant to be saved. notes are added
    after the matrix's own. as_published leaves out the Published and Ratio columns a matrix does
    not ask for itself.
    """
    report = matrix.report
    notes = [*report.get("notes", []), *(notes or []), provenance(matrix, records_by_id)]
    parts = [
        f"# {report.get('title') or matrix.name}",
        report.get("blurb", "").strip(),
        "## Test Server Spec",
        markdown_table(spec_frame(env, report.get("spec", {}))),
        report.get("spec_note", "").strip(),
        f"## {report['heading']}" if report.get("heading") else "",
        report.get("intro", "").strip(),
        ("\n" if report.get("tight_notes") else "\n\n").join(f"{i}. {note}" for i, note in enumerate(notes, start=1)),
    ]
    for number, section in enumerate(matrix.sections, start=1):
        plot = None
        if plots_dir is not None:
            plot = plot_section(section, records_by_id, Path(plots_dir) / f"{matrix.name}-section-{number}.png")
        parts += section_parts(section, records_by_id, plot, Path(markdown_dir or plots_dir or "."), as_published)
    return "\n\n".join(p for p in parts if p) + "\n"


def section_parts(
    section: Section, records_by_id: dict[str, dict], plot: Path | None, markdown_dir: Path, as_published: bool
) -> list[str]:
    frame = section_frame(section, records_by_id, as_published=as_published)
    records = row_records(section, records_by_id)
    link = f"![{section.title or 'plot'}]({Path(os.path.relpath(plot, markdown_dir)).as_posix()})" if plot else ""
    heading = f"### {section.title}" if section.title else ""
    return [heading, section.text.strip(), markdown_table(frame), legend(frame, records), link]


def varying_fields(section: Section) -> list[str]:
    """Cell fields that take more than one value among the section's rows, most distinct values first."""
    counts = {f.name: len({getattr(row.cell, f.name) for row in section.rows}) for f in dataclasses.fields(Cell)}
    return sorted((name for name, count in counts.items() if count > 1), key=lambda name: -counts[name])


def plot_section(section: Section, records_by_id: dict[str, dict], path: Path) -> Path | None:
    """Samples/sec (and peak memory where recorded) of a section's rows as a PNG; None if nothing finished.

    Against the one cell field that varies when it is a number (a line), else one bar per row.
    """
    from matplotlib.figure import Figure

    records = row_records(section, records_by_id)
    if not any(is_ok(r) for r in records):
        return None
    series = [("samples/sec", [metric_or_nan(r, "samples_per_s") for r in records])]
    memory_key = next((k for k in MEMORY_KEYS if any(is_number(metric_or_nan(r, k)) for r in records)), None)
    if memory_key:
        series.append((MEMORY_KEYS[memory_key], [metric_or_nan(r, memory_key) / 1024 for r in records]))
    varying = varying_fields(section)
    numeric_axis = len(varying) == 1 and all(is_number(getattr(row.cell, varying[0])) for row in section.rows)
    fig = Figure(figsize=(6.4 * len(series), 0.5 * len(records) + 2.5), layout="constrained")
    fig.suptitle(section.title + (EMULATED if any(row.cell.emulated for row in section.rows) else ""))
    for ax, (name, values) in zip(fig.subplots(1, len(series), squeeze=False)[0], series, strict=True):
        if numeric_axis:
            draw_line(ax, [getattr(row.cell, varying[0]) for row in section.rows], values, varying[0], name)
        else:
            draw_bars(ax, [row_label(row, varying) for row in section.rows], values, name)
        for i, record in enumerate(records):
            if not is_ok(record):
                xy = (getattr(section.rows[i].cell, varying[0]), 0) if numeric_axis else (0, i)
                ax.annotate(mark(record), xy, fontsize=8, color="tab:red", va="center")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def row_label(row: Row, varying: list[str]) -> str:
    return ", ".join(f"{name} {getattr(row.cell, name)}" for name in varying) or row.cell.cell_id


def metric_or_nan(record: dict | None, key: str) -> float:
    value = record.get(key) if is_ok(record) else None
    return value if is_number(value) else math.nan


def draw_line(ax, xs: list, values: list[float], xlabel: str, ylabel: str) -> None:
    ax.plot(xs, values, marker="o")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def draw_bars(ax, labels: list[str], values: list[float], xlabel: str) -> None:
    positions = range(len(labels))
    ax.barh(positions, [0 if math.isnan(v) else v for v in values])
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def export(records: list[dict], fmt: str) -> str:
    """Records flattened to one row each (config.* columns, figures), as csv or json text."""
    frame = pd.json_normalize(records)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2) + "\n"
    if fmt == "csv":
        return frame.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v).to_csv(index=False)
    raise ValueError(f"format must be csv or json, not {fmt!r}")


def read_json(path: Path) -> dict:
    try:
        value = json.loads(read_text(path))
    except FileError as exc:
        raise ReportError(str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise ReportError(f"{path}: cannot read: not JSON ({str(exc)[:80]})") from None
    if not isinstance(value, dict):
        raise ReportError(f"{path}: cannot read: not a JSON object")
    return value


def read_envs(results_dir: Path, records: list[dict]) -> dict[str, tuple[dict, int]]:
    """The machine descriptions the records point at (env.json for records that name none), with their record counts."""
    counts: dict[str, int] = {}
    for record in records:
        name = record.get("env") if isinstance(record.get("env"), str) else "env.json"
        counts[name] = counts.get(name, 0) + 1
    counts = counts or {"env.json": 0}
    for name in counts:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ReportError(f"{results_dir}: a record points at {shown(name)}, outside the results folder")
    return {name: (read_json(Path(results_dir) / name), count) for name, count in counts.items()}


def mixed_env_note(envs: dict[str, tuple[dict, int]]) -> str | None:
    """A note saying that the records come from several machine descriptions, and how those differ."""
    if len(envs) < 2:
        return None
    keys = sorted({key for env, _ in envs.values() for key in env})
    differ = [k for k in keys if len({json.dumps(env.get(k), sort_keys=True) for env, _ in envs.values()}) > 1]
    listing = ", ".join(f"{name} ({count} cells)" for name, (_, count) in envs.items())
    return (
        f"These records come from {len(envs)} environments, which differ in {', '.join(differ) or 'nothing shown'}: "
        f"{listing}. The server spec above is the one of most cells."
    )


def load_results(results_dir: Path, matrix_path: Path | None = None) -> tuple[Matrix, Results]:
    """The matrix a results directory ran (its matrix.toml unless given) and its records, oldest first.

    When the records carry the cell-field overrides the run was started with ("overrides"), the
    newest ones are applied, so that the matrix's cells have the ids the run recorded.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ReportError(f"{results_dir}: no such results directory")
    results_path = results_dir / "results.jsonl"
    if not results_path.exists():
        raise ReportError(f"{results_path}: no such file")
    results = read_results(results_path)
    matrix_path = Path(matrix_path or results_dir / "matrix.toml")
    if not matrix_path.exists():
        raise ReportError(f"{matrix_path}: no such file (give the matrix with --matrix FILE)")
    overrides = next((r["overrides"] for r in reversed(results.records) if r.get("overrides")), {})
    return load_matrix(matrix_path, overrides if isinstance(overrides, dict) else {}), results


def load_run(results_dir: Path, matrix_path: Path | None = None) -> tuple[Matrix, list[dict]]:
    """The matrix a results directory ran and its records, oldest first (see load_results)."""
    matrix, results = load_results(results_dir, matrix_path)
    return matrix, results.records


def write_report(
    results_dir: Path,
    *,
    out: Path | None = None,
    fmt: str = "md",
    matrix_path: Path | None = None,
    as_published: bool = False,
) -> tuple[Path, Results]:
    """Render a results directory to out (default report/<name>.<fmt>, PNG plots beside a markdown one).

    Returns the path written and what was read from results.jsonl (with the lines skipped).
    Refuses to write over the files of a results folder.
    """
    matrix, results = load_results(results_dir, matrix_path)
    latest = latest_by_cell(results.records)
    out = Path(out or Path("report") / f"{matrix.name}{FORMAT_SUFFIXES[fmt]}")
    try:
        refuse_results_file(out)
        make_folder(out.parent, "-o")
    except FileError as exc:
        raise ReportError(str(exc)) from None
    if fmt == "md":
        reported = [latest[c.cell_id] for c in matrix.cells() if c.cell_id in latest]
        envs = read_envs(Path(results_dir), reported)
        env = max(envs.values(), key=lambda pair: pair[1])[0]
        notes = [note] if (note := mixed_env_note(envs)) else []
        text = render_markdown(
            matrix,
            latest,
            env,
            plots_dir=out.parent,
            markdown_dir=out.parent,
            notes=notes,
            as_published=as_published,
        )
    else:
        text = export(list(latest.values()), fmt)
    try:
        write_atomic(out, text)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write: {exc.strerror}") from None
    return out, results
