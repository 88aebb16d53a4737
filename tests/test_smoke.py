"""The README's first command: the packaged smoke sweep trains finite losses on this machine, its report
shows a speed in every row but the memory-capped one, and its published page shows the same in a browser."""

from __future__ import annotations

import math

import pytest

from bench.store.results import read_results
from tests.cli import pfcbench
from tests.test_publish_browser import check_sweep_page
from tests.test_report import tables


@pytest.mark.slow
def test_the_smoke_sweep_trains_finite_losses_and_reports_a_speed_in_every_row(tmp_path):
    done = pfcbench("run", "smoke", "--results", str(tmp_path / "results"), timeout_s=1200, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = read_results(tmp_path / "results" / "smoke" / "results.jsonl").records
    capped = [r for r in records if r["config"].get("max_memory_gib")]
    assert [r["status"] for r in capped] == ["oom"]
    trained = [r for r in records if r not in capped]
    assert len(trained) == 9 and all(r["status"] == "ok" for r in trained), [r.get("error") for r in trained]
    for record in trained:
        losses = (record["loss_first"], record["loss_last"], record["nonfinite_losses"])
        assert math.isfinite(losses[0]) and math.isfinite(losses[1]) and losses[2] == 0, (record["config"], losses)

    folder = tmp_path / "results" / "smoke"
    report = pfcbench("report", str(folder), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    markdown = (tmp_path / "report" / "smoke.md").read_text()
    assert "NaN: the loss was not finite" not in markdown  # the legend of a NaN cell
    for title, (header, *rows) in tables(markdown).items():
        assert not any("NaN" in text for row in rows for text in row), (title, rows)
        if "Samples/sec" in header:
            speeds = [row[header.index("Samples/sec")] for row in rows]
            assert all(s.startswith("~") or s == "Fail" for s in speeds), (title, speeds)

    published = pfcbench("publish", str(folder), "-o", str(tmp_path / "site"), cwd=tmp_path)
    assert published.returncode == 0, published.stderr
    check_sweep_page(tmp_path / "site" / "sweep-1-smoke.html", folder)  # in headless Chromium
