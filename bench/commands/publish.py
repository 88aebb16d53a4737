"""`pfcbench publish`: results folders (and packaged matrices' published reports) as a static site."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.commands.options import InputError, gpu_named, warn_skipped
from bench.commands.results import ReportUsageError, given_twice, matrix_named, not_results_folder

if TYPE_CHECKING:
    from bench.gpus import GpuSpec
    from bench.publish.site import PublishedReport

SERVED = "Opens from the file system, with no server and no network. To look at it over HTTP on this machine only: {}"


@click.command("publish")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(path_type=Path),
    default=Path("site"),
    show_default=True,
    help="Folder to write the site to: new, empty, or a site pfcbench wrote before (replaced whole).",
)
@click.option(
    "--gpu",
    default=None,
    callback=gpu_named,
    metavar="NAME",
    help="With a matrix: its table predicted on this GPU (pfcbench gpus) by the time model, beside the published figures.",
)
@click.option("--serve", is_flag=True, help="Serve the site on 127.0.0.1 once written, until Ctrl-C.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="With --serve: the port (0: any)."
)
def publish_command(sources: tuple[Path, ...], out: Path, gpu: GpuSpec | None, serve: bool, port: int) -> None:
    """Write a static site of results folders: an index, a page per sweep, the same matrix across machines.

    Each page holds its data (it opens from the file system, with nothing from the network): the
    report's tables (sortable), a chart per table (hover names the cell), the record behind every cell,
    the time model's samples/sec where the machine's GPU is in the catalogue, the history of each cell
    on one machine with compare's verdict on its last two records. A matrix (a packaged name or a
    file) in place of a folder publishes its published report, without a run. Prints the index's path.

    \b
    Example:
        pfcbench publish results/smoke -o site
        pfcbench publish results/a100 results/h200 -o site
        pfcbench publish a100 -o site
        pfcbench publish a100 --gpu h100-sxm -o site
        pfcbench publish results/smoke --serve
    """
    folders, matrices = [], []
    for source in sources:
        if (matrix := matrix_named(source)) is not None:
            matrices.append(matrix)
        elif problem := not_results_folder(source, "publish"):
            raise InputError(problem)
        else:
            folders.append(source)
    if gpu is not None and not matrices:
        raise ReportUsageError(
            "--gpu NAME predicts a matrix's published table: give a matrix (publish a100 --gpu NAME)"
        )
    if twice := given_twice(tuple(folders)):
        raise ReportUsageError(twice)
    from bench.publish.site import SiteError, site_pages, write_site
    from bench.publish.sweeps import read_sweep

    try:
        sweeps = [read_sweep(folder) for folder in folders]
        published = [published_report(path, gpu) for path in matrices]
        index = write_site(out, site_pages(sweeps, published, SERVED.format(serve_command(out))))
    except (SiteError, ValueError, RuntimeError) as exc:  # RuntimeError: a cell the memory model cannot trace
        raise InputError(str(exc)) from None
    for sweep in sweeps:
        warn_skipped(sweep.results)
    click.echo(index)
    if serve:
        serve_site(out, port)
    else:
        click.echo(SERVED.format(serve_command(out)))


def published_report(matrix_path: Path, gpu: GpuSpec | None) -> PublishedReport:
    """A matrix's published report, with the time model's column for gpu where one is named."""
    from bench.matrix import load_matrix
    from bench.publish.site import PublishedReport
    from bench.report.markdown import published_server
    from bench.report.predicted import PredictedColumn, PredictedMemoryColumn
    from bench.report.write import has_published_figures, published_records, published_source
    from bench.time_model import target_for

    matrix = load_matrix(matrix_path)
    if not has_published_figures(matrix):
        raise InputError(
            f"{matrix.name} is a matrix with no published figure: publish takes its results folder: results/{matrix.name}"
        )
    added = ()
    if gpu is not None:
        target = target_for(gpu, matrix.report)
        added = (
            PredictedColumn(gpu=target.gpu, server=target.server),
            PredictedMemoryColumn.of(target.gpu, matrix.cells()),
        )
    return PublishedReport(
        matrix=published_server(matrix), records=published_records(matrix), added=added, source=published_source(matrix)
    )


def serve_command(out: Path) -> str:
    return f"python3 -m http.server --bind 127.0.0.1 --directory {out} 8000 (or pfcbench publish ... --serve)"


def serve_site(out: Path, port: int) -> None:
    """Serve the site on localhost until Ctrl-C."""
    from bench.publish.site import server

    try:
        httpd = server(out, port)
    except OSError as exc:
        raise InputError(f"--port {port}: cannot serve on 127.0.0.1: {exc.strerror or exc}") from None
    click.echo(f"Serving {out} at http://127.0.0.1:{httpd.server_address[1]}/ (Ctrl-C stops)")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
