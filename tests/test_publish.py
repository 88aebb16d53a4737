"""`pfcbench publish`: the site's files and what its pages say, read from the HTML; what it refuses. The
browser's view of the same pages is tests/test_publish_browser.py."""

from __future__ import annotations

import json
import re
import shutil
import threading
import urllib.request

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.matrix import PACKAGED, load_matrix
from bench.publish.site import MARKER, server
from tests.publish_sites import ALPHA, BETA, expected_speeds, html_tables, smoke_folder
from tests.test_report import published_records, tables
from tests.test_report_across import A100_ENV, results_folder


def publish(*args: str):
    return CliRunner().invoke(main, ["publish", *args])


def speed_column(table: list[list[str]]) -> list[str]:
    header, *rows = table
    return [row[header.index("Samples/sec")] for row in rows]


def test_a_sweep_publishes_as_pages_that_carry_their_data_and_load_nothing_from_the_network(tmp_path):
    folder = smoke_folder(tmp_path / "results" / "smoke", ALPHA)
    done = publish(str(folder), "-o", str(tmp_path / "site"))
    assert done.exit_code == 0, done.output
    site = tmp_path / "site"
    assert str(site / "index.html") in done.output and "--bind 127.0.0.1" in done.output
    assert {"index.html", "sweep-1-smoke.html", "plotly.min.js", "site.js", "site.css", MARKER} <= {
        p.name for p in site.iterdir()
    }
    for page in site.glob("*.html"):
        text = page.read_text()
        assert not re.search(r"""(src=|<link[^>]*href=)["']?(https?:)?//""", text), page  # nothing from a server
        assert re.findall(r'<script src="([^"]+)"', text) == ["plotly.min.js", "site.js"]
    index = html_tables(site / "index.html")[0]
    assert index[0][:9] == ["Matrix", "Machine", "Results", "Date", "Cells", "ok", "Fail", "NaN", "Error"]
    assert index[1][4:9] == ["10", "8", "1", "1", "0"]  # the capped cell Fail, one NaN
    page = site / "sweep-1-smoke.html"
    sections = [t for t in html_tables(page) if "Samples/sec" in t[0]]
    assert [speed_column(t) for t in sections] == expected_speeds(folder)
    text = page.read_text()
    assert 'class="mark mark-nan" title="NaN: the loss was not finite' in text
    assert 'class="mark mark-far-off-rank" title="Ranks far from the others' in text
    records = json.loads(re.search(r'<script type="application/json" id="records">(.*?)</script>', text).group(1))
    assert len(records) == 11 and {r["status"] for r in records} == {"ok", "oom"}  # every row's record


def test_the_a100_matrix_publishes_its_tables_as_published_without_a_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = publish("a100", "-o", "site")
    assert done.exit_code == 0, done.output
    assert CliRunner().invoke(main, ["report", "a100", "--as-published", "-o", "a100.md"]).exit_code == 0
    markdown = [table for table in tables((tmp_path / "a100.md").read_text()).values()]
    page = html_tables(tmp_path / "site" / "published-a100.html")
    assert [[row[:-1] for row in table] for table in page[1:]] == markdown[1:]  # less the Record column
    assert page[0] == markdown[0]  # the published server's spec
    index = html_tables(tmp_path / "site" / "index.html")[0]
    assert index[1][:2] == ["a100", "published"]


@pytest.mark.slow  # traces the report's cells (the memory model)
def test_gpu_sets_the_time_and_memory_models_beside_the_published_figures(tmp_path):
    done = publish("a100", "--gpu", "h100-sxm", "-o", str(tmp_path / "site"))
    assert done.exit_code == 0, done.output
    header, *rows = html_tables(tmp_path / "site" / "published-a100.html")[1]
    predicted = [row[header.index("Predicted (h100-sxm)")] for row in rows]
    assert all(re.fullmatch(r"~\d+", text) for text in predicted), predicted
    text = (tmp_path / "site" / "published-a100.html").read_text()
    assert "time model (bench.time_model) for the cell" in text and "memory model (bench.memory)" in text
    # the memory model's peak and Fail on the card, as `pfcbench plan a100 --gpu h100-sxm` predicts them
    memory = [row[header.index("Predicted GiB (h100-sxm)")] for row in rows]
    planned = json.loads(CliRunner().invoke(main, ["plan", "a100", "--gpu", "h100-sxm", "--json"]).output)
    expected = [
        f"{entry['predicted_peak_gib']:.1f}" + ("" if entry["predicted_fits"] else " Fail")
        for entry in planned
        if "predicted_peak_gib" in entry
    ]
    assert [m for m in memory if m] == expected


@pytest.mark.slow  # traces the report's cells (the memory model)
def test_a_run_on_a_gpu_of_the_catalogue_gets_the_predicted_samples_per_sec_and_memory(tmp_path):
    records = list(published_records(load_matrix(PACKAGED / "a100.toml")).values())
    folder = results_folder(tmp_path / "a100", "a100", records, A100_ENV)
    assert publish(str(folder), "-o", str(tmp_path / "site")).exit_code == 0
    page = tmp_path / "site" / "sweep-1-a100.html"
    header, *rows = [t for t in html_tables(page) if "Samples/sec" in t[0]][0]
    assert "Predicted (a100-sxm4-80gb)" in header
    assert header[header.index("Samples/sec") + 1 : header.index("Samples/sec") + 5] == [
        "Predicted (a100-sxm4-80gb)",
        "Predicted GiB (a100-sxm4-80gb)",
        "Published",
        "Ratio",
    ]
    assert '"meta": "predicted"' in page.read_text()  # the chart's diamonds


def test_two_machines_sit_side_by_side_and_one_machine_s_runs_make_its_history(tmp_path):
    alpha = smoke_folder(tmp_path / "alpha", ALPHA, runs=2)
    beta = smoke_folder(tmp_path / "beta", BETA, speedup=2.0)
    done = publish(str(alpha), str(beta), "-o", str(tmp_path / "site"))
    assert done.exit_code == 0, done.output
    header, *rows = html_tables(tmp_path / "site" / "machines-smoke.html")[1]
    assert header[-3:] == ["AMD EPYC 7B13", "Intel Xeon Gold 6338", "Record"]
    assert len(rows) == 10 and all(row[-1] == "1 2" for row in rows)  # a record of each machine per cell
    history = [t for t in html_tables(tmp_path / "site" / "sweep-1-smoke.html") if "Verdict" in t[0]][0]
    verdicts = [row[history[0].index("Verdict")] for row in history[1:]]
    assert len(verdicts) == 10 and verdicts.count("faster") == 8, verdicts  # 20% faster a day later
    assert any(v.startswith("incomparable") for v in verdicts)  # the NaN cell
    assert "History" not in (tmp_path / "site" / "sweep-2-smoke.html").read_text()


def test_a_folder_that_holds_something_else_is_refused_and_left_as_it_was(tmp_path):
    folder = smoke_folder(tmp_path / "smoke", ALPHA)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    done = publish(str(folder), "-o", str(tmp_path / "docs"))
    assert done.exit_code == 2 and len(done.output.strip().splitlines()) == 1, done.output
    assert "did not write (notes.txt)" in done.output
    assert [p.name for p in (tmp_path / "docs").iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "smoke"]  # no half-written site beside it
    assert publish(str(folder), "-o", str(tmp_path / "smoke")).exit_code == 2  # a results folder is no site


def test_a_site_written_before_is_replaced_whole_but_not_one_a_user_added_to(tmp_path):
    alpha, beta = smoke_folder(tmp_path / "alpha", ALPHA), smoke_folder(tmp_path / "beta", BETA)
    site = tmp_path / "site"
    assert publish(str(alpha), str(beta), "-o", str(site)).exit_code == 0
    assert (site / "machines-smoke.html").exists()
    assert publish(str(alpha), "-o", str(site)).exit_code == 0
    assert not (site / "machines-smoke.html").exists() and not (site / "sweep-2-smoke.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alpha", "beta", "site"]
    (site / "mine.html").write_text("mine")
    done = publish(str(alpha), "-o", str(site))
    assert done.exit_code == 2 and "mine.html, which pfcbench publish did not write" in done.output
    assert (site / "mine.html").read_text() == "mine"


@pytest.mark.parametrize(
    "given, said",
    [
        ("empty", "no such file"),
        ("nosuch", "no such results directory"),
        ("smoke", "smoke is a matrix with no published figure: publish takes its results folder"),
        ("parent", "not a results folder (no results.jsonl); did you mean"),
    ],
)
def test_what_is_not_a_results_folder_is_one_line_and_nothing_is_written(tmp_path, monkeypatch, given, said):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    smoke_folder(tmp_path / "parent" / "smoke", ALPHA)
    done = publish(given, "-o", "site")
    assert done.exit_code == 2 and said in done.output and len(done.output.strip().splitlines()) == 1, done.output
    assert not (tmp_path / "site").exists()


def test_damaged_records_are_shown_as_such_and_a_damaged_env_is_refused(tmp_path):
    folder = smoke_folder(tmp_path / "smoke", ALPHA)
    with open(folder / "results.jsonl", "a") as f:
        f.write('{"cell_id": "x", "status": \n')
    done = CliRunner().invoke(main, ["publish", str(folder), "-o", str(tmp_path / "site")])
    assert done.exit_code == 0 and "skipped 1 line(s) that are not whole records" in done.output
    assert "Damaged records:" in (tmp_path / "site" / "sweep-1-smoke.html").read_text()
    (folder / "env.json").write_text("{")
    done = publish(str(folder), "-o", str(tmp_path / "site2"))
    assert done.exit_code == 2 and "env.json: cannot read: not JSON" in done.output, done.output
    assert "Traceback" not in done.output and not (tmp_path / "site2").exists()


def test_gpu_without_a_matrix_and_a_folder_given_twice_are_refused(tmp_path):
    folder = smoke_folder(tmp_path / "smoke", ALPHA)
    assert "--gpu NAME predicts a matrix" in publish(str(folder), "--gpu", "h100-sxm").output
    assert "given twice" in publish(str(folder), str(folder)).output


def test_the_server_listens_on_localhost_only_and_serves_the_site(tmp_path):
    folder = smoke_folder(tmp_path / "smoke", ALPHA)
    assert publish(str(folder), "-o", str(tmp_path / "site")).exit_code == 0
    httpd = server(tmp_path / "site", 0)
    try:
        host, port = httpd.server_address[:2]
        assert host == "127.0.0.1"
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as response:
            assert "sweep-1-smoke.html" in response.read().decode()
    finally:
        httpd.shutdown()
        httpd.server_close()
    shutil.rmtree(tmp_path / "site")
