"""What `pfcbench report` runs: a results folder read, rendered as markdown (with PNG plots) or exported flat, and written; or a matrix's published report."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from bench.matrix import Matrix, load_matrix
from bench.report.markdown import published_server, render_markdown
from bench.report.predicted import predicted_columns
from bench.report.read import read_run, run_env
from bench.report.tables import Added, published_record
from bench.store.files import FileError, make_folder, refuse_results_file
from bench.store.owned import write_owned
from bench.store.results import ReportError, Results, latest_by_cell, temporary_path

FORMAT_SUFFIXES = {"md": ".md", "csv": ".csv", "json": ".json"}


def export(records: list[dict], fmt: str) -> str:
    """Records flattened to one row each (config.* columns, figures), as csv or json text."""
    frame = pd.json_normalize(records)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2) + "\n"
    if fmt == "csv":
        return frame.map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v).to_csv(index=False)
    raise ValueError(f"format must be csv or json, not {fmt!r}")


def write_report(
    results_dir: Path,
    *,
    out: Path | None = None,
    fmt: str = "md",
    matrix_path: Path | None = None,
    as_published: bool = False,
    added: Sequence[Added] = (),
) -> tuple[Path, Results]:
    """Render a results directory to out (default report/<name>.<fmt>, PNG plots beside a markdown one).

    Returns the path written and what was read from results.jsonl (with the lines skipped).
    Refuses to write over the files of a results folder. as_published prints the published
    server's spec (the matrix's published_spec) in place of the machine that ran; added columns
    (hours per training run) go into every table. Unless as_published, a run on a GPU of the
    catalogue gets the time model's samples/sec beside the measured ones (bench.report.predicted).
    """
    matrix, results = read_run(results_dir, matrix_path)
    latest = latest_by_cell(results.records)
    out = Path(out or Path("report") / f"{matrix.name}{FORMAT_SUFFIXES[fmt]}")
    prepare_out(out)
    if fmt == "md":
        env, note = run_env(Path(results_dir), matrix, latest)
        added = (*added, *(() if as_published else predicted_columns(env)))
        notes = [note] if note else []
        notes += [extra.note for extra in added]

        def render(staging: Path) -> str:
            return render_markdown(
                published_server(matrix, ran_on=Path(results_dir)) if as_published else matrix,
                latest,
                env,
                plots_dir=staging,
                notes=notes,
                as_published=as_published,
                added=added,
            )

        write_out(out, render)
    else:
        write_out(out, lambda _: export(list(latest.values()), fmt))
    return out, results


def prepare_out(out: Path) -> None:
    """Make the folder a report goes to; ReportError where out is a results folder's own file or cannot be made."""
    try:
        refuse_results_file(out)
        make_folder(out.parent, "-o")
    except FileError as exc:
        raise ReportError(str(exc)) from None
    try:
        longest = os.pathconf(out.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        longest = 255
    if len(os.fsencode(temporary_path(out).name)) > longest:  # said before any plot is written beside it
        raise ReportError(f"{out}: cannot write: File name too long (the file system takes {longest} bytes a name)")


def write_out(out: Path, render: Callable[[Path], str]) -> None:
    """Write a report whole (or not at all), with the plots render(staging) writes beside it (bench.store.owned);
    ReportError, one line, where it would replace a file pfcbench report did not write or the file system refuses."""
    try:
        write_owned(out, render)
    except FileError as exc:
        raise ReportError(str(exc)) from None
    except OSError as exc:
        raise ReportError(f"{out}: cannot write: {exc.strerror}") from None


def has_published_figures(matrix: Matrix) -> bool:
    """Whether any row of the matrix gives a published figure (samples/sec, Fail or GPU memory)."""
    rows = [row for section in matrix.sections for row in section.rows]
    return any(row.published is not None or row.published_gpu_mem_gb is not None for row in rows)


def published_records(matrix: Matrix) -> dict[str, dict]:
    """The published figures of a matrix's rows (those pfcbench runs) as records, by cell id."""
    return {
        row.cell.cell_id: published_record(row)
        for section in matrix.sections
        for row in section.rows
        if row.published is not None and row.not_run is None
    }


def published_source(matrix: Matrix) -> str:
    """The last note of a published report: nothing in it was measured."""
    return (
        f"These are the published figures, from the matrix {matrix.name} alone: nothing here was measured "
        f"(the report of a run of it, results/{matrix.name}, sets its figures beside these)."
    )


def write_published(matrix_path: Path, *, out: Path | None = None, added: Sequence[Added] = ()) -> Path:
    """Write the published report a matrix reproduces, from the matrix alone (default report/<name>-published.md).

    Every row shows its published figures (samples/sec or Fail, GPU memory), the tables laid out as the
    matrix says, under the published server's spec; a last note says that nothing was measured. The
    default file is not the one a report of a run writes. ReportError for a matrix with no published figure.
    """
    matrix = load_matrix(matrix_path)
    if not has_published_figures(matrix):
        raise ReportError(
            f"{matrix.name}: the matrix gives no published figure; report takes a results folder: results/{matrix.name}"
        )
    records = published_records(matrix)
    out = Path(out or Path("report") / f"{matrix.name}-published.md")
    prepare_out(out)
    text = render_markdown(
        published_server(matrix),
        records,
        None,
        notes=[extra.note for extra in added],
        as_published=True,
        added=added,
        source=published_source(matrix),
    )
    write_out(out, lambda _: text)
    return out
