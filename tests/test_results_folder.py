"""The results folder as report and compare meet it: outputs never land on it, damage is one line, environments are kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.config import Cell
from bench.matrix import load_matrix
from bench.rank.host import describe_machine
from bench.store.results import append_record, read_records
from tests.sweeps import write_matrix
from tests.test_bad_input import one_line

ENV = {"cpu_model": "Test CPU", "cpu_sockets": 1, "cpu_cores": 2, "memory_gib": 8, "os": "Linux", "python": "3.12",
       "torch": "2.5.1", "gpus": []}  # fmt: skip


def results_folder(tmp_path: Path, batches: str = "8, 16") -> Path:
    """A results folder of the tiny matrix whose every cell has an oom record."""
    matrix = write_matrix(tmp_path, batches)
    folder = tmp_path / "results" / "tiny"
    folder.mkdir(parents=True)
    (folder / "matrix.toml").write_text(matrix.read_text())
    (folder / "env.json").write_text(json.dumps(ENV))
    for cell in load_matrix(matrix).cells():
        append_record(folder / "results.jsonl", {"schema": 1, "cell_id": cell.cell_id, "config": cell.to_dict(),
                                                 "status": "oom"})  # fmt: skip
    return folder


@pytest.mark.parametrize("target", ["results.jsonl", "env.json", "matrix.toml", "env/0123abcd.json"])
@pytest.mark.parametrize("fmt", ["csv", "json", "md"])
def test_report_never_writes_over_the_files_of_a_results_folder(tmp_path, monkeypatch, target, fmt):
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path)
    (folder / "env").mkdir()
    (folder / "env" / "0123abcd.json").write_text(json.dumps(ENV))
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    line = one_line(CliRunner().invoke(main, ["report", str(folder), "--format", fmt, "-o", str(folder / target)]))
    assert "is part of the results folder" in line
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("fmt", ["csv", "json", "md"])
def test_report_never_writes_over_a_file_it_did_not_write(tmp_path, monkeypatch, fmt):
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own notes")
    line = one_line(CliRunner().invoke(main, ["report", str(folder), "--format", fmt, "-o", str(mine / "notes.txt")]))
    assert f"{mine / 'notes.txt'}: not a file pfcbench report wrote" in line
    assert [(p.name, p.read_text()) for p in mine.iterdir()] == [("notes.txt", "the user's own notes")]


def test_a_report_replaces_its_own_files_but_not_a_plot_or_report_it_did_not_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path)
    for record in read_records(folder / "results.jsonl"):  # each cell ran again, ok: a plot of their speeds
        append_record(folder / "results.jsonl", record | {"status": "ok", "samples_per_s": 100.0})
    out = tmp_path / "report" / "tiny.md"
    assert CliRunner().invoke(main, ["report", str(folder)]).exit_code == 0
    written = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    assert set(written) == {".pfcbench-report.json", "tiny.md", "tiny-section-1.png"}
    assert CliRunner().invoke(main, ["report", str(folder)]).exit_code == 0  # its own files, replaced
    assert {p.name for p in out.parent.iterdir()} == set(written)

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "tiny-section-1.png").write_bytes(b"a picture of the user's")
    line = one_line(CliRunner().invoke(main, ["report", str(folder), "-o", str(pictures / "tiny.md")]))
    assert "tiny-section-1.png: not a file pfcbench report wrote" in line
    # nothing written, not even the report the plot goes with, and no staging folder left
    assert [(p.name, p.read_bytes()) for p in pictures.iterdir()] == [
        ("tiny-section-1.png", b"a picture of the user's")
    ]

    out.write_text(out.read_text() + "a line the user added\n")  # an edited report is the user's
    line = one_line(CliRunner().invoke(main, ["report", str(folder)]))
    assert "tiny.md: changed since pfcbench report wrote it" in line
    assert out.read_text().endswith("a line the user added\n")
    assert {p.name for p in out.parent.iterdir()} == set(written)


def test_report_output_under_a_file_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path)
    (tmp_path / "plain").write_text("x")
    line = one_line(CliRunner().invoke(main, ["report", str(folder), "-o", str(tmp_path / "plain" / "r.md")]))
    assert "cannot create the folder" in line


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda f: ((f / "results.jsonl").unlink(), (f / "results.jsonl").mkdir()), "is a folder"),
        (lambda f: append_record(f / "results.jsonl", {"schema": 4, "cell_id": "x", "config": {}, "status": "ok"}),
         "schema 4, newer than"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("command", ["report", "plan", "compare"])
def test_a_damaged_results_file_is_one_line(tmp_path, monkeypatch, damage, said, command):
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path)
    damage(folder)
    args = {"report": [str(folder)], "plan": [str(folder / "matrix.toml")], "compare": [str(folder), str(folder)]}
    assert said in one_line(CliRunner().invoke(main, [command, *args[command]]))


@pytest.mark.parametrize(
    ("text", "said"), [("[" * 50000, "env.json: cannot read: not JSON"), ('["an", "array"]', "not a JSON object")]
)
def test_a_damaged_environment_is_one_line(tmp_path, monkeypatch, text, said):
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path)
    (folder / "env.json").write_text(text)
    assert said in one_line(CliRunner().invoke(main, ["report", str(folder)]))


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda env: env.pop("python"), "key 'python' is missing"),
        (lambda env: env.update(cpu_sockets="four"), "key 'cpu_sockets': 'four' is not int"),
        (lambda env: env.update(memory_gib=float("inf")), "key 'memory_gib': inf is not a finite number"),
        (lambda env: env.update(os="Ubuntu\x0024.04"), "key 'os': 'Ubuntu\\x0024.04' is empty or holds a control"),
        (lambda env: env.update(cpu_model="  "), "key 'cpu_model': '  ' is empty"),
        (lambda env: env.update(gpus=[{"name": "", "memory_mib": 81920}]), "gpus[0]: '' is empty"),
        (lambda env: env.update(gpus=["H100"]), "gpus[0] is not an object"),
    ],
)  # fmt: skip
def test_a_machine_description_a_report_cannot_use_is_one_line_naming_its_key(tmp_path, monkeypatch, damage, said):
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path)
    env = dict(ENV)
    damage(env)
    (folder / "env.json").write_text(json.dumps(env))
    records = (folder / "results.jsonl").read_bytes()
    line = one_line(CliRunner().invoke(main, ["report", str(folder), "-o", "r.md"]))
    assert "env.json: not a machine description: " in line and said in line, line
    assert not (tmp_path / "r.md").exists() and (folder / "results.jsonl").read_bytes() == records


@pytest.mark.parametrize("name", ["", "env/\x00.json", "env/a\nb.json", 7, "/etc/hostname", "../elsewhere.json"])
def test_a_record_whose_env_names_no_file_of_the_folder_is_one_line(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path)
    first = read_records(folder / "results.jsonl")[0]
    append_record(folder / "results.jsonl", dict(first, env=name))
    line = one_line(CliRunner().invoke(main, ["report", str(folder), "-o", "r.md"]))
    assert "a record's env is" in line and ("outside the results folder" in line or "not the name of a file" in line)
    assert not (tmp_path / "r.md").exists()


@pytest.mark.parametrize("link", ["env.json", "env/0123456789ab.json"])
def test_a_machine_description_linked_from_outside_the_folder_is_not_shown(tmp_path, monkeypatch, link):
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path)
    secret = tmp_path / "elsewhere.json"
    secret.write_text(json.dumps(dict(ENV, cpu_model="SECRET CPU")))
    (folder / link).unlink(missing_ok=True)
    (folder / link).parent.mkdir(exist_ok=True)
    (folder / link).symlink_to(secret)
    if link != "env.json":
        first = read_records(folder / "results.jsonl")[0]
        append_record(folder / "results.jsonl", dict(first, env=link))
    result = CliRunner().invoke(main, ["report", str(folder), "-o", "r.md"])
    assert "outside the results folder" in one_line(result) and "SECRET" not in result.output
    assert not (tmp_path / "r.md").exists()


def test_run_keeps_each_environment_and_its_records_point_at_it(tmp_path, monkeypatch):
    """A resumed sweep on a changed machine: env.json of the first run stays, the new records name their own."""
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path, "8")
    matrix = write_matrix(tmp_path, "8, 16, 32")
    first = (folder / "env.json").read_bytes()
    result = CliRunner().invoke(main, ["run", str(matrix), "--results", "results", "--prune-after-oom"])
    assert result.exit_code == 0, result.output
    assert (folder / "env.json").read_bytes() == first
    new = read_records(folder / "results.jsonl")[1:]
    assert [r["status"] for r in new] == ["skipped", "skipped"]
    assert {r["env"] for r in new} == {new[0]["env"]} and new[0]["env"].startswith("env/")
    assert json.loads((folder / new[0]["env"]).read_text())["hostname"] == describe_machine()["hostname"]

    report = CliRunner().invoke(main, ["report", str(folder), "-o", "r.md"])
    assert report.exit_code == 0, report.output
    markdown = (tmp_path / "r.md").read_text()
    assert "These records come from 2 environments" in markdown
    assert f"env.json (1 cells), {new[0]['env']} (2 cells)" in markdown and "torch" in markdown


def test_a_report_of_one_environment_says_nothing_of_environments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = results_folder(tmp_path)
    assert CliRunner().invoke(main, ["report", str(folder), "-o", "r.md"]).exit_code == 0
    assert "environments" not in (tmp_path / "r.md").read_text()


@pytest.mark.parametrize("threshold", ["nan", "inf", "-0.5", "1e9"])
def test_compare_refuses_a_threshold_that_is_not_a_finite_fraction(tmp_path, threshold):
    folder = results_folder(tmp_path)
    line = one_line(CliRunner().invoke(main, ["compare", str(folder), str(folder), "--threshold", threshold]))
    assert "threshold must be" in line


def test_compare_of_runs_that_share_no_cell_says_so_and_names_what_differs(tmp_path):
    (tmp_path / "a").mkdir()
    a = results_folder(tmp_path / "a")
    b = tmp_path / "b" / "results.jsonl"
    for batch in (8, 16, 24):
        cell = Cell(backbone="none", device="cpu", nproc_per_node=2, batch_size=batch, embedding_size=64)
        append_record(b, {"cell_id": cell.cell_id, "config": cell.to_dict(), "status": "oom"})
    line = one_line(CliRunner().invoke(main, ["compare", str(a), str(b)]))
    assert "the runs share no cell (A has 2 cells, B has 3)" in line
    assert "embedding_size" in line and "--ignore" in line
