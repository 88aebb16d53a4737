"""Tests for bench.report.compare and `pfcbench compare`: verdicts, the U test, the CLI on result folders."""

from __future__ import annotations

import random
import statistics

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.config import Cell
from bench.report.compare import compare_records, mann_whitney_p, render_comparison
from bench.store.results import append_record

CELLS = [Cell(backbone="none", device="cpu", nproc_per_node=2, batch_size=b) for b in (8, 16, 32, 64, 128, 256)]


def record(cell: Cell, status: str = "ok", step_s: float = 0.1, noise: float = 0.01, seed: int = 0) -> dict:
    """A result record whose 50 step times scatter around step_s."""
    rec = {"cell_id": cell.cell_id, "config": cell.to_dict(), "status": status}
    if status == "ok":
        rng = random.Random(seed)
        steps = [step_s * (1 + rng.gauss(0, noise)) for _ in range(50)]
        rec.update(samples_per_s=cell.batch_size / statistics.median(steps), step_times_s=steps)
    return rec


def runs() -> tuple[dict[str, dict], dict[str, dict]]:
    """Run A and run B: slower by 30%, 2% noise, ok -> oom, oom -> ok, oom on both, missing in B."""
    slower, noisy, failing, fixed, both_oom, gone = CELLS
    a = [record(slower), record(noisy), record(failing), record(fixed, "oom"), record(both_oom, "oom"), record(gone)]
    b = [
        record(slower, step_s=0.13, seed=1),
        record(noisy, step_s=0.102, noise=0.02, seed=1),
        record(failing, "oom"),
        record(fixed, seed=1),
        record(both_oom, "oom"),
    ]
    return {r["cell_id"]: r for r in a}, {r["cell_id"]: r for r in b}


def test_verdicts_of_each_kind_of_change():
    a, b = runs()
    comparisons = compare_records(a, b)
    assert [c.verdict for c in comparisons] == [
        "slower",
        "same",
        "newly failing",
        "fixed",
        "incomparable",
        "incomparable",
    ]
    slower = comparisons[0]
    assert slower.ratio == pytest.approx(1 / 1.3, rel=0.02) and slower.p_value < 1e-10


def test_a_change_needs_the_threshold_and_the_test():
    a, b = runs()
    slower, noisy = (CELLS[0].cell_id, CELLS[1].cell_id)
    assert compare_records(a, b, threshold=0.4)[0].verdict == "same"
    faster = compare_records({slower: b[slower]}, {slower: a[slower]})[0]
    assert faster.verdict == "faster"
    few_steps = {k: dict(v, step_times_s=v["step_times_s"][:2]) for k, v in a.items() if k == noisy}
    b_slow = {noisy: dict(record(CELLS[1], step_s=0.13, seed=1), step_times_s=[0.13, 0.131])}
    weak = compare_records(few_steps, b_slow)[0]
    assert weak.ratio < 0.95 and weak.p_value > 0.01 and weak.verdict == "same"


def test_mann_whitney_p_matches_the_textbook_normal_approximation():
    assert mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.080856, abs=1e-5)
    assert mann_whitney_p([1, 2, 2, 3], [2, 3, 3, 4, 5]) == pytest.approx(0.099342, abs=1e-5)
    assert mann_whitney_p([1.0, 1.0], [1.0, 1.0]) == 1.0


def test_mann_whitney_p_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    for _ in range(20):
        x = [round(rng.gauss(0, 1), 1) for _ in range(rng.randint(3, 40))]
        y = [round(rng.gauss(0.3, 1), 1) for _ in range(rng.randint(3, 40))]
        expected = stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic").pvalue
        assert mann_whitney_p(x, y) == pytest.approx(expected, rel=1e-9)


def test_render_shows_key_fields_marks_ratio_and_a_count():
    lines = render_comparison(compare_records(*runs())).splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[:8]]
    assert rows[0] == ["cell", "batch_size", "A", "B", "ratio", "p-value", "verdict"]
    assert rows[2][1:5] == ["8", "~80", "~61", "0.767"] and rows[2][6] == "slower"
    assert rows[4][2:] == ["~320", "Fail", "", "", "newly failing"]
    assert rows[7][3] == "—"
    assert lines[-1] == "1 slower, 1 same, 1 newly failing, 1 fixed, 2 incomparable"


def test_cli_compare_reads_result_folders(tmp_path):
    a, b = runs()
    for name, records in (("a", a), ("b", b)):
        for rec in records.values():
            append_record(tmp_path / name / "results.jsonl", rec)
    result = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "slower" in result.output and "newly failing" in result.output


def test_cli_compare_missing_folder_and_bad_alpha_are_one_line_errors(tmp_path):
    append_record(tmp_path / "a" / "results.jsonl", record(CELLS[0]))
    missing = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "nope")])
    assert missing.exit_code != 0 and len(missing.output.strip().splitlines()) == 1
    assert "nope" in missing.output and "no such results" in missing.output
    bad = CliRunner().invoke(main, ["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--alpha", "2"])
    assert bad.exit_code != 0 and "alpha must be between 0 and 1" in bad.output


def test_cli_fail_on_names_each_cell_it_fails_on(tmp_path):
    a, b = runs()
    for name, records in (("a", a), ("b", b)):
        for rec in records.values():
            append_record(tmp_path / name / "results.jsonl", rec)
    folders = [str(tmp_path / "a"), str(tmp_path / "b")]
    same = CliRunner().invoke(main, ["compare", folders[0], folders[0], "--fail-on", "slower,failing,incomparable"])
    assert same.exit_code == 1, same.output  # A's two oom cells are incomparable with themselves
    assert same.output.count("incomparable: cell") == 1 + 1
    slower = CliRunner().invoke(main, ["compare", *folders, "--fail-on", "slower"])
    assert slower.exit_code == 1
    named = [line.strip() for line in slower.output.splitlines() if line.startswith("  ")]
    assert named == [f"slower: cell {CELLS[0].cell_id} (batch_size 8, 0.77x): ~80 -> ~61"]
    gates = CliRunner().invoke(main, ["compare", *folders, "--fail-on", "failing, incomparable"])
    assert gates.exit_code == 1
    assert sorted(line.split(":")[0].strip() for line in gates.output.splitlines() if line.startswith("  ")) == [
        "incomparable",
        "incomparable",
        "newly failing",
    ]
    faster_only = CliRunner().invoke(main, ["compare", folders[1], folders[0], "--fail-on", "slower"])
    assert faster_only.exit_code == 0, faster_only.output
    bad = CliRunner().invoke(main, ["compare", *folders, "--fail-on", "slow"])
    assert bad.exit_code not in (0, 1) and "give one or more of slower, failing, incomparable" in bad.output
