"""Options shared by the pfcbench commands, and how they turn into cells and matrices (a launcher's: launcher_options)."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bench.config import (
    CHOICES,
    FIELD_TYPES,
    MAX_MEMORY_GIB,
    WHOLE_NUMBER_RANGES,
    Cell,
    check_number,
    one_line,
    shown,
)
from bench.matrix import PACKAGED, Matrix, MatrixError, load_matrix, packaged_matrices
from bench.store.results import Results, ResultsError

if TYPE_CHECKING:
    from bench.gpus import GpuSpec
    from bench.plan.build import Plan, PlanSource


def cell_options(func=None, *, defaults: dict | None = None):
    """One option per cell field (--batch-size, --sample-rate, ...), defaulting to defaults, else the Cell's.

    --device defaults to cuda where a GPU is visible and to cpu elsewhere, which torch is asked
    only when a command runs without --device (never for --help).
    """
    if func is None:
        return functools.partial(cell_options, defaults=defaults)
    for f in reversed(dataclasses.fields(Cell)):
        flag = "--" + f.name.replace("_", "-")
        default = default_device if f.name == "device" else f.default
        default = (defaults or {}).get(f.name, default)
        kind = click.Choice(CHOICES[f.name]) if f.name in CHOICES else FIELD_TYPES[f.name]
        extra = {"help": FIELD_DOCS.get(f.name, ""), "default": default, "show_default": True}
        if kind is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", f.name, **extra)
        else:
            option = click.option("--nproc" if f.name == "nproc_per_node" else flag, f.name, type=kind, **extra)
        func = option(func)
    return func


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def field_docs() -> dict[str, str]:
    """The docstring under each Cell field, for --help."""
    tree = ast.parse(inspect.getsource(Cell))
    body = tree.body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = after.value.value
    return docs


FIELD_DOCS = field_docs()


def number_in(least: float, most: float, *, above_least: bool = False, text: str | None = None):
    """A click callback refusing a number outside least..most, or not finite (nan, inf), by the option's name.

    The one check of every number option; its bounds say what a real run could use.
    """

    def check(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
        if value is not None:
            try:
                check_number(param.opts[0], value, least, most, above_least=above_least, text=text)
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
        return value

    return check


gibibytes = number_in(0, MAX_MEMORY_GIB, above_least=True, text=f"a positive number of GiB, at most {MAX_MEMORY_GIB:,}")
"""Refuse a memory size per rank that is not a positive, finite number of GiB (0, nan, inf, 1e30)."""


def gpu_named(ctx: click.Context, param: click.Parameter, value: str | None) -> GpuSpec | None:
    """--gpu NAME as the catalogue's GPU; a name it lacks is one line listing those it has."""
    from bench.gpus import gpu_named as catalogue_gpu

    try:
        return None if value is None else catalogue_gpu(value)
    except ValueError as exc:
        raise click.BadParameter(one_line(str(exc))) from None


def link_kind(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--link KIND in lower case; a name that is no link is one line listing those there are."""
    from bench.time_model import CannotPredict, check_link_name

    try:
        return None if value is None else check_link_name(value)
    except CannotPredict as exc:
        raise click.BadParameter(str(exc)) from None


def memory_size(memory_gib: float | None, gpu: GpuSpec | None) -> float | None:
    """The memory per rank --memory-gib or --gpu gives (the GPU's, as its driver reports it); both is a usage error."""
    if gpu is None:
        return memory_gib
    if memory_gib is not None:
        raise click.UsageError(
            f"--gpu {gpu.name} gives the memory per rank ({gpu.memory_mib} MiB); give it or --memory-gib, not both"
        )
    return gpu.memory_gib


RERUN = ("failed", "all")
"""What --rerun runs again: failed cells (error, timeout, a NaN loss) or all."""


class InputError(click.ClickException):
    """An input that cannot be used (a file, a folder, a name): one line, exit code 2, nothing run or written."""

    exit_code = 2


class MatrixUsageError(InputError):
    """A matrix that cannot run: one line, exit code 2, nothing run or written."""


def matrix_file(name_or_path: str | None) -> Path:
    """A matrix by its file, or by the name of one that ships with pfcbench (smoke when None).

    A file at the path wins over a packaged matrix of that name; a folder never does, so a
    results folder named `smoke` in the working directory does not hide the packaged smoke.
    """
    if name_or_path is None:
        return PACKAGED / "smoke.toml"
    path = Path(name_or_path)
    packaged = packaged_matrices()
    if not name_or_path.strip():
        raise MatrixUsageError(
            f"MATRIX {shown(name_or_path)}: empty; give a matrix file or a packaged matrix ({', '.join(packaged)})"
        )
    try:
        is_file = path.is_file() or (path.exists() and not path.is_dir())
    except OSError as exc:
        raise MatrixUsageError(f"MATRIX {shown(name_or_path)}: {exc.strerror}") from None
    if is_file:
        return path
    if path.name in packaged and len(path.parts) == 1:
        return packaged[path.name]
    if path.suffix != ".toml" and len(path.parts) == 1:
        raise MatrixUsageError(
            f"{one_line(name_or_path)}: no such matrix file, nor a packaged matrix ({', '.join(packaged)})"
        )
    return path


def parse_settings(settings: tuple[str, ...]) -> dict:
    """--set FIELD=VALUE pairs as cell fields; VALUE is read as a TOML value, else as text."""
    fields = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        if not sep or not key.strip() or re.search(r"[\x00-\x1f\x7f]", setting):
            raise MatrixUsageError(
                f"--set {shown(setting)}: expected FIELD=VALUE on one line, e.g. --set precision=bf16"
            )
        try:
            fields[key.strip()] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            fields[key.strip()] = text
    return fields


def training_options(func):
    """--train-on / --images / --epochs / --gpu-hour-price: the hours (and cost) of one training run at
    each cell's samples/sec; passes `training`, the columns they add (none without them)."""

    @click.option(
        "--train-on", default=None, help="Add hours per training run on this dataset (webface42m, ms1mv3, ...)."
    )
    @click.option("--images", type=int, default=None, help="Add hours per training run of N images (with --epochs).")
    @click.option("--epochs", type=int, default=None, help="Epochs of that run  [default: the dataset's config's].")
    @click.option("--gpu-hour-price", type=float, default=None, help="Add the cost of that run: hours x GPUs x PRICE.")
    @functools.wraps(func)
    def wrapper(train_on, images, epochs, gpu_hour_price, **kwargs):
        from bench.report.training import training_columns

        try:
            training = training_columns(train_on, images, epochs, gpu_hour_price)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return func(training=training, **kwargs)

    return wrapper


def results_option(help_text: str):
    """--results, the folder that holds results folders; passes `results_root`."""
    return click.option(
        "--results",
        "results_root",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("results"),
        show_default=True,
        help=help_text,
    )


def with_matrix(func):
    """The MATRIX argument (a file, or the name of a packaged matrix) and the overrides that adapt it
    to this machine; passes `matrix`."""

    @click.argument("matrix_path", metavar="[MATRIX]", required=False)
    @results_option("Folder holding one results folder per matrix.")
    @click.option("--nproc", "nproc_per_node", type=int, default=None, help="Ranks per node, overriding the matrix.")
    @click.option("--nnodes", type=int, default=None, help="Nodes per cell, overriding the matrix.")
    @click.option(
        "--max-memory-gib",
        type=float,
        default=None,
        callback=gibibytes,
        help="Memory cap per rank, overriding the matrix.",
    )
    @click.option(
        "--emulate-ranks",
        type=int,
        default=None,
        callback=number_in(2, WHOLE_NUMBER_RANGES["nproc_per_node"][1]),
        metavar="N",
        help="Run each cell as rank 0 of N ranks on one node, alone on one device (other ranks' data made up).",
    )
    @click.option(
        "--set",
        "settings",
        multiple=True,
        metavar="FIELD=VALUE",
        help="Set a cell field in every cell (repeatable), e.g. --set precision=bf16.",
    )
    @click.option(
        "--section",
        "section_numbers",
        type=int,
        multiple=True,
        metavar="N",
        help="Only the matrix's section N, counted from 1 (repeatable); by default every section.",
    )
    @functools.wraps(func)
    def wrapper(
        matrix_path, nproc_per_node, nnodes, max_memory_gib, emulate_ranks, settings, section_numbers, **kwargs
    ):
        options = {"nproc_per_node": nproc_per_node, "nnodes": nnodes, "max_memory_gib": max_memory_gib}
        if emulate_ranks is not None:
            if nproc_per_node is not None or nnodes is not None:
                raise click.UsageError(
                    "--emulate-ranks sets the ranks of every cell; give it without --nproc and --nnodes"
                )
            options = dict(options, nproc_per_node=emulate_ranks, nnodes=1, emulated=True)
        overrides = {k: v for k, v in options.items() if v is not None} | parse_settings(settings)
        try:
            matrix = load_matrix(matrix_file(matrix_path), overrides).only_sections(section_numbers)
        except MatrixError as exc:
            raise MatrixUsageError(one_line(str(exc))) from None
        return func(matrix=matrix, **kwargs)

    return wrapper  # fmt: skip


def load_plan(matrix: Matrix, results_root: Path, rerun: str | None = None) -> Plan:
    """The plan of a matrix, its results file read; lines skipped in it are announced on stderr."""
    from bench.plan.build import make_plan

    try:
        the_plan = make_plan(matrix, results_root, rerun)
    except ResultsError as exc:
        raise InputError(str(exc)) from None
    warn_skipped(the_plan.results)
    return the_plan


def load_plan_again(results_dir: Path, source: PlanSource) -> Plan:
    """The plan a run of results_dir built (bench.plan.build.plan_again); lines skipped are announced on stderr."""
    from bench.plan.build import plan_again

    try:
        the_plan = plan_again(results_dir, source)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    warn_skipped(the_plan.results)
    return the_plan


def warn_skipped(results: Results | None) -> None:
    """Say on stderr how many lines of a results file were skipped as damaged, if any were."""
    if results is not None and (warning := results.warning()):
        click.echo(f"Warning: {warning}", err=True)
