"""pfcbench env: this machine as a report's "Test Server Spec" shows it."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the whole description as JSON.")
def env(as_json: bool) -> None:
    """Print the server spec of this machine, as the report's "Test Server Spec" table shows it, with the CPU's cores and threads.

    \b
    Example:
        pfcbench env --json
    """
    from tabulate import tabulate

    from bench.rank.host import describe_machine
    from bench.report.server import server_spec

    machine = describe_machine()
    if as_json:
        click.echo(json.dumps(machine, indent=2))
        return
    click.echo(tabulate(server_spec(machine, cpu_counts=True), headers=["Key", "Value"], tablefmt="github"))
