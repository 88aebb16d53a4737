"""`pfcbench report` and `pfcbench compare`: what results folders say, alone or side by side."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.commands.options import (
    InputError,
    matrix_file,
    number_in,
    one_line,
    training_options,
    warn_skipped,
)
from bench.matrix import packaged_matrices
from bench.store.results import latest_by_cell

if TYPE_CHECKING:
    from bench.report.training import TrainingColumns


class ReportUsageError(click.ClickException):
    """Report options that cannot be meant: one line, exit code 2."""

    exit_code = 2


@click.command("report")
@click.argument("results_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write; PNG plots go beside a markdown one.  [default: report/<matrix>.<format>]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "csv", "json"]),
    default="md",
    show_default=True,
    help="md: the report; csv, json: one flat row per cell.",
)
@click.option(
    "--matrix",
    "matrix_name",
    default=None,
    help="Matrix (a file or a packaged name) to lay the report out by, instead of RESULTS_DIR/matrix.toml.",
)
@click.option(
    "--as-published",
    is_flag=True,
    help="Tables exactly as the matrix lays them out, without the Published and Ratio columns added beside rows with a published figure, under the published server's spec.",
)
@training_options
def report_command(
    results_dirs: tuple[Path, ...],
    out: Path | None,
    fmt: str,
    matrix_name: str | None,
    as_published: bool,
    training: tuple[TrainingColumns, ...],
) -> None:
    """Render a results folder (results.jsonl, env.json, matrix.toml) as a markdown report, csv or json.

    Rows with a published figure show it beside the measured one, with their ratio ("both Fail"
    where the cell and the published run both ran out of memory). Several folders (from several
    machines) render as one table, a column per machine. A matrix (a packaged name or a file) with
    --as-published, instead of a results folder, prints the published report from the matrix alone.
    Prints the path written.

    \b
    Example:
        pfcbench report results/smoke
        pfcbench report results/rtx3080 -o report/rtx3080.md
        pfcbench report results/rtx3080 --format csv
        pfcbench report results/rtx3080 --as-published
        pfcbench report a100 --as-published
        pfcbench report results/a100 --train-on webface42m --epochs 20 --gpu-hour-price 2.5
        pfcbench report results/a100 results/h200
    """
    if len(results_dirs) > 1:
        if fmt != "md" or matrix_name or as_published or training:
            raise ReportUsageError(
                "several results folders render one markdown table: no --format, --matrix, --as-published or --train-on"
            )
        report_machines(results_dirs, out)
    elif as_published and (published := matrix_named(results_dirs[0])) is not None:
        if fmt != "md" or matrix_name:
            raise ReportUsageError(
                "the published report of a matrix is markdown from the matrix: no --format or --matrix"
            )
        report_published(published, out, training)
    else:
        report_folder(results_dirs[0], out, fmt, matrix_name, as_published, training)


def report_machines(results_dirs: tuple[Path, ...], out: Path | None) -> None:
    """Several results folders, one table with a column per machine."""
    for folder in results_dirs:
        if problem := not_results_folder(folder, "report"):
            raise InputError(problem)
    if twice := given_twice(results_dirs):
        raise ReportUsageError(twice)
    from bench.report.machines import write_machines_report

    try:
        path, read = write_machines_report(list(results_dirs), out=out)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    for results in read:
        warn_skipped(results)
    click.echo(path)


def report_published(matrix_path: Path, out: Path | None, training: tuple[TrainingColumns, ...]) -> None:
    """The published report of a matrix, from the matrix alone."""
    from bench.report.write import write_published

    try:
        click.echo(write_published(matrix_path, out=out, added=training))
    except ValueError as exc:
        raise InputError(one_line(str(exc))) from None


def report_folder(
    results_dir: Path,
    out: Path | None,
    fmt: str,
    matrix_name: str | None,
    as_published: bool,
    training: tuple[TrainingColumns, ...],
) -> None:
    """One results folder: its report, or its cells flat as csv or json."""
    if problem := not_results_folder(results_dir, "report", as_published=as_published):
        raise InputError(problem)
    from bench.report import write_report

    matrix_path = matrix_file(matrix_name) if matrix_name else None
    try:
        path, results = write_report(
            results_dir, out=out, fmt=fmt, matrix_path=matrix_path, as_published=as_published, added=training
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None
    warn_skipped(results)
    click.echo(path)


@click.command("compare")
@click.argument("results_a", type=click.Path(path_type=Path))
@click.argument("results_b", type=click.Path(path_type=Path))
@click.option(
    "--threshold",
    type=float,
    default=0.05,
    callback=number_in(0, 100),  # compare.MAX_THRESHOLD
    show_default=True,
    help="Smallest change of samples/sec that counts (0.05 is 5%).",
)
@click.option(
    "--alpha",
    type=float,
    default=0.01,
    callback=number_in(0, 1, above_least=True, text="between 0 and 1"),
    show_default=True,
    help="Significance level of the Mann-Whitney U test on step times.",
)
@click.option(
    "--ignore",
    multiple=True,
    help="Pair cells whose configs differ only in this field (repeatable), e.g. the field B was run with --set.",
)
@click.option(
    "--fail-on",
    default=None,
    metavar="VERDICTS",
    help="Exit 1, naming the cells, if any cell is one of these (comma-separated): slower, failing (newly failing), incomparable.",
)
def compare_command(
    results_a: Path, results_b: Path, threshold: float, alpha: float, ignore: tuple[str, ...], fail_on: str | None
) -> None:
    """Compare two results folders cell by cell: faster, slower, same, newly failing, fixed or incomparable.

    A change is called only when samples/sec moved by more than --threshold AND the per-step
    times differ by a Mann-Whitney U test at --alpha. With --fail-on it is a CI gate.

    \b
    Example:
        pfcbench compare results-main/smoke results/smoke --threshold 0.1
        pfcbench compare fp32/smoke bf16/smoke --ignore precision
        pfcbench compare baseline/smoke results/smoke --fail-on slower,failing
    """
    from bench.report.compare import (
        compare_records,
        gate_failures,
        load_results,
        no_shared_cell,
        parse_gates,
        render_comparison,
    )

    try:
        gates = parse_gates(fail_on) if fail_on is not None else ()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    for folder in (results_a, results_b):
        if problem := not_results_folder(folder, "compare"):
            raise InputError(problem)
    try:
        run_a, run_b = load_results(results_a), load_results(results_b)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    warn_skipped(run_a)
    warn_skipped(run_b)
    if not run_a.records and not run_b.records:
        raise InputError(f"{results_a} and {results_b}: neither run has a record: nothing to compare")
    latest_a, latest_b = latest_by_cell(run_a.records), latest_by_cell(run_b.records)
    warn_unmeasured(results_a, latest_a)
    warn_unmeasured(results_b, latest_b)
    try:
        comparisons = compare_records(latest_a, latest_b, threshold=threshold, alpha=alpha, ignore=ignore)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if problem := no_shared_cell(latest_a, latest_b, comparisons, ignore):
        raise InputError(problem)
    click.echo(render_comparison(comparisons))
    failures = gate_failures(comparisons, gates)
    if failures:
        click.echo(f"Error: --fail-on {fail_on}: {len(failures)} of {len(comparisons)} cells", err=True)
        for line in failures:
            click.echo(f"  {line}", err=True)
        sys.exit(1)


def matrix_named(path: Path) -> Path | None:
    """The matrix file a report's argument names where it is no folder: a .toml file or a packaged matrix's name."""
    try:
        if path.is_dir():
            return None
        if path.suffix == ".toml" and path.is_file():
            return path
    except OSError:  # a name the file system refuses: not_results_folder says so
        return None
    return packaged_matrices().get(path.name) if len(path.parts) == 1 else None


def given_twice(folders: tuple[Path, ...]) -> str | None:
    """What to say where two of the folders are one (the same path, another spelling of it or a symlink to
    it): a machine listed twice would compare with itself. None where each folder is given once."""
    seen: dict[Path, Path] = {}
    for folder in folders:
        try:
            real = folder.resolve()
        except (OSError, RuntimeError):
            real = folder.absolute()
        if real in seen:
            same = f"{folder}" if str(folder) == str(seen[real]) else f"{seen[real]} and {folder}"
            return f"{same}: the same results folder is given twice; give each machine's folder once"
        seen[real] = folder
    return None


def not_results_folder(path: Path, command: str, *, as_published: bool = False) -> str | None:
    """What to say of a path given as a results folder that is none, with what was probably meant: the
    results folders inside it, the results folder of a matrix named instead, the command that prints a
    published report. None where it is one, or where the reader's own error says as much."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as exc:  # a name too long for the file system, a loop of symlinks, a folder not readable
        return f"{path}: cannot be read as a results folder: {exc.strerror or exc}"
    if path.is_dir():
        if (path / "results.jsonl").exists():
            return None
        inside = sorted(str(found.parent) for found in path.glob("*/results.jsonl"))[:3]
        return (
            f"{path}: not a results folder (no results.jsonl); did you mean {' or '.join(inside)}?" if inside else None
        )
    name = path.name
    matrix = packaged_matrices().get(name)
    if path.exists() or matrix is None:
        return None
    from bench.matrix import load_matrix
    from bench.report.write import has_published_figures

    published = has_published_figures(load_matrix(matrix))
    hint = f"; pfcbench report {name} --as-published prints the published report" if published else ""
    if len(path.parts) == 1:
        made = "" if Path("results", name).is_dir() else f" (pfcbench run {name} makes it)"
        return f"{name} is a matrix: {command} takes a results folder: results/{name}{made}{hint}"
    if command == "report" and (as_published or published):
        return f"{path}: no such results directory{hint}"
    return None


def warn_unmeasured(path: Path, latest: dict[str, dict]) -> None:
    """Name on stderr each ok record that is no training speed (a NaN loss; samples/sec missing, 0, nan): it
    compares as incomparable."""
    from bench.verdicts import not_a_speed, training_speed

    for cell_id, record in latest.items():
        if record.get("status") == "ok" and training_speed(record) is None:
            click.echo(f"Warning: {path}: cell {cell_id} is ok, but {not_a_speed(record)}: incomparable", err=True)
