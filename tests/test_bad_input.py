"""Bad input of every kind: one clear line, a non-zero exit, nothing written, nothing started, no hang."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.matrix import MAX_CELLS, load_matrix
from bench.plan.build import make_plan
from tests.cli import pfcbench
from tests.sweeps import write_matrix

HEAD = """
[defaults]
backbone = "none"
device = "cpu"
nproc_per_node = 2
classes = 100
[[sections]]
title = "T"
columns = [{ header = "Batch-size", field = "batch_size" }]
"""


def one_line(result, code: int = 2) -> str:
    """The one error line of a refused command (after click's usage hint, if any); fails on a traceback."""
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def matrix_file(tmp_path: Path, text: str, name: str = "m.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_fifo_and_a_device_as_matrix_are_refused_at_once(tmp_path):
    fifo = tmp_path / "pipe.toml"
    os.mkfifo(fifo)
    for path, said in ((fifo, "not a regular file"), (Path("/dev/urandom"), "not a regular file")):
        result = pfcbench("plan", str(path), "--results", str(tmp_path / "results"), timeout_s=120)
        assert result.returncode == 2 and said in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    big = matrix_file(tmp_path, "# " + "x" * (5 * 2**20) + "\n")
    assert "larger than" in one_line(CliRunner().invoke(main, ["plan", str(big)]))


def test_a_byte_order_mark_at_the_top_of_a_matrix_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + (HEAD + "[sections.grid]\nbatch_size = [4, 6]\n").encode())
    result = CliRunner().invoke(main, ["plan", str(path), "--results", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "2 of 2 cells to run" in result.output


@pytest.mark.parametrize("depth", [3000, 60000])
def test_deeply_nested_arrays_are_one_line(tmp_path, depth):
    path = matrix_file(tmp_path, f"name = {'[' * depth}{']' * depth}\n")
    line = one_line(CliRunner().invoke(main, ["plan", str(path)]))
    assert line.startswith(f"Error: {path}: ") and "nested too deeply" in line


def test_a_grid_beyond_the_limit_is_refused_before_it_is_expanded(tmp_path):
    axes = "batch_size = [" + ", ".join(str(2 * i) for i in range(1, 101)) + "]\n"
    axes += "seed = [" + ", ".join(str(i) for i in range(300)) + "]\n"
    axes += "warmup_steps = [" + ", ".join(str(i) for i in range(400)) + "]\n"  # 12 million points
    path = matrix_file(tmp_path, HEAD + "[sections.grid]\n" + axes)
    started = time.process_time()
    line = one_line(CliRunner().invoke(main, ["plan", str(path)]))
    assert time.process_time() - started < 10  # expanding 12 million points would take many minutes
    assert "12,000,000 grid points and rows" in line and f"{MAX_CELLS:,}" in line


PLAN_4096_CELLS_CPU_S = 30
"""CPU seconds within which 4,096 cells must plan."""


@pytest.mark.slow
def test_a_grid_of_4096_cells_plans_in_linear_time(tmp_path):
    axes = "batch_size = [" + ", ".join(str(2 * i) for i in range(1, 65)) + "]\n"
    axes += "seed = [" + ", ".join(str(i) for i in range(64)) + "]\n"
    path = matrix_file(tmp_path, HEAD + "[sections.grid]\n" + axes + "[[sections]]\ntitle = 'Again'\n"
                       "columns = [{ header = 'Seed', field = 'seed' }]\n[sections.grid]\n" + axes)  # fmt: skip
    started = time.process_time()
    result = CliRunner().invoke(main, ["plan", str(path), "--results", str(tmp_path / "results")])
    elapsed_s = time.process_time() - started
    assert result.exit_code == 0, result.output
    assert "4096 of 4096 cells to run" in result.output
    # A plan that compares each cell with every other took minutes here; a linear one takes about a
    # second of CPU, a few on a slow or loaded machine. The bound sits far from both.
    assert elapsed_s < PLAN_4096_CELLS_CPU_S, f"planning 4,096 cells took {elapsed_s:.1f} s of CPU: quadratic?"
    plan = make_plan(load_matrix(path), tmp_path / "results")
    assert plan.sections_of(plan.cells[-1]) == ["T", "Again"]


@pytest.mark.parametrize(
    ("name", "said"),
    [("  ", "no space at either end"), (" lead", "no space"), ("n" * 180, "(182 characters)"), ("ü" * 60, "1 to 100")],
)
def test_a_blank_or_long_name_is_refused_and_nothing_is_created(tmp_path, name, said):
    path = matrix_file(tmp_path, f'name = "{name}"\n' + HEAD + "[sections.grid]\nbatch_size = [4]\n")
    results = tmp_path / "results"
    line = one_line(CliRunner().invoke(main, ["run", str(path), "--results", str(results), "--timeout", "5"]))
    assert "name: must be a folder name" in line and said in line
    assert len(line) < 400
    assert not results.exists()


@pytest.mark.parametrize(
    "option",
    [["--timeout", "0"], ["--timeout", "-2.5"], ["--timeout", "nan"], ["--timeout", "inf"],
     ["--inactivity-timeout", "-7"], ["--inactivity-timeout", "NaN"], ["--inactivity-timeout", "0"]],
)  # fmt: skip
@pytest.mark.parametrize("command", ["run", "cell"])
def test_timeouts_that_are_not_a_positive_number_of_seconds_are_refused(tmp_path, option, command):
    args = [str(write_matrix(tmp_path, "8")), "--results", str(tmp_path / "results")] if command == "run" else []
    result = CliRunner().invoke(main, [command, *args, *option, "--device", "cpu"] if command == "cell" else
                                [command, *args, *option])  # fmt: skip
    line = one_line(result)
    assert option[0] in line and "a number of seconds above 0" in line
    assert not (tmp_path / "results").exists()


def test_a_matrix_timeout_of_zero_is_refused_too(tmp_path):
    path = matrix_file(tmp_path, "[run]\ntimeout_s = 0\n" + HEAD + "[sections.grid]\nbatch_size = [4]\n")
    assert "[run] timeout_s" in one_line(CliRunner().invoke(main, ["plan", str(path)]))


@pytest.mark.parametrize("classes", ["10000000000000000000000000", "9223372036854775808", "3000000000"])
def test_absurd_class_counts_are_refused_everywhere(tmp_path, classes):
    from_matrix = matrix_file(tmp_path, HEAD.replace("classes = 100", f"classes = {classes}") + "[[sections.rows]]\n")
    results = str(tmp_path / "results")
    for args in (
        ["plan", str(from_matrix)],
        ["run", str(write_matrix(tmp_path, "8")), "--results", results, "--set", f"classes={classes}"],
        ["cell", "--device", "cpu", "--backbone", "none", "--nproc", "2", "--classes", classes],
    ):
        line = one_line(CliRunner().invoke(main, args))
        assert "classes must be" in line and "at most 1,000,000,000" in line
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("cap", ["nan", "inf", "-inf", "0", "-0.5", "2e9"])
def test_cell_refuses_a_memory_cap_that_is_not_a_positive_finite_size(cap):
    result = CliRunner().invoke(main, ["cell", "--device", "cpu", "--backbone", "none", "--max-memory-gib", cap])
    assert "max_memory_gib must be a positive number of GiB" in one_line(result)


@pytest.mark.parametrize("setting", ['seed=1\nname="x"', "seed=2\rprecision='bf16'", "classes=5\x00"])
def test_a_setting_must_be_one_line(tmp_path, setting):
    result = CliRunner().invoke(main, ["plan", str(write_matrix(tmp_path, "8")), "--set", setting])
    assert "FIELD=VALUE on one line" in one_line(result)


def test_a_long_bad_value_is_shortened_in_the_error(tmp_path):
    path = matrix_file(
        tmp_path, HEAD.replace('backbone = "none"', f'backbone = "{"q" * 80000}"') + "[[sections.rows]]\n"
    )
    line = one_line(CliRunner().invoke(main, ["plan", str(path)]))
    assert "backbone must be one of" in line and "(80,002 characters)" in line
    assert len(line) < 400


@pytest.mark.parametrize(
    ("endpoint", "said"),
    [
        ("node7", "HOST:PORT"),
        ("localhost:123456", "HOST:PORT"),
        ("localhost:0", "HOST:PORT"),
        ("", "HOST:PORT"),
        ("localhost:ssh", "HOST:PORT"),
        ("[::1:29400", "HOST:PORT"),
        ("no-such-host.invalid:29400", "cannot be resolved"),
    ],
)
@pytest.mark.parametrize("command", ["run", "cell"])
def test_a_rendezvous_no_agent_could_meet_at_is_refused_before_torchrun(tmp_path, endpoint, said, command):
    args = [str(write_matrix(tmp_path, "8")), "--results", str(tmp_path / "results")] if command == "run" else []
    extra = ["--device", "cpu"] if command == "cell" else []
    result = CliRunner().invoke(main, [command, *args, "--nnodes", "2", "--rdzv-endpoint", endpoint, *extra])
    line = one_line(result)
    assert "--rdzv-endpoint" in line and said in line
    assert not (tmp_path / "results").exists()


def test_cell_workdir_under_a_file_or_not_empty_is_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    cell = ["cell", "--device", "cpu", "--backbone", "none", "--nproc", "2", "--timeout", "5"]
    line = one_line(CliRunner().invoke(main, [*cell, "--workdir", str(tmp_path / "file" / "work")]))
    assert "--workdir" in line and "cannot create the folder" in line
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "rank-0.json").write_text("{}")
    assert "not empty" in one_line(CliRunner().invoke(main, [*cell, "--workdir", str(tmp_path / "used")]))
