"""The ledger of Slurm jobs in flight never reads, writes or deletes outside its results folder's scratch area.

Most cases need no live Slurm: the ledgers are written by hand, and a stand-in scontrol on PATH answers
as Slurm does for a job it has forgotten, or as a client that cannot reach its controller.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.launch.ledger import add_job, read_ledger
from bench.launch.slurm import slurm_command
from bench.matrix import load_matrix
from bench.plan.build import PlanSource, plan_in
from bench.store.files import FileError, remove
from tests.sweeps import write_matrix

FORGOTTEN = "slurm_load_jobs error: Invalid job id specified"
NO_CONTROLLER = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"


def fake_scontrol(tmp_path: Path, monkeypatch, answer: str) -> None:
    """Put an scontrol first on PATH that fails with Slurm's own message."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "scontrol"
    script.write_text(f"#!/bin/sh\necho '{answer}' >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def sweep_folder(tmp_path: Path) -> tuple[Path, list]:
    """results/tiny as a run leaves it (its matrix.toml), and the cells of its plan."""
    matrix = write_matrix(tmp_path, "24, 40")
    results_dir = tmp_path / "results" / "tiny"
    results_dir.mkdir(parents=True)
    shutil.copy(matrix, results_dir / "matrix.toml")
    return results_dir, plan_in(load_matrix(matrix, {}), results_dir).cells


def entry(cell, workdir: str, **more) -> dict:
    return {"cell_id": cell.cell_id, "config": cell.to_dict(), "workdir": workdir, "submitted_at": 1.0, **more}


def write_ledger(results_dir: Path, entries: object) -> Path:
    path = results_dir / "in-flight.json"
    path.write_text(json.dumps(entries))
    return path


def precious_folder(tmp_path: Path) -> Path:
    """A user's folder beside the results, which pfcbench did not make."""
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def one_error(result, *words: str) -> str:
    """The one line of a refusal, exit 2, which says each of words."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink", "relative-before"])
@pytest.mark.parametrize("command", ["status", "collect"])
def test_an_entry_whose_scratch_folder_lies_outside_is_refused_and_nothing_outside_is_touched(
    tmp_path, monkeypatch, how, command
):
    results_dir, cells = sweep_folder(tmp_path)
    precious = precious_folder(tmp_path)
    here = str(results_dir.resolve())
    if how == "absolute":  # as today's pfcbench wrote it, hand-edited
        written = entry(cells[0], str(precious))
    elif how == "dotdot":
        written = entry(cells[0], "work/../../../precious", results_dir=here)
    elif how == "symlink":  # a scratch folder that is a symlink pointing out
        (results_dir / "work").mkdir()
        (results_dir / "work" / "cell.node7").symlink_to(precious)
        written = entry(cells[0], "work/cell.node7", results_dir=here)
    else:  # written before entries named their results folder, relative to a working folder
        written = entry(cells[0], "../precious")
    ledger = write_ledger(results_dir, {"4242": written})
    before = ledger.read_bytes()
    fake_scontrol(tmp_path, monkeypatch, FORGOTTEN)  # Slurm forgot the job: without the check, collect deletes

    one_error(invoke(command, str(results_dir)), str(ledger), "job 4242", "'workdir'", "outside")
    assert snapshot(precious) == {"thesis.tex": b"years of work"}
    assert ledger.read_bytes() == before and not (results_dir / "results.jsonl").exists()
    assert not (results_dir / "env").exists()


def test_a_copy_of_a_results_folder_does_not_act_on_the_originals_jobs(tmp_path, monkeypatch):
    original, cells = sweep_folder(tmp_path)
    for number, cell in enumerate(cells):
        workdir = original / "work" / f"{cell.cell_id}.node3"
        workdir.mkdir(parents=True)
        (workdir / "rank-0.json").write_text(json.dumps({"rank": 0}))
        add_job(original, str(5170 + number), cell.cell_id, cell.to_dict(), workdir, PlanSource())
    kept = snapshot(original)
    copy = tmp_path / "copy-of-tiny"
    shutil.copytree(original, copy)
    fake_scontrol(tmp_path, monkeypatch, FORGOTTEN)

    for command in ("status", "collect"):
        one_error(invoke(command, str(copy)), "belongs to the results folder", str(original.resolve()))
    assert snapshot(original) == kept and snapshot(copy) == kept


def test_a_copy_of_a_ledger_written_before_entries_named_their_folder_is_refused(tmp_path, monkeypatch):
    original, cells = sweep_folder(tmp_path)
    workdir = original.resolve() / "work" / "c.node3"
    workdir.mkdir(parents=True)
    write_ledger(original, {"811": entry(cells[1], str(workdir))})  # absolute, as today's pfcbench writes it
    copy = tmp_path / "elsewhere" / "tiny"
    shutil.copytree(original, copy)
    fake_scontrol(tmp_path, monkeypatch, FORGOTTEN)

    one_error(invoke("collect", str(copy)), "outside the scratch area")
    assert workdir.is_dir() and (original / "in-flight.json").exists()


def test_status_gives_the_same_answer_from_any_working_folder_and_collect_orphans_no_rank_file(tmp_path, monkeypatch):
    results_dir, cells = sweep_folder(tmp_path)
    finished = results_dir / "work" / f"{cells[0].cell_id}.{socket.gethostname()}"
    finished.mkdir(parents=True)
    (finished / "rank-0.json").write_text(
        json.dumps({"rank": 0, "host": "node3", "status": "error", "error": "loss went NaN at step 9"})
    )
    # written before entries named their results folder: relative to the working folder tmp_path
    write_ledger(results_dir, {"6061": entry(cells[0], f"results/tiny/work/{finished.name}")})
    fake_scontrol(tmp_path, monkeypatch, FORGOTTEN)

    answers = []
    for cwd in (tmp_path, tmp_path / "bin", Path("/")):
        monkeypatch.chdir(cwd)
        result = invoke("status", str(results_dir))
        assert result.exit_code == 0, result.output
        answers.append(result.output)
    assert answers[0] == answers[1] == answers[2] and f"{cells[0].cell_id}  job 6061  done" in answers[0]

    monkeypatch.chdir(tmp_path / "bin")
    collected = invoke("collect", str(results_dir))
    assert collected.exit_code == 0, collected.output
    [record] = [json.loads(line) for line in (results_dir / "results.jsonl").read_text().splitlines()]
    assert record["cell_id"] == cells[0].cell_id and record["slurm_job_id"] == "6061" and record["status"] == "error"
    assert not finished.exists() and not (results_dir / "in-flight.json").exists()


def test_a_local_run_with_slurm_jobs_in_flight_refuses_and_deletes_nothing(tmp_path, monkeypatch):
    results_dir, cells = sweep_folder(tmp_path)
    entries = {}
    for number, cell in enumerate(cells):
        workdir = results_dir / "work" / f"{cell.cell_id}.{socket.gethostname()}"
        workdir.mkdir(parents=True)
        (workdir / "rank-1.json").write_text(json.dumps({"rank": 1}))
        entries[str(930 + number)] = entry(cell, f"work/{workdir.name}", results_dir=str(results_dir.resolve()))
    write_ledger(results_dir, entries)
    kept = snapshot(results_dir)

    result = invoke("run", str(results_dir / "matrix.toml"), "--results", str(tmp_path / "results"))
    one_error(result, "2 Slurm jobs", "status", "collect", "--launcher slurm")
    assert snapshot(results_dir) == kept and sorted(p.name for p in results_dir.iterdir()) == [
        "in-flight.json", "matrix.toml", "work",
    ]  # fmt: skip


@pytest.mark.parametrize("job_id", ["--all", "12 34", "7;rm", "-1", "12_", "abc"])
def test_a_job_id_that_is_not_a_slurm_job_id_never_reaches_a_slurm_command(tmp_path, monkeypatch, job_id):
    results_dir, cells = sweep_folder(tmp_path)
    write_ledger(results_dir, {job_id: entry(cells[0], "work/c.node1", results_dir=str(results_dir.resolve()))})
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\ntouch {tmp_path}/scontrol-ran\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    for command in ("status", "collect"):
        one_error(invoke(command, str(results_dir)), "is not a Slurm job id")
    with pytest.raises(ValueError, match="not a Slurm job id"):
        slurm_command("scontrol", "show", "job", "-o", job_id)
    assert not (tmp_path / "scontrol-ran").exists()


def test_an_array_task_id_is_a_job_id(tmp_path):
    results_dir, cells = sweep_folder(tmp_path)
    write_ledger(results_dir, {"5150_3": entry(cells[0], "work/c.n", results_dir=str(results_dir.resolve()))})
    assert list(read_ledger(results_dir)) == ["5150_3"]


def test_a_slurm_that_cannot_be_asked_is_unknown_never_running_or_lost(tmp_path, monkeypatch):
    results_dir, cells = sweep_folder(tmp_path)
    workdir = results_dir / "work" / "c.node2"
    workdir.mkdir(parents=True)
    write_ledger(results_dir, {"31337": entry(cells[1], "work/c.node2", results_dir=str(results_dir.resolve()))})
    fake_scontrol(tmp_path, monkeypatch, NO_CONTROLLER)

    status = invoke("status", str(results_dir))
    assert status.exit_code == 0, status.output
    assert f"{cells[1].cell_id}  job 31337  unknown ({NO_CONTROLLER})" in status.output
    assert status.output.strip().splitlines()[-1] == "1 unknown"
    collected = invoke("collect", str(results_dir))
    assert collected.exit_code == 0 and "recorded 0 cells; 1 jobs still in flight" in collected.output
    assert workdir.is_dir() and read_ledger(results_dir).keys() == {"31337"}


def test_collect_with_nothing_in_flight_writes_nothing(tmp_path):
    results_dir, _ = sweep_folder(tmp_path)
    result = invoke("collect", str(results_dir))
    assert result.exit_code == 0 and "nothing in flight" in result.output
    assert [p.name for p in results_dir.iterdir()] == ["matrix.toml"]


def damaged(cells, here: str) -> dict[str, tuple[object, list[str]]]:
    """Each kind of damaged ledger, and what its one line must name."""
    good = entry(cells[0], "work/c.n", results_dir=here)
    return {
        "a list": ([good], ["expected an object of job id -> entry", "list"]),
        "an entry that is text": ({"77": "running"}, ["job 77", "not str"]),
        "a missing key": ({"78": {k: v for k, v in good.items() if k != "config"}}, ["job 78", "no key 'config'"]),
        "a config that is a list": ({"79": {**good, "config": [1, 2]}}, ["job 79", "key 'config'", "list"]),
        "a config field of the wrong type": (
            {"80": {**good, "config": {**good["config"], "batch_size": "thirty"}}},
            ["job 80", "key 'config'", "batch_size"],
        ),
        "a cell id that does not match": ({"81": {**good, "cell_id": "0123456789ab"}}, ["job 81", "key 'cell_id'"]),
        "a plan of the wrong type": ({"82": {**good, "plan": "all"}}, ["job 82", "key 'plan'"]),
        "not JSON": ("{'80': ", ["not a ledger of jobs in flight"]),
    }


KINDS = [
    "a list", "an entry that is text", "a missing key", "a config that is a list", "a config field of the wrong type",
    "a cell id that does not match", "a plan of the wrong type", "not JSON",
]  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_ledger_is_one_line_naming_the_entry_and_key_in_every_command(tmp_path, kind):
    results_dir, cells = sweep_folder(tmp_path)
    value, words = damaged(cells, str(results_dir.resolve()))[kind]
    path = results_dir / "in-flight.json"
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    kept = snapshot(results_dir)

    matrix, root = str(results_dir / "matrix.toml"), str(tmp_path / "results")
    for args in (
        ["status", str(results_dir)],
        ["collect", str(results_dir)],
        ["run", matrix, "--results", root],
        ["run", matrix, "--results", root, "--launcher", "slurm", "--detach"],
    ):
        one_error(invoke(*args), f"Error: {path}: ", *words)
        assert snapshot(results_dir) == kept and sorted(p.name for p in results_dir.iterdir()) == [
            "in-flight.json", "matrix.toml",
        ]  # fmt: skip


def test_every_deletion_stays_inside_the_folder_pfcbench_made(tmp_path):
    made = tmp_path / "results" / "tiny" / "work"
    (made / "cell.a").mkdir(parents=True)
    (made / "cell.a" / "rank-0.json").write_text("{}")
    (made / "note.txt").write_text("x")
    precious = precious_folder(tmp_path)
    (made / "out").symlink_to(precious)
    (made / "sub").mkdir()
    (made / "sub" / "keep").write_text("k")

    for outside in (precious, made / "out", made / ".." / ".." / ".." / "precious", made, made / "..", Path("/")):
        with pytest.raises(FileError, match="lies outside"):
            remove(outside, made)
    with pytest.raises(FileError, match="lies outside"):
        remove(precious / "thesis.tex", made)
    assert snapshot(precious) == {"thesis.tex": b"years of work"}

    remove(made / "cell.a", made)
    remove(made / "note.txt", made)
    remove(made / "never-made", made)  # already gone
    remove(made / "sub", made, only_if_empty=True)  # not empty: kept
    assert sorted(p.name for p in made.iterdir()) == ["out", "sub"] and (made / "sub" / "keep").exists()
