"""Damaged rank files and records, and the report options a careful user can still get wrong: one line or a
word in the table, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.launch.base import Ended, Job, finish_record
from bench.matrix import load_matrix
from bench.store.records import rank_files_left
from bench.store.results import append_record, read_results
from bench.verdicts import nonfinite, outlier_ranks, training_speed
from tests.test_bad_input import one_line

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "matrices" / "smoke.toml"
ENV = REPO / "tests" / "data" / "rtx3080_env.json"
CELL = load_matrix(SMOKE).sections[0].rows[0].cell


def ok_record(**figures) -> dict:
    record = {"schema": 1, "cell_id": CELL.cell_id, "config": CELL.to_dict(), "status": "ok"}
    return {**record, "samples_per_s": 64.0, "samples_per_s_windows": [64.0] * 3, "step_times_s": [0.2] * 6, **figures}


def results_folder(path: Path, *records: dict) -> Path:
    path.mkdir(parents=True)
    shutil.copyfile(SMOKE, path / "matrix.toml")
    shutil.copyfile(ENV, path / "env.json")
    for record in records:
        append_record(path / "results.jsonl", record)
    return path


def clean(result, code: int = 0) -> str:
    assert "Traceback" not in result.output and result.exit_code == code, result.output
    return result.output


@pytest.mark.parametrize(
    "rank_file, said",
    [
        ({"host": "n1", "status": "ok"}, "no 'rank'"),
        ({"rank": "0", "host": "n1", "status": "ok"}, "'0' as its 'rank'"),
        ({"rank": 0, "host": "n1"}, "no 'status'"),
        ([0, 1], "a JSON list"),
        ({"rank": 0, "host": "n1", "status": "oom", "peer_failures": ["rank 1"]}, "'peer_failures'"),
    ],
)
def test_a_damaged_rank_file_makes_the_cell_an_error_naming_file_and_key(tmp_path, rank_file, said):
    (tmp_path / "rank-1.json").write_text(json.dumps(rank_file))
    assert rank_files_left(tmp_path)
    record = finish_record(Job(cell=CELL, workdir=tmp_path), Ended(1, None, "exit code 1", {"slurm_job_id": "7"}))
    assert record["status"] == "error" and record["slurm_job_id"] == "7"
    assert str(tmp_path / "rank-1.json") in record["error"] and said in record["error"]


def test_a_damaged_rank_file_is_done_not_lost_for_status(tmp_path, monkeypatch):
    from bench.launch import slurm

    monkeypatch.setattr(slurm, "job_state", lambda job_id: None)
    (tmp_path / "rank-0.json").write_text(json.dumps({"rank": 0.5, "host": "n1", "status": "ok"}))
    assert slurm.job_word("4242", tmp_path) == "done"
    (tmp_path / "rank-0.json").write_text('{"rank": 0, "ho')  # cut short: the rank wrote nothing whole
    assert slurm.job_word("4242", tmp_path) == "lost"


DAMAGED = {
    "ranks that are not objects": {"ranks": [7, None]},
    "ranks that are an object": {"ranks": {"0": {"rank": 0}}},
    "a rank that is a list": {"ranks": [{"rank": [0], "peak_rss_mib": 9.0}, {"rank": 1, "peak_rss_mib": 90.0}]},
    "peak memory that is text": {"ranks": [{"rank": 0, "peak_rss_mib": "9 GiB"}, {"rank": 1, "peak_rss_mib": 90.0}]},
    "a grad scale that is text": {"grad_scale": "65536"},
    "a NaN-loss count that is text": {"nonfinite_losses": "none"},
}


@pytest.mark.parametrize("figures", DAMAGED.values(), ids=DAMAGED.keys())
def test_bad_figures_of_a_record_are_absent_in_report_and_compare(tmp_path, figures):
    record = ok_record(**figures)
    assert not nonfinite(record) and training_speed(record) == 64.0 and outlier_ranks(record) == []
    folder = results_folder(tmp_path / "r", record)
    out = tmp_path / "r.md"
    clean(CliRunner().invoke(main, ["report", str(folder), "-o", str(out)]))
    assert "~64" in out.read_text() and "far from the others" not in out.read_text()
    assert "1 same" in clean(CliRunner().invoke(main, ["compare", str(folder), str(folder)]))


def test_a_rank_named_by_a_whole_number_is_still_named_beside_a_damaged_one():
    ranks = [{"rank": "x", "peak_rss_mib": 1.0}, {"rank": 0, "peak_rss_mib": 10.0}, {"rank": 1, "peak_rss_mib": 40.0}]
    assert outlier_ranks(ok_record(ranks=ranks)) == ["rank 1 peak memory 4.0x the others'"]


def test_a_nan_speed_prints_a_word_in_every_table_and_the_legend_says_it(tmp_path):
    folder = results_folder(tmp_path / "r", ok_record(samples_per_s=float("inf")))
    out = tmp_path / "r.md"
    clean(CliRunner().invoke(main, ["report", str(folder), "-o", str(out)]))
    text = out.read_text()
    assert "| no speed " in text and "no speed: the record is ok but holds no usable samples/sec" in text
    other = results_folder(tmp_path / "other", ok_record())
    clean(CliRunner().invoke(main, ["report", str(folder), str(other), "-o", str(out)]))
    text = out.read_text()
    assert "| no speed " in text and "no speed: the record is ok but holds no usable samples/sec" in text


@pytest.mark.parametrize("spelling", ["./{}", "{}/", "{}/../r", "link"])
def test_the_same_folder_twice_is_refused_and_nothing_is_written(tmp_path, monkeypatch, spelling):
    monkeypatch.chdir(tmp_path)
    results_folder(tmp_path / "r", ok_record())
    (tmp_path / "link").symlink_to(tmp_path / "r")
    out = tmp_path / "machines.md"
    line = one_line(CliRunner().invoke(main, ["report", "r", spelling.format("r"), "-o", str(out)]))
    assert "the same results folder is given twice" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "option, said",
    [
        (["--train-on", "webface42m", "--gpu-hour-price", "3e12"], "--gpu-hour-price must be a price"),
        (["--train-on", "webface42m", "--gpu-hour-price", "inf"], "--gpu-hour-price must be a price"),
        (["--images", str(10**30), "--epochs", "3"], "--images must be a whole number of at least 1 and at most"),
        (["--images", "5000", "--epochs", str(10**25)], "--epochs must be a whole number of at least 1 and at most"),
    ],
)
def test_training_run_sizes_are_bounded_so_hours_and_cost_stay_finite(tmp_path, option, said):
    folder = results_folder(tmp_path / "r", ok_record())
    out = tmp_path / "r.md"
    assert said in one_line(CliRunner().invoke(main, ["report", str(folder), "-o", str(out), *option]))
    assert not out.exists()


def test_the_largest_price_gives_a_finite_cost(tmp_path):
    cuda = CELL.to_dict() | {"device": "cuda"}
    folder = results_folder(tmp_path / "r", ok_record(config=cuda, cell_id="c"))
    argv = ["report", str(folder), "-o", str(tmp_path / "r.md"), "--train-on", "ms1mv3", "--gpu-hour-price", "1e6"]
    clean(CliRunner().invoke(main, argv))
    assert "inf" not in (tmp_path / "r.md").read_text()


def test_as_published_without_a_published_spec_says_the_spec_is_this_machines(tmp_path):
    folder = results_folder(tmp_path / "r", ok_record())
    out = tmp_path / "r.md"
    clean(CliRunner().invoke(main, ["report", str(folder), "--as-published", "-o", str(out)]))
    assert "gives no published server spec ([report] published_spec): this is the machine that ran" in out.read_text()


def probe(**changes) -> dict:
    config = CELL.to_dict() | {"max_memory_gib": 0.5} | changes
    return {"schema": 1, "cell_id": "p", "config": config, "status": "oom", "search_start": 2048}


@pytest.mark.parametrize("damaged", [probe(classes="4096"), probe(batch_size=[8]), probe() | {"search_start": "2k"}])
def test_a_search_probe_whose_value_is_not_a_number_is_skipped_with_a_warning(tmp_path, damaged):
    folder = results_folder(tmp_path / "smoke", ok_record(), damaged)
    results = read_results(folder / "results.jsonl")
    assert len(results.records) == 1 and [number for number, _ in results.skipped] == [2]
    assert "a search probe whose" in results.warning() and "line 2" in results.warning()
    result = CliRunner().invoke(main, ["report", str(folder), "-o", str(tmp_path / "r.md")])
    assert "skipped 1 line(s)" in clean(result) and "line 2: a search probe whose" in result.output
    result = CliRunner().invoke(main, ["plan", "smoke", "--results", str(tmp_path)])
    assert "skipped 1 line(s)" in clean(result) and "line 2: a search probe whose" in result.output


def test_a_folder_name_too_long_for_the_file_system_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path / "r", ok_record())
    long_name = "b" * 280
    for argv in (
        ["report", long_name],
        ["report", long_name, "--as-published"],
        ["report", str(folder), long_name],
        ["report", str(folder), "-o", f"{long_name}.md"],
        ["report", str(folder), "-o", f"{long_name}/r.md"],
        ["compare", str(folder), long_name],
        ["plan", "smoke", "--results", long_name],
    ):
        assert "File name too long" in one_line(CliRunner().invoke(main, argv)), argv
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
