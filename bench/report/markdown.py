"""The markdown of a report in the arcface_torch layout: title, blurb, "Test Server Spec", numbered notes, one table per section."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config import Cell
from bench.matrix import Matrix, Section
from bench.plan.search import all_probes
from bench.report.marks import legend
from bench.report.plots import plot_section
from bench.report.server import server_spec
from bench.report.tables import Added, markdown_table, row_records, section_frame


def spec_frame(env: dict[str, Any] | None, overrides: dict[str, str]) -> pd.DataFrame:
    """The "Test Server Spec" rows, in the order of the matrix's spec (its lines become rows).

    A key the matrix gives replaces the measured rows of that key; a measured key it does not give
    keeps its place before the next one it does (System before CPU, Cooling after GPU). Without env
    (no machine ran anything) the rows are the matrix's alone.
    """
    measured = list(server_spec(env)) if env is not None else []
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
    probes = all_probes(matrix.searches(), records_by_id)
    cells = [c for c in matrix.cells() if c.cell_id in records_by_id] + [Cell.from_dict(r["config"]) for r in probes]
    if not cells:
        return "No cell of this matrix has been run yet."
    versions = listed(records_by_id[c.cell_id].get("harness_version") for c in cells) or "(version not recorded)"
    precisions = listed(c.precision for c in cells)
    per_row = " (per row as shown)" if "," in precisions else ""
    images = any(c.data == "synthetic" and c.backbone != "none" for c in cells)
    return (
        f"Measured with pfcbench {versions}, {impl_note(matrix, records_by_id)}; "
        f"precision {precisions}{per_row}; TF32 {listed('on' if c.tf32 else 'off' for c in cells)}; "
        f"device {listed(c.device for c in cells)}." + (f" {SYNTHETIC_IMAGES}" if images else "")
    )


SYNTHETIC_IMAGES = (
    "Synthetic images: each sample of a rank's batch is its own random image, made once on the device and fed "
    "every step; arcface_torch's SyntheticDataset repeats one image, whose batch trains NaN on some machines. "
    "The pixels differ, not what a step costs."
)
"""The provenance note's sentence on synthetic data, where a cell's backbone read synthetic images."""


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


def published_server(matrix: Matrix, ran_on: Path | None = None) -> Matrix:
    """The matrix with the published server's spec and its note where a run's report describes the machine.

    A matrix without a published spec keeps its own; ran_on, the results folder whose machine the spec
    then describes, is named in the spec's note, so that it is never read as the published server.
    """
    report = dict(matrix.report, spec=matrix.report.get("published_spec", matrix.report.get("spec", {})))
    report["spec_note"] = report.get("published_spec_note", report.get("spec_note", ""))
    if ran_on is not None and "published_spec" not in matrix.report:
        said = (
            f"The matrix {matrix.name} gives no published server spec ([report] published_spec): this is the "
            f"machine that ran {ran_on}, not a published one."
        )
        report["spec_note"] = f"{said} {report['spec_note'].strip()}".strip()
    return dataclasses.replace(matrix, report=report)


def render_markdown(
    matrix: Matrix,
    records_by_id: dict[str, dict],
    env: dict[str, Any] | None,
    *,
    plots_dir: Path | None = None,
    markdown_dir: Path | None = None,
    notes: list[str] | None = None,
    as_published: bool = False,
    added: Sequence[Added] = (),
    source: str | None = None,
) -> str:
    """The report of a matrix: records_by_id maps cell id -> latest record, env is describe_machine().

    With plots_dir, each section with a finished cell gets a PNG there, linked relative to
    markdown_dir (default plots_dir), where the markdown is meant to be saved. notes are added
    after the matrix's own. as_published leaves out the Published and Ratio columns a matrix does
    not ask for itself; added columns (hours per training run) go into every table. source, the
    last note, says where the figures come from (by default which harness and impl measured them).
    """
    report = matrix.report
    notes = [*report.get("notes", []), *(notes or []), source or provenance(matrix, records_by_id)]
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
        parts += section_parts(
            section, records_by_id, plot, Path(markdown_dir or plots_dir or "."), as_published, added
        )
    return "\n\n".join(p for p in parts if p) + "\n"


def section_parts(
    section: Section,
    records_by_id: dict[str, dict],
    plot: Path | None,
    markdown_dir: Path,
    as_published: bool,
    added: Sequence[Added],
) -> list[str]:
    frame = section_frame(section, records_by_id, as_published=as_published, added=added)
    records = row_records(section, records_by_id, as_published=as_published)
    link = f"![{section.title or 'plot'}]({Path(os.path.relpath(plot, markdown_dir)).as_posix()})" if plot else ""
    heading = f"### {section.title}" if section.title else ""
    return [heading, section.text.strip(), markdown_table(frame), legend(frame.to_numpy().ravel(), records), link]
