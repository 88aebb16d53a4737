"""Matrix files: TOML grids of cells, grouped into sections that each render as one table.

A matrix is data, read with tomllib and validated whole before anything runs. Every mistake is a
MatrixError whose text names the file, the place in it and the key.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import DERIVED_FIELDS, FIELD_TYPES, Cell, check_seconds, shown, unknown_field
from bench.gpus import GPUS, SERVERS
from bench.matrix_checks import (
    MAX_NAME_BYTES,
    MatrixError,
    check_cell_fields,
    check_keys,
    check_value,
    check_value_with,
    expect,
    is_folder_name,
    table,
)
from bench.metrics import FORMATS, METRICS, SEARCH_METRICS
from bench.numbers import is_number
from bench.plan.search import FIELDS
from bench.store.files import FileError, read_text

TOP_KEYS = {"name", "description", "report", "run", "defaults", "sections"}
REPORT_KEYS = {"title", "blurb", "spec", "spec_note", "heading", "intro", "notes", "tight_notes"}
PUBLISHED_REPORT_KEYS = {"published_spec", "published_spec_note", "gpu", "server"}
"""The published server's spec table and the line under it, for `report --as-published` of a published report,
and its GPU (bench.gpus.GPUS) and server (bench.gpus.SERVERS), which the time model predicts it on."""
RUN_KEYS = {"timeout_s": float, "inactivity_timeout_s": float, "prune_after_oom": bool}
SECTION_KEYS = {"title", "text", "columns", "set", "grid", "exclude", "rows", "search"}
COLUMN_KEYS = {"header", "field", "text", "format", "labels"}
ROW_EXTRA_KEYS = {"published", "published_gpu_mem_gb", "labels", "not_run"}


MAX_CELLS = 100_000
"""Most grid points and rows in one matrix, counted before a grid is expanded."""


@dataclass(frozen=True, kw_only=True)
class Column:
    """One column of a section's table."""

    header: str
    """The column's heading as printed."""
    field: str | None = None
    """A cell field, a derived field (fp16, partial_fc, world_size, per_gpu_batch) or a metric."""
    text: str | None = None
    """A constant shown in every row (a dataset name, say), when there is no field."""
    format: str = "auto"
    """How values print: auto, text, check (√/×), speed (~2190), approx1 (~18.2), int, float1, float2, percent, ratio."""
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    """Printed label for a value, keyed by the value as text ("2000000" = "2 Millions")."""


@dataclass(frozen=True, kw_only=True)
class Row:
    """One table row: a cell, the published figure to compare with, and label overrides."""

    cell: Cell
    published: float | str | None = None
    """Published samples/sec, or "Fail" where the published run ran out of memory."""
    published_gpu_mem_gb: float | None = None
    """Published GPU memory in GB (the A100 report's "GPU Mem(GB)"), compared with the measured peak."""
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    """Printed text for this row only, keyed by column header."""
    not_run: str | None = None
    """Why pfcbench cannot run this published row (its backbone, say); such a row is shown, never run."""


@dataclass(frozen=True, kw_only=True)
class Section:
    title: str
    """The section's heading; empty for a table printed without one (as under the A100 report's notes)."""
    text: str = ""
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    search: str | None = None
    """batch_size or classes: each row is the start of a search for the largest value that fits."""


@dataclass(frozen=True, kw_only=True)
class Matrix:
    name: str
    description: str
    """One line saying what the matrix measures, for `pfcbench matrices`."""
    path: Path
    report: dict[str, Any]
    run: dict[str, Any]
    sections: tuple[Section, ...]
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Cell fields set from the command line over every cell (--nproc, --max-memory-gib)."""
    section_numbers: tuple[int, ...] = ()
    """The sections of the file kept by --section, numbered from 1; () when every section is."""

    def cells(self) -> list[Cell]:
        """Every distinct cell in the order it first appears; a cell in two sections runs once."""
        unique: dict[str, Cell] = {}
        for section in self.sections:
            for row in section.rows if section.search is None else ():
                if row.not_run is None:
                    unique.setdefault(row.cell.cell_id, row.cell)
        return list(unique.values())

    def only_sections(self, numbers: tuple[int, ...]) -> Matrix:
        """This matrix with only the sections numbered (from 1) in numbers; all of them when none is."""
        if not numbers:
            return self
        wrong = [n for n in numbers if not 1 <= n <= len(self.sections)]
        if wrong:
            raise MatrixError(f"{self.path}: --section {wrong[0]}: the matrix has sections 1 to {len(self.sections)}")
        keep = sorted(set(numbers))
        return dataclasses.replace(
            self, sections=tuple(self.sections[n - 1] for n in keep), section_numbers=tuple(keep)
        )

    def not_run_rows(self) -> list[tuple[Section, Row]]:
        """(section, row) of every published row that cannot run, in the order written."""
        return [(section, row) for section in self.sections for row in section.rows if row.not_run is not None]

    def searches(self) -> list[tuple[Cell, str]]:
        """(start cell, field) of every distinct search, in the order written."""
        unique: dict[tuple[str, str], tuple[Cell, str]] = {}
        for section in self.sections:
            for row in section.rows if section.search else ():
                unique.setdefault((row.cell.cell_id, section.search), (row.cell, section.search))
        return list(unique.values())


def load_matrix(path: Path, overrides: dict[str, Any] | None = None) -> Matrix:
    """Read, validate and expand a matrix file; overrides replace cell fields in every cell."""
    if not Path(path).exists():
        raise MatrixError(f"{path}: no such matrix file")
    try:
        data = tomllib.loads(read_text(Path(path)))
    except FileError as exc:
        raise MatrixError(str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise MatrixError(f"{path}: not a matrix: arrays or tables nested too deeply") from None
    try:
        return parse_matrix(data, Path(path), overrides or {})
    except MatrixError as exc:
        raise MatrixError(f"{path}: {exc}") from None


def parse_matrix(data: dict[str, Any], path: Path, overrides: dict[str, Any]) -> Matrix:
    check_keys(data, TOP_KEYS, "top level")
    name = data.get("name", path.stem)
    expect(
        is_folder_name(name),
        f"name: must be a folder name for the results: 1 to {MAX_NAME_BYTES} bytes of UTF-8, no '/' or control "
        f"characters, no space at either end, not '.' or '..'; not {shown(name)}",
    )
    description = data.get("description", "")
    expect(isinstance(description, str) and "\n" not in description.strip(), "description: must be one line of text")
    report = table(data, "report")
    check_keys(report, REPORT_KEYS | PUBLISHED_REPORT_KEYS, "[report]")
    for key in ("title", "blurb", "heading", "intro", "spec_note", "published_spec_note"):
        expect(isinstance(report.get(key, ""), str), f"[report] {key}: must be text")
    expect(isinstance(report.get("tight_notes", False), bool), "[report] tight_notes: must be true or false")
    for key, known in (("gpu", GPUS), ("server", SERVERS)):
        expect(
            key not in report or report[key] in known,
            f"[report] {key}: unknown {key} {shown(report.get(key))}; known: {', '.join(known)}",
        )
    notes = report.get("notes", [])
    expect(
        isinstance(notes, list) and all(isinstance(n, str) for n in notes), "[report] notes: must be a list of texts"
    )
    spec = table(report, "spec", "[report] spec")
    expect(all(isinstance(v, str) for v in spec.values()), "[report.spec]: every value must be text")
    published_spec = table(report, "published_spec", "[report] published_spec")
    expect(
        all(isinstance(v, str) for v in published_spec.values()), "[report.published_spec]: every value must be text"
    )
    run = table(data, "run")
    check_keys(run, set(RUN_KEYS), "[run]")
    for key, kind in RUN_KEYS.items():
        if key in run and kind is bool:
            expect(isinstance(run[key], bool), f"[run] {key}: must be true or false, not {shown(run[key])}")
        elif key in run:
            check_value_with(check_seconds, f"[run] {key}", run[key])
    defaults = table(data, "defaults")
    check_cell_fields(defaults, "[defaults]")
    check_cell_fields(overrides, "command-line option")
    sections = data.get("sections")
    expect(isinstance(sections, list) and sections, "sections: a matrix needs at least one [[sections]] table")
    num_points = sum(count_points(section) for section in sections)
    expect(
        num_points <= MAX_CELLS,
        f"sections: {num_points:,} grid points and rows, more than the {MAX_CELLS:,} cells a matrix may have; "
        "split it into several matrices",
    )
    parsed = tuple(parse_section(section, i, {**defaults}, overrides) for i, section in enumerate(sections, start=1))
    return Matrix(
        name=name,
        description=description.strip(),
        path=path,
        report=report,
        run=run,
        sections=parsed,
        overrides=overrides,
    )


def count_points(section: Any) -> int:
    """Grid points (before exclusions) plus rows of a section, counted without expanding anything."""
    if not isinstance(section, dict):
        return 0
    grid, rows = section.get("grid"), section.get("rows")
    axes = grid.values() if isinstance(grid, dict) and grid else []
    size = math.prod(len(values) if isinstance(values, list) else 1 for values in axes) if axes else 0
    return size + (len(rows) if isinstance(rows, list) else 0)


def parse_section(section: Any, number: int, defaults: dict, overrides: dict) -> Section:
    where = f"sections[{number}]"
    expect(isinstance(section, dict), f"{where}: must be a table")
    if isinstance(section.get("title"), str) and section["title"]:
        where = f"{where} ({shown(section['title'])})"
    check_keys(section, SECTION_KEYS, where)
    expect(isinstance(section.get("title", ""), str), f"{where} title: must be text (leave it out for no heading)")
    expect(isinstance(section.get("text", ""), str), f"{where} text: must be text")
    fixed = table(section, "set", f"{where} set")
    check_cell_fields(fixed, f"{where} set")
    search = parse_search(section, where)
    columns = parse_columns(section.get("columns"), where)
    misplaced = next((c.field for c in columns if c.field in SEARCH_METRICS and search is None), None)
    expect(misplaced is None, f"{where} columns: {misplaced!r} needs a [sections.search] in this section")
    points = expand_grid(section, where) + explicit_rows(section, where)
    expect(points, f"{where}: has no cells (give a grid or rows)")
    rows = []
    headers = {column.header for column in columns}
    for place, point in points:
        unknown = sorted(set(point.get("labels", {})) - headers)
        if unknown:
            raise MatrixError(f"{where} {place} labels: {shown(unknown[0])} is not the header of a column")
        config = {**defaults, **fixed, **{k: v for k, v in point.items() if k not in ROW_EXTRA_KEYS}, **overrides}
        try:
            cell = Cell.from_dict(config)
        except ValueError as exc:
            layers = (
                ("a command-line option", overrides),
                (place, point),
                (f"{where} set", fixed),
                ("[defaults]", defaults),
            )
            field = str(exc).split()[0]
            origin = next((name for name, layer in layers if field in layer), place)
            note = "" if origin == place else f" ({field} comes from {origin})"
            raise MatrixError(f"{where} {place}: {exc}{note}") from None
        expect(
            search is None or cell.on_gpu or cell.max_memory_gib is not None,
            f"{where} {place}: a search on the CPU needs max_memory_gib, the memory a probe may not exceed",
        )
        rows.append(
            Row(
                cell=cell,
                published=point.get("published"),
                published_gpu_mem_gb=point.get("published_gpu_mem_gb"),
                labels=point.get("labels", {}),
                not_run=point.get("not_run"),
            )
        )
    return Section(
        title=section.get("title", ""), text=section.get("text", ""), columns=columns, rows=tuple(rows), search=search
    )


def parse_search(section: dict, where: str) -> str | None:
    """The field a section searches the largest value of, from its [sections.search] table; None for none."""
    if "search" not in section:
        return None
    search = table(section, "search", f"{where} search")
    check_keys(search, {"field"}, f"{where} search")
    field = search.get("field")
    expect(field in FIELDS, f"{where} search field: must be {' or '.join(FIELDS)}, not {field!r}")
    return field


def parse_columns(columns: Any, where: str) -> tuple[Column, ...]:
    expect(isinstance(columns, list) and columns, f"{where} columns: every section needs a list of columns")
    parsed = []
    for i, column in enumerate(columns, start=1):
        place = f"{where} columns[{i}]"
        expect(
            isinstance(column, dict), f'{place}: must be a table like {{ header = "Batch-size", field = "batch_size" }}'
        )
        check_keys(column, COLUMN_KEYS, place)
        expect(("field" in column) != ("text" in column), f"{place}: give exactly one of field or text")
        if "field" in column:
            known = (*FIELD_TYPES, *DERIVED_FIELDS, *METRICS)
            expect(column["field"] in known, f"{place} field: unknown field {shown(column['field'])}")
        expect(isinstance(column.get("text", ""), str), f"{place} text: must be text")
        header = column.get("header", column.get("field"))
        expect(isinstance(header, str) and header, f"{place} header: must be a non-empty text")
        expect(column.get("format", "auto") in FORMATS, f"{place} format: must be one of {', '.join(FORMATS)}")
        labels = column.get("labels", {})
        expect(
            isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values()),
            f"{place} labels: must map values to texts",
        )
        parsed.append(
            Column(
                header=header,
                field=column.get("field"),
                text=column.get("text"),
                format=column.get("format", "auto"),
                labels=labels,
            )
        )
    headers = [c.header for c in parsed]
    duplicate = next((h for h in headers if headers.count(h) > 1), None)
    expect(duplicate is None, f"{where} columns: header {shown(duplicate)} appears twice")
    return tuple(parsed)


def expand_grid(section: dict, where: str) -> list[tuple[str, dict]]:
    """Cartesian product of the grid's axes, in the order written, less the excluded points."""
    grid = table(section, "grid", f"{where} grid")
    for key, values in grid.items():
        expect(key in FIELD_TYPES, f"{where} grid: {unknown_field(key)}")
        expect(isinstance(values, list) and values, f"{where} grid {key}: must be a non-empty list")
        for value in values:
            check_value(key, value, f"{where} grid {key}")
    excludes = section.get("exclude", [])
    expect(
        isinstance(excludes, list) and all(isinstance(e, dict) for e in excludes),
        f"{where} exclude: must be [[sections.exclude]] tables",
    )
    for i, rule in enumerate(excludes, start=1):
        expect(rule, f"{where} exclude[{i}]: an empty rule would exclude every cell")
        for key, value in rule.items():
            expect(key in grid, f"{where} exclude[{i}] {key}: not an axis of the grid")
            check_value(key, value, f"{where} exclude[{i}] {key}")
            expect(
                value in grid[key],
                f"{where} exclude[{i}] {key}: {shown(value)} is not a value of the grid's {key} axis",
            )
    if not grid:
        return []
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    kept = [p for p in points if not any(all(p[k] == v for k, v in rule.items()) for rule in excludes)]
    return [(f"grid point {shown(point)}", point) for point in kept]


def explicit_rows(section: dict, where: str) -> list[tuple[str, dict]]:
    rows = section.get("rows", [])
    expect(
        isinstance(rows, list) and all(isinstance(r, dict) for r in rows),
        f"{where} rows: must be [[sections.rows]] tables",
    )
    for i, row in enumerate(rows, start=1):
        place = f"{where} rows[{i}]"
        check_cell_fields({k: v for k, v in row.items() if k not in ROW_EXTRA_KEYS}, place)
        published = row.get("published")
        expect(
            published is None or published == "Fail" or (is_number(published) and published > 0),
            f'{place} published: must be a positive number or "Fail", not {shown(published)}',
        )
        memory_gb = row.get("published_gpu_mem_gb")
        expect(
            memory_gb is None or (is_number(memory_gb) and memory_gb > 0),
            f"{place} published_gpu_mem_gb: must be a positive number of GB, not {shown(memory_gb)}",
        )
        labels = row.get("labels", {})
        expect(
            isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values()),
            f"{place} labels: must map column headers to texts",
        )
        not_run = row.get("not_run")
        expect(
            not_run is None or (isinstance(not_run, str) and not_run.strip()),
            f"{place} not_run: must be a text saying why the row cannot run, not {shown(not_run)}",
        )
    return [(f"rows[{i}]", row) for i, row in enumerate(rows, start=1)]


PACKAGED = Path(__file__).parent / "matrices"
"""The matrices that ship with pfcbench, each known by its file name less .toml."""


def packaged_matrices() -> dict[str, Path]:
    return {path.stem: path for path in sorted(PACKAGED.glob("*.toml"))}
