"""The options that choose a command's launcher (--launcher and its own options, the timeouts, --rdzv-endpoint),
and the one launcher object they make."""

from __future__ import annotations

import functools
import re
import socket
from typing import TYPE_CHECKING

import click

from bench.commands.options import number_in
from bench.config import MAX_TIMEOUT_S, shown

if TYPE_CHECKING:
    from bench.launch.base import Launcher, LaunchOptions
    from bench.matrix import Matrix

seconds = number_in(
    0, MAX_TIMEOUT_S, above_least=True, text=f"a number of seconds above 0 and at most {MAX_TIMEOUT_S:,}"
)
"""Refuse a timeout that is not a positive, finite number of seconds (0, -5, nan, inf)."""


def timeout_options(func):
    func = click.option(
        "--inactivity-timeout",
        "inactivity_timeout_s",
        type=float,
        default=None,
        callback=seconds,
        help="Seconds without a finished step before a cell is killed.",
    )(func)
    func = click.option(
        "--timeout", "timeout_s", type=float, default=None, callback=seconds, help="Wall-clock seconds a cell may take."
    )(func)
    return func


def make_launcher(
    name: str, timeout_s: float | None, inactivity_timeout_s: float | None, options: LaunchOptions, defaults: dict
) -> Launcher:
    """The launcher a command line asks for, chosen once; each timeout from its option, else from defaults (a
    matrix's [run]), else the launcher's."""
    from bench.launch.base import LauncherUnavailable
    from bench.launch.choose import choose_launcher
    from bench.launch.watchdog import Limits

    try:
        return choose_launcher(name, Limits.of(timeout_s, inactivity_timeout_s, defaults), options)
    except ValueError as exc:  # a LaunchError, or a limit out of range
        raise click.UsageError(str(exc)) from None
    except LauncherUnavailable as exc:
        raise click.ClickException(str(exc)) from None


ENDPOINT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})")


def endpoint(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a rendezvous endpoint no agent could ever meet at, before torchrun starts and waits for it."""
    if value is None:
        return None
    match = ENDPOINT.fullmatch(value)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise click.BadParameter(f"must be HOST:PORT with a port from 1 to 65535 (node1:29400), not {shown(value)}")
    try:
        socket.getaddrinfo(match["host"].strip("[]"), int(match["port"]), type=socket.SOCK_STREAM)
    except OSError as exc:
        raise click.BadParameter(f"host {shown(match['host'])} cannot be resolved: {exc.strerror or exc}") from None
    return value


def rdzv_option(help_text: str):
    return click.option("--rdzv-endpoint", default=None, callback=endpoint, help=help_text)


def with_launcher(func):
    """--launcher with the Slurm options, the timeouts and --rdzv-endpoint; passes `launcher`, chosen once from
    them, and `detach`. It goes under with_matrix: a timeout not given is the matrix's [run] one."""

    @click.option(
        "--launcher",
        type=click.Choice(["local", "slurm"]),
        default="local",
        show_default=True,
        help="local: torchrun on this machine; slurm: each cell a Slurm job (sbatch, then srun torchrun on every node).",
    )
    @click.option("--partition", default=None, help="Slurm partition of the jobs.")
    @click.option("--account", default=None, help="Slurm account charged for the jobs.")
    @click.option(
        "--slurm-time",
        default=None,
        metavar="TIME",
        help="Slurm time limit of one cell, in minutes or [D-]HH:MM:SS; a cell Slurm stops for time is a timeout.",
    )
    @click.option(
        "--sbatch-arg",
        "sbatch_args",
        multiple=True,
        metavar="ARG",
        help="A further sbatch option (repeatable), e.g. --sbatch-arg=--exclusive.",
    )
    @click.option(
        "--cpus-per-gpu",
        type=int,
        default=None,
        help="CPU cores a CUDA cell's Slurm job asks for per GPU.  [default: 4]",
    )
    @click.option(
        "--max-jobs",
        type=click.IntRange(min=1),
        default=None,
        help="Slurm jobs in flight at once; each cell is recorded when its job ends.  [default: 1]",
    )
    @click.option(
        "--detach",
        is_flag=True,
        help="Submit the pending cells (up to --max-jobs) and exit; pfcbench status, collect or run picks them up.",
    )
    @timeout_options
    @rdzv_option("HOST:PORT of the c10d rendezvous for cells of several nodes.")
    @functools.wraps(func)
    def wrapper(
        matrix: Matrix, launcher, partition, account, slurm_time, sbatch_args, cpus_per_gpu, max_jobs, detach,
        timeout_s, inactivity_timeout_s, rdzv_endpoint, **kwargs,
    ):  # fmt: skip
        from bench.launch.base import LaunchOptions

        options = LaunchOptions(
            rdzv_endpoint=rdzv_endpoint, partition=partition, account=account, slurm_time=slurm_time,
            sbatch_args=tuple(sbatch_args), cpus_per_gpu=cpus_per_gpu, max_jobs=max_jobs, detach=detach,
        )  # fmt: skip
        chosen = make_launcher(launcher, timeout_s, inactivity_timeout_s, options, matrix.run)
        return func(matrix=matrix, launcher=chosen, detach=detach, **kwargs)

    return wrapper


def with_local_launcher(rdzv_help: str | None = None):
    """The timeouts, and --rdzv-endpoint where rdzv_help says what it is for; passes `launcher`, the local one
    made from them (a command that runs on this machine: it takes no --launcher)."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(timeout_s, inactivity_timeout_s, rdzv_endpoint=None, **kwargs):
            from bench.launch.base import LaunchOptions

            options = LaunchOptions(rdzv_endpoint=rdzv_endpoint)
            return func(launcher=make_launcher("local", timeout_s, inactivity_timeout_s, options, {}), **kwargs)

        return timeout_options(rdzv_option(rdzv_help)(wrapper) if rdzv_help else wrapper)

    return decorate
