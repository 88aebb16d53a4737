"""The command line as a whole."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.launch.choose import LAUNCHERS
from bench.launch.local import LocalLauncher


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
    commands = {"cell", "search", "plan", "run", "report", "compare", "publish", "env", "matrices", "gpus", "advise"}
    assert set(main.commands) == commands | {"data", "dataset", "status", "collect"}
    assert all(command in result.output for command in main.commands)


def test_env_prints_the_server_spec_rows():
    result = CliRunner().invoke(main, ["env"])
    assert result.exit_code == 0
    keys = [line.split("|")[1].strip() for line in result.output.splitlines()[2:]]
    assert keys[:4] == ["CPU", "Memory", "GPU", "OS"] and "Installation" in keys


def test_importing_the_cli_imports_neither_torch_nor_pandas():
    probe = "import sys, bench.cli; print(sorted({'torch', 'pandas'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


def test_matrices_lists_every_packaged_matrix_with_its_description():
    result = CliRunner().invoke(main, ["matrices"])
    assert result.exit_code == 0, result.output
    shipped = sorted((Path(__file__).resolve().parents[1] / "bench" / "matrices").glob("*.toml"))
    listed = {line.split()[0]: line.split(maxsplit=1)[1] for line in result.output.splitlines()}
    assert set(listed) == {path.stem for path in shipped}
    for path in shipped:
        assert listed[path.stem] == tomllib.loads(path.read_text())["description"]


def test_a_matrix_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["plan", "rtx3080"])
    assert result.exit_code == 0, result.output
    assert "0 of 13 cells" not in result.output and "13 of 13 cells to run" in result.output
    (tmp_path / "mine.toml").write_text((Path(__file__).resolve().parents[1] / "bench/matrices/smoke.toml").read_text())
    assert CliRunner().invoke(main, ["plan", "mine.toml"]).exit_code == 0
    unknown = CliRunner().invoke(main, ["plan", "rtx9090"])
    assert unknown.exit_code == 2
    assert unknown.output.strip() == (
        "Error: rtx9090: no such matrix file, nor a packaged matrix (a10, a100, a30, example, impls, rtx3080, rtx3090, smoke, v100)"
    )


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_an_installed_pfcbench_plans_a_packaged_matrix_from_any_folder(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(REPO)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import bench; print(bench.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert where.stdout.strip().startswith(str(target))
    plan = subprocess.run([str(target / "bin" / "pfcbench"), "plan", "rtx3080"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert plan.returncode == 0, plan.stderr
    assert "13 of 13 cells to run; results in results/rtx3080/results.jsonl" in plan.stdout


def test_the_ci_workflow_runs_commands_pfcbench_has():
    workflow = (REPO / ".github" / "workflows" / "smoke.yml").read_text()
    commands = [
        shlex.split(line.split("bin/pfcbench", 1)[1]) for line in workflow.splitlines() if "bin/pfcbench " in line
    ]
    assert [argv[0] for argv in commands] == ["run", "run", "report", "compare"]
    for argv in commands:
        options = {opt for param in main.commands[argv[0]].params for opt in param.opts}
        assert {arg for arg in argv if arg.startswith("--")} <= options, argv
    assert re.search(r"compare baseline/smoke results/smoke .*--fail-on slower,failing", workflow)


@pytest.mark.slow
def test_plan_report_compare_and_env_run_where_torch_cannot_be_imported(tmp_path):
    results = tmp_path / "results" / "tiny"
    results.mkdir(parents=True)
    (results / "matrix.toml").write_text((REPO / "bench" / "matrices" / "smoke.toml").read_text())
    (results / "env.json").write_text((REPO / "tests" / "data" / "rtx3080_env.json").read_text())
    (results / "results.jsonl").write_text("")
    blocked = "import sys; sys.modules['torch'] = None; from bench.cli import main; main(sys.argv[1:])"
    for argv in (
        ["plan", "rtx3080"],
        ["env"],
        ["report", str(results), "-o", str(tmp_path / "tiny.md")],
        ["compare", str(results), str(results), "--fail-on", "slower"],
        ["--help"],
    ):
        done = subprocess.run([sys.executable, "-c", blocked, *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
        # compare of a folder without records says so in one line (exit 2): it needs no torch for that either
        expected = 2 if argv[0] == "compare" else 0
        assert done.returncode == expected and "Traceback" not in done.stderr, (argv, done.stderr)


def test_section_picks_the_sections_a_run_covers():
    only_cpu = CliRunner().invoke(main, ["plan", "impls", "--section", "1", "--results", "/nonexistent-results"])
    assert only_cpu.exit_code == 0, only_cpu.output
    assert "4 of 4 cells to run" in only_cpu.output and "GPU" not in only_cpu.output
    beyond = CliRunner().invoke(main, ["plan", "impls", "--section", "5"])
    assert beyond.exit_code == 2
    assert beyond.output.strip().endswith("--section 5: the matrix has sections 1 to 4")


@pytest.mark.slow
def test_a_run_of_cuda_cells_without_a_gpu_names_the_sections_that_need_none(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", "impls", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert "nothing was run (sections that need no GPU: 1. CPU, 2 ranks, 1.1 GiB per rank;" in done.stderr
    assert not any(tmp_path.iterdir())


class InstantLauncher(LocalLauncher):
    """Each cell ends at its first poll, recorded as an error without starting torchrun: `run`'s lines alone."""

    poll_s = 0.0

    def submit(self, cell, results_dir):
        from bench.launch.base import Job

        return Job(cell=cell, workdir=results_dir / "work" / cell.cell_id)

    def poll(self, job):
        from bench.launch.base import Ended

        return Ended(1, None, "made up", {})

    def release(self, job, results_dir) -> None:
        pass

    def collect(self, job, ended, results_dir):
        from bench.store.records import build_record

        return build_record(job.cell, [], "error", error=ended.error, started=0.0, duration_s=0.0), True


def test_a_local_runs_progress_counts_each_cell_once_in_words_of_a_local_run(tmp_path, monkeypatch):
    monkeypatch.setitem(LAUNCHERS, "local", InstantLauncher)
    done = CliRunner().invoke(main, ["run", "smoke", "--section", "2", "--results", str(tmp_path)])
    assert done.exit_code == 0, done.output
    header, *lines = done.output.splitlines()
    assert header.startswith("smoke: 3 of 3 cells to run, results in ")
    progress = [line for line in lines if line.startswith("[")]
    assert progress == lines[: len(progress)], "no stray line between the header and the progress"
    assert [line.rsplit(" [", 1)[-1] for line in progress] == [
        "1 done, 0 running, 2 to run]",
        "2 done, 0 running, 1 to run]",
        "3 done, 0 running, 0 to run]",
    ]
