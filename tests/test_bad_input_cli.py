"""Bad input on the newer surfaces (search, plan's numbers, compare, matrix names): one clear line,
exit 2, nothing started and nothing written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.config import Cell
from bench.store.results import append_record, read_records
from tests.test_bad_input import one_line

SEARCH = ["search", "classes", "--backbone", "none", "--batch-size", "32", "--nproc", "2", "--device", "cpu",
          "--max-memory-gib", "0.7"]  # fmt: skip


@pytest.mark.parametrize("start", ["0", "-3", "123456789012345678901234567890"])
def test_search_refuses_a_start_out_of_range_and_records_nothing(tmp_path, start):
    result = CliRunner().invoke(main, [*SEARCH, "--start", start, "--results", str(tmp_path / "r")])
    assert "--start must be at least 1" in one_line(result)
    assert not (tmp_path / "r").exists()


def test_a_cuda_search_without_enough_gpus_refuses_before_any_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    argv = ["search", "batch_size", "--backbone", "none", "--classes", "5000", "--nproc", "4", "--device", "cuda"]
    line = one_line(CliRunner().invoke(main, [*argv, "--results", str(tmp_path / "r")]))
    assert "need 4 GPUs" in line and "nothing was run" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("value", ["-inf", "NaN", "3e40", "0"])
@pytest.mark.parametrize("option", ["--memory-gib", "--max-memory-gib"])
def test_plan_refuses_a_memory_size_that_is_not_a_finite_positive_gib(tmp_path, option, value):
    result = CliRunner().invoke(main, ["plan", "smoke", option, value, "--results", str(tmp_path)])
    assert f"{option} must be a positive number of GiB" in one_line(result)


@pytest.mark.parametrize("ranks", ["1", "77777777777"])
def test_emulate_ranks_out_of_range_is_refused_by_its_own_name(tmp_path, ranks):
    line = one_line(CliRunner().invoke(main, ["plan", "smoke", "--emulate-ranks", ranks, "--results", str(tmp_path)]))
    assert "--emulate-ranks must be at least 2" in line and "nproc_per_node" not in line


def ok_record(cell: Cell, **figures) -> dict:
    return {"schema": 1, "cell_id": cell.cell_id, "config": cell.to_dict(), "status": "ok", **figures}


CELL = Cell(backbone="none", device="cpu", nproc_per_node=2, batch_size=24, embedding_size=32)


@pytest.mark.parametrize(
    "option", [["--alpha", "1.5"], ["--alpha", "nan"], ["--threshold", "-2"], ["--ignore", "nope"]]
)
def test_compare_exits_2_on_a_bad_option_value(tmp_path, option):
    append_record(tmp_path / "a" / "results.jsonl", ok_record(CELL, samples_per_s=50.0))
    line = one_line(CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "a"), *option]))
    assert option[0].strip("-") in line


@pytest.mark.parametrize("figures", [{}, {"samples_per_s": 0}, {"samples_per_s": "fast"}])
def test_compare_counts_an_ok_record_without_a_usable_speed_as_incomparable(tmp_path, figures):
    append_record(
        tmp_path / "a" / "results.jsonl", ok_record(CELL, samples_per_s=80.0, samples_per_s_windows=[80.0] * 3)
    )
    append_record(tmp_path / "b" / "results.jsonl", ok_record(CELL, **figures))
    argv = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-on", "incomparable"]
    result = CliRunner().invoke(main, argv)
    assert "Traceback" not in result.output and result.exit_code == 1, result.output
    assert f"cell {CELL.cell_id} is ok, but no samples/sec: incomparable" in result.output
    assert "--fail-on incomparable: 1 of 1 cells" in result.output


def test_compare_of_two_empty_runs_does_not_pass_the_gate(tmp_path):
    for name in "ab":
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.jsonl").write_text("")
    argv = ["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--fail-on", "slower"]
    assert "neither run has a record" in one_line(CliRunner().invoke(main, argv))


def test_an_empty_matrix_name_is_refused_not_taken_as_smoke(tmp_path):
    line = one_line(CliRunner().invoke(main, ["plan", "", "--results", str(tmp_path)]))
    assert "MATRIX '': empty" in line and "smoke" in line


def test_a_folder_named_like_a_packaged_matrix_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rtx3090").mkdir()
    result = CliRunner().invoke(main, ["plan", "rtx3090", "--nproc", "1", "--results", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert f"cells to run; results in {tmp_path / 'r' / 'rtx3090' / 'results.jsonl'}" in result.output


@pytest.mark.parametrize("name", ["y" * 4000, "bad\nname", "ta\tb.toml", "es\x1bc.toml"])
def test_a_matrix_name_that_cannot_be_a_file_is_one_escaped_line(tmp_path, name):
    results = tmp_path / "r"
    append_record(results / "smoke" / "results.jsonl", ok_record(CELL, samples_per_s=9.0))
    line = one_line(CliRunner().invoke(main, ["run", name, "--results", str(results)]))
    assert "\n" not in line and "\x1b" not in line and "\t" not in line
    assert len(read_records(results / "smoke" / "results.jsonl")) == 1


def test_search_refuses_a_damaged_results_folder_before_any_probe(tmp_path):
    (tmp_path / "a" / "search" / "results.jsonl").mkdir(parents=True)
    assert "results.jsonl: is a folder" in one_line(
        CliRunner().invoke(main, [*SEARCH, "--results", str(tmp_path / "a")])
    )
    newer = tmp_path / "b" / "search" / "results.jsonl"
    append_record(newer, {**ok_record(CELL, samples_per_s=3.0), "schema": 77})
    assert "schema 77" in one_line(CliRunner().invoke(main, [*SEARCH, "--results", str(tmp_path / "b")]))
    assert len(newer.read_text().splitlines()) == 1


def test_a_recorded_probe_whose_value_is_text_is_not_taken_as_a_probe():
    from bench.plan.search import recorded_probes

    record = ok_record(CELL, samples_per_s=3.0)
    record["config"] = dict(record["config"], classes="many")
    assert recorded_probes({CELL.cell_id: record}, CELL, "classes") == {}


SEARCH_MATRIX = """
name = "s"
[[sections]]
columns = [{ header = "Batch-size", field = "batch_size" }, { header = "Largest", field = "largest" },
           { header = "Probes", field = "num_probes" }]
[sections.set]
device = "cpu"
backbone = "none"
nproc_per_node = 2
[sections.search]
field = "classes"
[[sections.rows]]
classes = 4000
batch_size = 16
max_memory_gib = 0.25
"""


@pytest.mark.parametrize("damaged", [{"classes": 3 * 10**12}, {"classes": 2**70}, {"classes": -8000}])
def test_a_recorded_probe_that_no_cell_could_have_run_is_left_out_of_plan_and_report(tmp_path, monkeypatch, damaged):
    import dataclasses
    import json

    from bench.matrix import load_matrix

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(SEARCH_MATRIX)
    (start, _field), *_ = load_matrix(tmp_path / "s.toml").searches()
    folder = tmp_path / "results" / "s"
    probe = dataclasses.replace(start, classes=5000)
    append_record(folder / "results.jsonl", ok_record(probe, samples_per_s=9.0))
    append_record(
        folder / "results.jsonl", dict(ok_record(probe), cell_id="d", config=dict(probe.to_dict(), **damaged))
    )
    (folder / "matrix.toml").write_text(SEARCH_MATRIX)
    env = {"cpu_model": "c", "cpu_sockets": 1, "memory_gib": 4, "os": "o", "python": "3", "torch": "2"}
    (folder / "env.json").write_text(json.dumps(env))

    plan = CliRunner().invoke(main, ["plan", "s.toml"])
    assert plan.exit_code == 0 and "1 of 1 searches" in plan.output, plan.output
    report = CliRunner().invoke(main, ["report", str(folder), "-o", "r.md"])
    assert report.exit_code == 0, report.output
    assert "| 16           | 5000      | 1        |" in (tmp_path / "r.md").read_text()


def test_folders_that_hold_results_folders_are_named_by_what_they_hold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for run in ("results-a", "results-b"):
        append_record(tmp_path / run / "smoke" / "results.jsonl", ok_record(CELL, samples_per_s=9.0))
    line = one_line(CliRunner().invoke(main, ["compare", "results-a", "results-b"]))
    assert line == "Error: results-a: not a results folder (no results.jsonl); did you mean results-a/smoke?"
    line = one_line(CliRunner().invoke(main, ["report", "results-b"]))
    assert line.endswith("did you mean results-b/smoke?")
    assert not (tmp_path / "report").exists()


def test_a_matrix_name_given_for_a_results_folder_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line(CliRunner().invoke(main, ["report", "smoke"]))
    assert "smoke is a matrix: report takes a results folder: results/smoke" in line
    line = one_line(CliRunner().invoke(main, ["compare", "smoke", "results/smoke"]))
    assert "compare takes a results folder: results/smoke" in line
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(
    ("setting", "meant"),
    [("batchsize=8", "batch_size"), ("batch-size=8", "batch_size"), ("sampel_rate=0.1", "sample_rate")],
)
def test_a_misspelt_field_is_refused_with_the_field_it_probably_meant(tmp_path, setting, meant):
    line = one_line(CliRunner().invoke(main, ["plan", "smoke", "--set", setting, "--results", str(tmp_path)]))
    assert line.endswith(f"unknown cell field {setting.split('=')[0]!r}; did you mean {meant}?")
    far = one_line(CliRunner().invoke(main, ["plan", "smoke", "--set", "colour=red", "--results", str(tmp_path)]))
    assert far.endswith("unknown cell field 'colour'")


@pytest.mark.parametrize("num_gpus", [0, 2])
def test_the_advice_for_too_few_gpus_is_in_the_commands_own_options(tmp_path, monkeypatch, num_gpus):
    monkeypatch.setattr("bench.launch.local.visible_gpus", lambda: num_gpus)
    cell = one_line(
        CliRunner().invoke(main, ["cell", "--device", "cuda", "--nproc", "4", "--workdir", str(tmp_path / "w")])
    )
    assert "--set" not in cell and not (tmp_path / "w").exists()
    assert ("--device cpu" in cell) if num_gpus == 0 else ("--emulated" in cell and "--nproc 2 or fewer" in cell)

    run = one_line(CliRunner().invoke(main, ["run", "a100", "--results", str(tmp_path / "r")]))
    assert "need 8 GPUs per node" in run and "nothing was run" in run
    assert "cpu" not in run.lower(), "a matrix made for 8 GPUs is never advised onto the CPU"
    assert ("run it on a GPU machine" in run) if num_gpus == 0 else ("--emulate-ranks 8" in run)
    assert not (tmp_path / "r").exists()
