"""The pfcbench command line.

The parent process never imports torch, pandas or the launchers at start-up: each command imports
what it needs when it runs, so that `pfcbench --help`, plan, report, compare and env answer at once.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench import __version__
from bench.config import Cell
from bench.files import FileError, make_folder
from bench.options import (
    RERUN,
    MatrixUsageError,
    cell_options,
    matrix_file,
    packaged_matrices,
    rdzv_option,
    results_option,
    timeout_options,
    with_launcher,
    with_matrix,
)
from bench.results import Results, ResultsError, emulated_mark, latest_by_cell
from bench.search import FIELDS, PROBE_STEPS, PROBES_PER_SEARCH, Probe

if TYPE_CHECKING:
    from bench.matrix import Matrix
    from bench.runner import Plan
    from bench.slurm import SlurmOptions


@click.group()
@click.version_option(__version__, prog_name="pfcbench")
def main() -> None:
    """Benchmark Partial FC training throughput and render arcface_torch-style reports."""


@main.command()
@cell_options
@timeout_options
@rdzv_option("HOST:PORT of the c10d rendezvous when --nnodes > 1.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result record as JSON.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the rank files and torchrun log here.",
)
def cell(as_json: bool, workdir: Path | None, timeout_s, inactivity_timeout_s, rdzv_endpoint, **fields) -> None:
    """Run one cell as a torchrun job and print its result.

    For a cell of several nodes, run the same command on every node with --nnodes and the same
    --rdzv-endpoint; each node prints the record.

    \b
    Example:
        pfcbench cell --backbone none --classes 200000 --batch-size 128 --nproc 2 --sample-rate 0.1 --device cpu --json
        pfcbench cell --backbone r50 --classes 2000000 --batch-size 1024 --nproc 8 --nnodes 2 --rdzv-endpoint node1:29400
    """
    from bench.launch import Launch, gpu_shortage, run_cell, visible_gpus
    from bench.records import holds_rank0

    try:
        config = Cell(**fields)
        if config.launched_nodes > 1 and rdzv_endpoint is None:
            raise ValueError(f"a cell of {config.nnodes} nodes needs --rdzv-endpoint HOST:PORT")
        launch = Launch(
            timeout_s=Launch.timeout_s if timeout_s is None else timeout_s,
            inactivity_timeout_s=Launch.inactivity_timeout_s if inactivity_timeout_s is None else inactivity_timeout_s,
            rdzv_endpoint=rdzv_endpoint,
            rdzv_id=config.cell_id,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    shortage = gpu_shortage([config], visible_gpus()) if config.device == "cuda" else None
    if shortage:
        raise MatrixUsageError(shortage)
    if workdir is not None:
        try:
            check_workdir(workdir)
        except FileError as exc:
            raise click.UsageError(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="pfcbench-cell-") as tmp:
        record = run_cell(config, workdir or Path(tmp), launch)
        if not holds_rank0(config, workdir or Path(tmp)) and record["status"] != "ok":
            click.echo(
                "Error: the cell failed; this node did not hold rank 0, see the record on the node that did.", err=True
            )
            sys.exit(1)
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        click.echo(describe(record))
    if record["status"] != "ok":
        click.echo(f"Error: cell {record['status']}: {failure_line(record)}", err=True)
        sys.exit(1)


def check_workdir(workdir: Path) -> None:
    """Create --workdir, which must be new or empty: rank files left from another run would be read as this one's."""
    try:
        leftover = workdir.is_dir() and next(workdir.iterdir(), None) is not None
    except OSError as exc:
        raise FileError(f"--workdir {workdir}: cannot read the folder: {exc.strerror}") from None
    if leftover:
        raise FileError(f"--workdir {workdir}: not empty; give a new or empty folder")
    make_folder(workdir, "--workdir")


def load_plan(matrix: Matrix, results_root: Path, rerun: str | None = None) -> Plan:
    """The plan of a matrix, its results file read; lines skipped in it are announced on stderr."""
    from bench.runner import make_plan

    try:
        the_plan = make_plan(matrix, results_root, rerun)
    except ResultsError as exc:
        raise click.ClickException(str(exc)) from None
    warn_skipped(the_plan.results)
    return the_plan


def warn_skipped(results: Results | None) -> None:
    if results is not None and (warning := results.warning()):
        click.echo(f"Warning: {warning}", err=True)


def describe(record: dict) -> str:
    if record["status"] != "ok":
        return f"{record['cell_id']} {record['status']}"
    memory = record.get("peak_allocated_mib_max") or record.get("peak_rss_mib_max")
    return (
        f"{record['cell_id']} ok: {record['samples_per_s']:.1f} samples/s{emulated_mark(record)} "
        f"(min {record['samples_per_s_min']:.1f}, max {record['samples_per_s_max']:.1f}), "
        f"{record['step_time_s_median'] * 1000:.1f} ms/step, peak memory {memory:.0f} MiB per rank"
    )


def failure_line(record: dict) -> str:
    """One line saying what went wrong and where."""
    where = f"rank {record['failed_rank']} in {record['phase']}: " if record.get("failed_rank") is not None else ""
    text = (record.get("error") or "").strip().splitlines()
    return where + (text[-1] if text else "no error text")


def record_line(record: dict) -> str:
    """What became of a cell, in a few words."""
    if record["status"] == "ok":
        teardown = "; a rank failed in teardown, see the record" if record.get("teardown_error") else ""
        speed = f"{record['samples_per_s']:.1f} samples/s{emulated_mark(record)}"
        return f"ok, {speed} ({record['duration_s']:.0f} s){teardown}"
    return f"{record['status']} ({record.get('reason') or failure_line(record)})"


def cell_line(cell: Cell) -> str:
    rate = f" pfc {cell.sample_rate:g}" if cell.partial_fc else ""
    ranks = f"rank 0 of {cell.world_size} ranks, emulated" if cell.emulated else f"{cell.world_size} ranks"
    return f"{cell.backbone} {cell.classes} classes, batch {cell.batch_size}, {cell.precision}{rate}, {ranks}"


@main.command("search")
@click.argument("field", type=click.Choice(FIELDS))
@cell_options(defaults=PROBE_STEPS)
@timeout_options
@click.option(
    "--start",
    type=int,
    default=None,
    help="First value to probe.  [default: the memory model's prediction, else the cell's value of FIELD]",
)
@results_option("Probes are recorded in RESULTS/search/results.jsonl, and reused by a search run again.")
@click.option("--json", "as_json", is_flag=True, help="Print field, largest, smallest_oom and the probes' records.")
def search_command(field, start, results_root, as_json, timeout_s, inactivity_timeout_s, **fields) -> None:
    """Find the largest FIELD (batch_size or classes) of a cell that runs without running out of memory.

    Each probe is a real cell with few steps in a fresh torchrun job; the search brackets the
    answer from the start value, then bisects until the smallest value that ran out of memory is
    within 5% of the largest that ran ok. Memory is the GPU's, or --max-memory-gib per rank (which
    the CPU needs). Interrupted and run again, a search reuses the probes it recorded.

    \b
    Example:
        pfcbench search classes --backbone none --batch-size 64 --nproc 2 --device cpu --max-memory-gib 1.5
        pfcbench search batch_size --backbone r50 --classes 1000000 --nproc 8 --precision fp16 --json
    """
    from bench.launch import Launch, LocalLauncher
    from bench.results import latest_by_cell, read_records
    from bench.runner import run_probe, sigterm_as_interrupt
    from bench.search import Answer, ProbeFailed, search, start_value

    try:
        config = Cell(**fields)
        if config.device == "cpu" and config.max_memory_gib is None:
            raise ValueError("a search on the CPU needs --max-memory-gib: the memory a probe may not exceed")
        if config.launched_nodes > 1:
            raise ValueError("a search runs cells on this machine; give --nnodes 1")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    launch = Launch(
        timeout_s=timeout_s or Launch.timeout_s,
        inactivity_timeout_s=inactivity_timeout_s or Launch.inactivity_timeout_s,
    )
    results_dir = results_root / "search"
    probes = []
    try:
        with sigterm_as_interrupt():
            records = latest_by_cell(read_records(results_dir / "results.jsonl"))
            first = (lambda: start) if start else functools.partial(start_value, config, field)
            for probe in search(config, field, first, records, run_probe(results_dir, LocalLauncher(launch))):
                probes.append(probe)
                if not as_json:
                    click.echo(probe_line(field, probe))
    except KeyboardInterrupt:
        click.echo(
            "\nInterrupted: the probe in flight was stopped; run again to continue from the recorded probes.", err=True
        )
        sys.exit(130)
    except ProbeFailed as exc:
        raise click.ClickException(
            f"{field} {exc.value}: probe {exc.record['status']}: {failure_line(exc.record)}"
        ) from None
    answer = Answer.of(field, probes)
    if as_json:
        click.echo(json.dumps(answer.to_dict(), indent=2))
    elif answer.largest is None:
        click.echo(
            f"No {field} fits: {answer.smallest_oom} ran out of memory, the smallest a cell of {config.world_size} ranks can have."
        )
    else:
        oom = f"{answer.smallest_oom} ran out of memory" if answer.smallest_oom else "no probe ran out of memory"
        click.echo(
            f"Largest {field} that fits: {answer.largest} ({oom}); {len(answer.probes)} probes, records in {results_dir / 'results.jsonl'}"
        )
    if answer.largest is None:
        sys.exit(1)


def probe_line(field: str, probe: Probe) -> str:
    recorded = " (recorded before)" if probe.recorded_before else ""
    return f"probe {field} {probe.value}: {record_line(probe.record)}{recorded}"


@main.command()
@with_matrix
@click.option(
    "--memory-gib",
    type=float,
    default=None,
    help="Predict each cell's peak memory per rank and whether it fits in this many GiB per rank.",
)
@click.option(
    "--predict",
    is_flag=True,
    help="Predict each cell's peak memory per rank, against the matrix's max_memory_gib or this machine's GPU.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the plan as a JSON array, one object per cell, with predictions."
)
def plan(matrix: Matrix, results_root: Path, memory_gib: float | None, predict: bool, as_json: bool) -> None:
    """List the cells of a matrix in order, and which already have a final record.

    With --memory-gib, --predict or --json, each cell also gets its predicted peak memory per rank
    (traced from its real training step on the CPU) and Fail where that exceeds the memory size.
    MATRIX is a matrix file or the name of a packaged one (pfcbench matrices); smoke by default.

    \b
    Example:
        pfcbench plan rtx3080
        pfcbench plan my-matrix.toml --nproc 1
        pfcbench plan rtx3080 --memory-gib 10
        pfcbench plan rtx3080 --memory-gib 10 --json
    """
    from tabulate import tabulate

    if memory_gib is not None and memory_gib <= 0:
        raise click.UsageError(f"--memory-gib must be positive, not {memory_gib:g}")
    the_plan = load_plan(matrix, results_root)
    predicted = predict or as_json or memory_gib is not None
    entries = plan_entries(the_plan, memory_gib) if predicted else plan_entries_plain(the_plan)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    click.echo(
        tabulate(
            [plan_row(number, entry) for number, entry in enumerate(entries, start=1)],
            headers="keys",
            tablefmt="github",
        )
    )
    searches = the_plan.matrix.searches()
    and_searches = f" and {len(the_plan.pending_searches())} of {len(searches)} searches" if searches else ""
    click.echo(
        f"{len(the_plan.pending())} of {len(the_plan.cells)} cells to run{and_searches}; results in {the_plan.results_file}"
    )
    if predicted:
        fails = sum(entry["predicted_fits"] is False for entry in entries)
        click.echo(
            f"predicted: {fails} Fail, {sum(e['predicted_fits'] is True for e in entries)} fit (peak of rank 0, GPU-only parts modelled)"
        )


def plan_entries_plain(the_plan) -> list[dict]:
    """One dict per cell: id, sections, config and status (its record's, or pending)."""
    entries = []
    for cell in the_plan.cells:
        record = the_plan.latest.get(cell.cell_id)
        entries.append({
            "cell_id": cell.cell_id,
            "sections": the_plan.sections_of(cell),
            "config": cell.to_dict(),
            "status": record["status"] if record else "pending",
        })  # fmt: skip
    return entries


def plan_entries(the_plan, memory_gib: float | None) -> list[dict]:
    """plan_entries_plain with each cell's predicted peak, parts and fit against its memory size."""
    from bench.machine import gpu_memory_gib
    from bench.memory import GIB, memory_size_gib, predict_cells

    try:
        predictions = predict_cells(the_plan.cells)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    gpu_gib = gpu_memory_gib() if memory_gib is None else None
    entries = plan_entries_plain(the_plan)
    for entry, cell, prediction in zip(entries, the_plan.cells, predictions, strict=True):
        size_gib = memory_size_gib(cell, memory_gib, gpu_gib)
        entry.update(
            memory_gib=size_gib,
            predicted_peak_gib=round(prediction.peak_gib, 3),
            predicted_fits=prediction.fits(size_gib),
            predicted_parts_gib={part: round(n / GIB, 3) for part, n in prediction.parts.items()},
            predicted_largest_part=prediction.largest_part(),
        )
    return entries


def cpu_sections_hint(matrix: Matrix) -> str:
    """Where a matrix mixes CPU and CUDA sections, which ones run without a GPU."""
    titles = [s.title or "untitled" for s in matrix.sections if all(row.cell.device != "cuda" for row in s.rows)]
    if not titles:
        return ""
    return f" (sections that need no GPU: {'; '.join(titles)}; --section N runs section N alone)"


def plan_row(number: int, entry: dict) -> dict:
    config = entry["config"]
    row = {
        "#": number,
        "cell": entry["cell_id"],
        "section": "; ".join(entry["sections"]),
        "backbone": config["backbone"],
        "classes": config["classes"],
        "batch": config["batch_size"],
        "impl": config["impl"],
        "precision": config["precision"],
        "sample rate": config["sample_rate"],
        "ranks": f"{config['nnodes'] * config['nproc_per_node']}{emulated_mark(entry)}",
        "status": entry["status"],
    }
    if "predicted_peak_gib" in entry:
        fits = entry["predicted_fits"]
        row["predicted GiB/rank"] = f"{entry['predicted_peak_gib']:.2f}"
        row["predicted"] = "" if fits is None else ("fits" if fits else "Fail") + f" ({entry['memory_gib']:g} GiB)"
        row["largest part"] = entry["predicted_largest_part"]
    return row


@main.command()
@with_matrix
@with_launcher
@timeout_options
@click.option(
    "--rerun",
    type=click.Choice(RERUN),
    default=None,
    help="Run again cells that have a record: failed (error, timeout) or all.",
)
@click.option(
    "--prune-after-oom/--no-prune-after-oom",
    default=None,
    help="Record larger batches of a config that ran out of memory as skipped.",
)
@rdzv_option("HOST:PORT of the c10d rendezvous for cells of several nodes.")
@click.option(
    "--skip-predicted-fail",
    is_flag=True,
    help="Record cells whose predicted peak memory exceeds the memory per rank (max_memory_gib or the GPU's) as skipped.",
)
def run(
    matrix: Matrix,
    results_root: Path,
    slurm: SlurmOptions | None,
    max_jobs: int,
    detach: bool,
    timeout_s,
    inactivity_timeout_s,
    rerun,
    prune_after_oom,
    rdzv_endpoint,
    skip_predicted_fail,
) -> None:
    """Run every pending cell of a matrix, recording each in results/<matrix>/results.jsonl.

    MATRIX is a matrix file or the name of a packaged one (pfcbench matrices); by default the smoke
    matrix (CPU, 2 ranks). Cells that already have a final record are skipped; Ctrl-C loses at
    most the cell in flight.

    \b
    Example:
        pfcbench run smoke
        pfcbench run smoke --set precision=bf16 --results results-bf16
        pfcbench run rtx3080 --launcher slurm --partition gpu --account myproj --slurm-time 30
        pfcbench run rtx3080 --launcher slurm --max-jobs 8 --detach
        pfcbench run rtx3080 --skip-predicted-fail --max-memory-gib 10
        pfcbench run my-matrix.toml
    """
    from bench.launch import Launch, LocalLauncher, gpu_shortage, visible_gpus
    from bench.runner import Tally, run_cells

    the_plan = load_plan(matrix, results_root, rerun)
    pending = the_plan.pending()
    searches = the_plan.pending_searches()
    if not pending and not searches:
        click.echo(
            f"Nothing to run: all {len(the_plan.cells)} cells of {matrix.name} have a final record in {the_plan.results_file} (--rerun failed|all runs them again)."
        )
        return
    if slurm is not None and rdzv_endpoint is not None:
        raise click.UsageError("--rdzv-endpoint is for --launcher local: a Slurm job meets on its own first node")
    if slurm is None and rdzv_endpoint is None and any(cell.launched_nodes > 1 for cell in pending):
        raise MatrixUsageError(f"{matrix.path}: cells of several nodes need --rdzv-endpoint HOST:PORT")
    shortage = None
    if slurm is None and any(cell.device == "cuda" for cell in pending):
        shortage = gpu_shortage(pending, visible_gpus())
    if shortage:
        raise MatrixUsageError(f"{matrix.path}: {shortage}{cpu_sections_hint(matrix)}")
    try:
        launch = Launch(
            timeout_s=matrix.run.get("timeout_s", Launch.timeout_s) if timeout_s is None else timeout_s,
            inactivity_timeout_s=matrix.run.get("inactivity_timeout_s", Launch.inactivity_timeout_s)
            if inactivity_timeout_s is None
            else inactivity_timeout_s,
            rdzv_endpoint=rdzv_endpoint,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    launcher = LocalLauncher(launch) if slurm is None else slurm_launcher(launch, slurm, max_jobs)
    prune = matrix.run.get("prune_after_oom", False) if prune_after_oom is None else prune_after_oom
    and_searches = f" and {len(searches)} searches" if searches else ""
    predicted_fail = predicted_failures(pending) if skip_predicted_fail else {}
    click.echo(
        f"{matrix.name}: {len(pending)} of {len(the_plan.cells)} cells to run{and_searches}, results in {the_plan.results_file}"
    )
    started = time.monotonic()
    statuses: Counter = Counter()
    tally = Tally(waiting=len(pending))
    progress = click.progressbar(
        length=len(pending) + PROBES_PER_SEARCH * len(searches),
        label=matrix.name,
        show_eta=True,
        show_pos=True,
        item_show_func=lambda c: c and f"{cell_line(c)} [{tally}, {time.monotonic() - started:.0f} s elapsed]",
        file=sys.stderr,
    )
    try:
        with progress as bar:
            bar.current_item = pending[0] if pending else searches[0][0]
            bar.render_progress()
            for number, (cell, record) in enumerate(
                run_cells(
                    the_plan, launcher, prune_after_oom=prune, predicted_fail=predicted_fail, wait=not detach,
                    tally=tally,
                ),
                start=1,
            ):  # fmt: skip
                statuses[record["status"]] += 1
                if not sys.stderr.isatty():
                    place = f"{number}/{len(pending)}" if number <= len(pending) else "search probe"
                    click.echo(f"[{place}] {cell_line(cell)}: {record_line(record)} [{tally}]", err=True)
                bar.update(1, pending[number] if number < len(pending) else None)
    except KeyboardInterrupt:
        click.echo("\nInterrupted: the cell in flight was stopped and not recorded; run again to continue.", err=True)
        sys.exit(130)
    except (OSError, FileError) as exc:
        raise click.ClickException(
            f"{the_plan.results_file}: {exc}; the cells recorded before are kept, run again to continue"
        ) from None
    summary = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    if detach:
        click.echo(f"{matrix.name}: detached with {tally}; pfcbench status {the_plan.results_dir} follows them")
        return
    click.echo(f"{matrix.name}: ran {sum(statuses.values())} cells in {time.monotonic() - started:.0f} s: {summary}; results in {the_plan.results_file}")  # fmt: skip


def slurm_launcher(launch, slurm, max_jobs: int):
    from bench.slurm import SlurmLauncher

    return SlurmLauncher(launch, slurm, max_jobs)


def predicted_failures(cells: list[Cell]) -> dict[str, str]:
    """Cell id: the prediction, for the cells predicted not to fit in their memory per rank."""
    from bench.machine import gpu_memory_gib
    from bench.memory import memory_size_gib, predict_cells, verdict

    gpu_gib = gpu_memory_gib()
    sizes = [memory_size_gib(cell, None, gpu_gib) for cell in cells]
    if all(size is None for size in sizes):
        raise click.UsageError(
            "--skip-predicted-fail needs a memory size per rank: --max-memory-gib, max_memory_gib in the matrix, or a GPU"
        )
    try:
        predictions = predict_cells(cells)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    return {
        cell.cell_id: verdict(prediction, size)
        for cell, prediction, size in zip(cells, predictions, sizes, strict=True)
        if prediction.fits(size) is False
    }


@main.command()
def matrices() -> None:
    """List the matrices that ship with pfcbench, each with what it measures.

    Give a name to plan, run or report --matrix in place of a file.

    \b
    Example:
        pfcbench matrices
    """
    from bench.matrix import MatrixError, load_matrix

    for name, path in packaged_matrices().items():
        try:
            description = load_matrix(path).description
        except MatrixError as exc:
            description = f"(cannot be read: {exc})"
        click.echo(f"{name:<12} {description}")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the whole description as JSON.")
def env(as_json: bool) -> None:
    """Print the server spec of this machine, as the report's "Test Server Spec" table shows it.

    \b
    Example:
        pfcbench env --json
    """
    from tabulate import tabulate

    from bench.machine import describe_machine, server_spec

    machine = describe_machine()
    if as_json:
        click.echo(json.dumps(machine, indent=2))
        return
    click.echo(tabulate(server_spec(machine), headers=["Key", "Value"], tablefmt="github"))


@main.command("report")
@click.argument("results_dir", type=click.Path(path_type=Path))
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
    help="Tables exactly as the matrix lays them out, without the Published and Ratio columns added beside rows with a published figure.",
)
def report_command(results_dir: Path, out: Path | None, fmt: str, matrix_name: str | None, as_published: bool) -> None:
    """Render a results folder (results.jsonl, env.json, matrix.toml) as a markdown report, csv or json.

    Rows with a published figure show it beside the measured one, with their ratio ("both Fail"
    where the cell and the published run both ran out of memory). Prints the path written.

    \b
    Example:
        pfcbench report results/smoke
        pfcbench report results/rtx3080 -o report/rtx3080.md
        pfcbench report results/rtx3080 --format csv
        pfcbench report results/rtx3080 --as-published
    """
    from bench.report import write_report

    matrix_path = matrix_file(matrix_name) if matrix_name else None
    try:
        path, results = write_report(results_dir, out=out, fmt=fmt, matrix_path=matrix_path, as_published=as_published)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    warn_skipped(results)
    click.echo(path)


@main.command("compare")
@click.argument("results_a", type=click.Path(path_type=Path))
@click.argument("results_b", type=click.Path(path_type=Path))
@click.option(
    "--threshold",
    type=float,
    default=0.05,
    show_default=True,
    help="Smallest change of samples/sec that counts (0.05 is 5%).",
)
@click.option(
    "--alpha",
    type=float,
    default=0.01,
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
    from bench.compare import (
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
    try:
        run_a, run_b = load_results(results_a), load_results(results_b)
        latest_a, latest_b = latest_by_cell(run_a.records), latest_by_cell(run_b.records)
        comparisons = compare_records(latest_a, latest_b, threshold=threshold, alpha=alpha, ignore=ignore)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    warn_skipped(run_a)
    warn_skipped(run_b)
    if problem := no_shared_cell(latest_a, latest_b, comparisons, ignore):
        raise click.ClickException(problem)
    click.echo(render_comparison(comparisons))
    failures = gate_failures(comparisons, gates)
    if failures:
        click.echo(f"Error: --fail-on {fail_on}: {len(failures)} of {len(comparisons)} cells", err=True)
        for line in failures:
            click.echo(f"  {line}", err=True)
        sys.exit(1)


from bench.data.commands import data, dataset  # noqa: E402 -- the record-data commands
from bench.sweep_commands import collect, status  # noqa: E402 -- following a detached Slurm sweep

main.add_command(dataset)
main.add_command(data)
main.add_command(status)
main.add_command(collect)


if __name__ == "__main__":
    main()
