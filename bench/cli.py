"""The pfcbench command line: one group, a module per command or group of commands in bench/commands/.

The parent process never imports torch, pandas or the launchers at start-up: each command imports
what it needs when it runs, so that `pfcbench --help`, plan, report, compare and env answer at once.
"""

from __future__ import annotations

import click

from bench import __version__
from bench.commands.advise import advise
from bench.commands.cell import cell
from bench.commands.data import data, dataset
from bench.commands.env import env
from bench.commands.gpus import gpus
from bench.commands.matrix import matrices, plan
from bench.commands.publish import publish_command
from bench.commands.results import compare_command, report_command
from bench.commands.run import run
from bench.commands.search import search_command
from bench.commands.sweep import collect, status


@click.group()
@click.version_option(__version__, prog_name="pfcbench")
def main() -> None:
    """Benchmark Partial FC training throughput and render arcface_torch-style reports."""


for command in (
    cell,
    run,
    env,
    search_command,
    plan,
    advise,
    matrices,
    gpus,
    report_command,
    compare_command,
    publish_command,
    dataset,
    data,
    status,
    collect,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
