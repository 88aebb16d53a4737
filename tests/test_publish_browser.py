"""The published site as a user sees it, in headless Chromium opened from the file system: every cell's figure
in its table, sorting by samples/sec, NaN and Fail labelled, a chart mark per cell that names the cell on
hover, the record one click away, no error in the console and no request beyond the file system."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from tests.browser import chart_marks, column, hover_text, left_the_file_system, opened, tables
from tests.publish_sites import ALPHA, BETA, cell_speeds, expected_speeds, smoke_folder

pytestmark = pytest.mark.slow


def publish(out: Path, *folders: Path) -> Path:
    done = CliRunner().invoke(main, ["publish", *map(str, folders), "-o", str(out)])
    assert done.exit_code == 0, done.output
    return out


def figures(texts: list[str]) -> list[float]:
    return [float(match.group(1)) for text in texts if (match := re.match(r"~(\d+)", text))]


def check_sweep_page(page_path: Path, folder: Path) -> None:
    """What a user must see on a sweep's page: the checks of acceptance, for any smoke-like sweep."""
    expected = expected_speeds(folder)
    with opened(page_path) as (page, seen):
        shown = tables(page, "Samples/sec")
        assert [column(table, "Samples/sec") for table in shown] == expected
        first = page.locator("section table.sortable").first
        first.locator("th", has_text=re.compile(r"^\s*Samples/sec\s*$")).click()
        after = column(tables(page, "Samples/sec")[0], "Samples/sec")
        assert after != expected[0] and sorted(after) == sorted(expected[0])
        assert figures(after) == sorted(figures(expected[0]), reverse=True)
        assert after[: len(figures(after))] == [t for t in after if t.startswith("~")]  # marks after the numbers
        for mark, word in (("nan", "NaN"), ("fail", "Fail")):
            labels = page.locator(f"section:not(#history) table .mark-{mark}")
            assert labels.count() == sum(text == word for texts in expected for text in texts)
            if labels.count():
                assert labels.first.inner_text() == word and labels.first.get_attribute("title")
        for number, texts in enumerate(expected, start=1):
            assert chart_marks(page, f"chart-{number}") == (len(texts), len(texts))
        assert hover_text(page, "chart-1").startswith("1. ")
        page.locator("section table button.record").first.click()
        assert page.locator("#record-dialog").is_visible()
        assert '"cell_id"' in page.locator("#record-text").inner_text()
        assert seen.errors == []
    assert left_the_file_system(seen) == [] and seen.requests


def test_a_sweep_s_page_shows_every_cell_sorts_labels_and_charts_them(tmp_path):
    folder = smoke_folder(tmp_path / "results" / "smoke", ALPHA, runs=2)
    site = publish(tmp_path / "site", folder)
    check_sweep_page(site / "sweep-1-smoke.html", folder)
    with opened(site / "index.html") as (page, seen):
        assert column(tables(page, "Matrix")[0], "NaN") == ["1"]
        page.locator("a", has_text="smoke").click()
        assert page.locator("h1").inner_text() == "Smoke run of pfcbench on the CPU"
        assert seen.errors == []
    assert left_the_file_system(seen) == []


def test_two_machines_side_by_side_in_the_browser(tmp_path):
    alpha, beta = smoke_folder(tmp_path / "alpha", ALPHA), smoke_folder(tmp_path / "beta", BETA, speedup=2.0)
    site = publish(tmp_path / "site", alpha, beta)
    a, b = "AMD EPYC 7B13", "Intel Xeon Gold 6338"
    with opened(site / "machines-smoke.html") as (page, seen):
        [table] = tables(page, a)
        assert column(table, a) == cell_speeds(alpha) and column(table, b) == cell_speeds(beta)
        page.locator("table.sortable th", has_text=a).click()
        after = column(tables(page, a)[0], a)
        assert after != cell_speeds(alpha) and figures(after) == sorted(figures(after), reverse=True)
        nan = page.locator("table.sortable .mark-nan")
        assert nan.count() == 2 and nan.first.inner_text() == "NaN"
        assert chart_marks(page, "chart-1") == (20, 20)  # a mark per cell on each machine
        assert re.search(r"\d+\. classes", hover_text(page, "chart-1"))
        assert seen.errors == []
    assert left_the_file_system(seen) == [] and seen.requests
    check_sweep_page(site / "sweep-2-smoke.html", beta)
