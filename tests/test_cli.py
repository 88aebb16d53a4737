"""The command line as a whole."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bench.cli import main


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help_ending_in_an_example(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    description = result.output.split("Options:")[0].rstrip()
    example = description.split("Example:")[-1]
    assert "Example:" in description, f"{command} --help has no example"
    assert example.strip().startswith(f"pfcbench {command}"), example
    assert all(line.strip().startswith("pfcbench ") for line in example.strip().splitlines())


def test_the_group_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert set(main.commands) == {"cell", "plan", "run", "report", "compare", "env"}
    assert all(command in result.output for command in main.commands)


def test_env_prints_the_server_spec_rows():
    result = CliRunner().invoke(main, ["env"])
    assert result.exit_code == 0
    keys = [line.split("|")[1].strip() for line in result.output.splitlines()[2:]]
    assert keys[:4] == ["CPU", "Memory", "GPU", "OS"] and "Installation" in keys
