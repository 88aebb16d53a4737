"""Golden tests: insightface's V100 and A100 reports, rendered from their published numbers.

Each layout feature of the sibling reports has its test: titled and untitled sections, decimals
with a tilde (~18.2), server-spec rows in the matrix's order with keys of the server's own in place,
a line after the spec table, loose and tight notes, "CUDA x.y" with cuDNN where known and no stray
comma, "(pip)" / "(conda)" only when known; and, by default, the published figures beside the
measured ones with their ratio, Fail against Fail read as agreement.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.matrix import load_matrix
from bench.report import render_markdown
from tests.test_report import published_records, tables, write_results_dir

DATA = Path(__file__).resolve().parent / "data"
V100_ENV = json.loads((DATA / "v100_env.json").read_text())
A100_ENV = json.loads((DATA / "a100_env.json").read_text())


@pytest.fixture(scope="module")
def v100():
    matrix = load_matrix(DATA / "v100.toml")
    return matrix, render_markdown(matrix, published_records(matrix), V100_ENV, as_published=True)


@pytest.fixture(scope="module")
def a100():
    matrix = load_matrix(DATA / "a100.toml")
    return matrix, render_markdown(matrix, published_records(matrix), A100_ENV, as_published=True)


def reference(name: str) -> str:
    return (DATA / f"nvidia_{name}.md").read_text()


def test_v100_titled_sections_reproduce_the_published_tables(v100):
    _, markdown = v100
    ours, published = tables(markdown), tables(reference("v100"))
    for title in ("1. 2 Million Identities", "2. 600K Identities"):
        assert ours[title] == published[title]


def test_a100_table_without_a_heading_follows_the_notes(a100):
    _, markdown = a100
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    assert headings == [
        "# Training performance report on NVIDIA A100",
        "## Test Server Spec",
        "## Experiments on arcface_torch",
    ]
    after_notes = markdown.split("5. We also test on huge synthetic datasets which include 50M~80M classes.")[1]
    provenance, table = after_notes.split("\n\n")[:2]
    assert provenance.startswith("\n6. Measured with pfcbench") and table.startswith("| Dataset ")


def test_a100_gpu_memory_prints_with_a_tilde_as_published(a100):
    _, markdown = a100
    ours = tables(markdown)["Experiments on arcface_torch"]
    published = tables(reference("a100"))["Experiments on arcface_torch"]
    assert [row[-1] for row in ours] == [row[-1] for row in published]
    assert ours[1][-1] == "~18.2" and ours[-1][-1] == "~79.6"
    assert ours == published


def test_a100_spec_rows_follow_the_matrix_with_the_servers_own_keys_in_place(a100):
    _, markdown = a100
    ours, published = tables(markdown)["Test Server Spec"], tables(reference("a100"))["Test Server Spec"]
    assert [row[0] for row in ours[1:]] == [
        "System", "CPU", "Memory", "GPU", "Cooling", "Hard Drive", "OS", "Installation", "Installation", "Installation",
    ]  # fmt: skip
    assert ours == published


def test_v100_spec_reproduces_the_published_table(v100):
    _, markdown = v100
    assert tables(markdown)["Test Server Spec"] == tables(reference("v100"))["Test Server Spec"]


def test_a100_line_after_the_spec_table(a100):
    _, markdown = a100
    after_spec = markdown.split("## Test Server Spec\n\n")[1].split("\n\n")
    assert after_spec[0].splitlines()[-1].startswith("| Installation | PyTorch 1.9.0 (conda)")
    assert after_spec[1] == "This server is donated by [AMAX](https://www.amaxchina.com/), many thanks!"
    assert after_spec[2] == "## Experiments on arcface_torch"


def test_v100_no_line_after_the_spec_table(v100):
    _, markdown = v100
    after_spec = markdown.split("## Test Server Spec\n\n")[1].split("\n\n")
    assert after_spec[1] == "## Experiments on arcface_torch"


def test_a100_notes_are_a_tight_numbered_list(a100):
    _, markdown = a100
    notes = [line for line in markdown.splitlines() if line[:3] in {f"{i}. " for i in range(1, 10)}]
    assert len(notes) == 6 and notes[5].startswith("6. Measured with pfcbench")
    assert "\n".join(notes) in markdown
    assert "\n".join(notes[:5]) in reference("a100")


def test_v100_notes_stay_loose(v100):
    _, markdown = v100
    assert "1. The training dataset is SyntheticDataset.\n\n2. Embedding-size are all set to 512.\n\n3. " in markdown


def test_cuda_has_no_trailing_comma_and_cudnn_shows_where_known(v100, a100):
    installation = {
        name: [row[1] for row in tables(markdown)["Test Server Spec"] if row[0] == "Installation"]
        for name, (_, markdown) in {"v100": v100, "a100": a100}.items()
    }
    assert installation["v100"][0] == "CUDA 10.2"
    assert installation["a100"][0] == "CUDA 11.1, cuDNN 8.0.5"
    newer = render_markdown(a100[0], {}, dict(A100_ENV, torch_cuda="12.4", cudnn="9.1.0"))
    assert "| Installation | CUDA 12.4, cuDNN 9.1.0" in newer


@pytest.mark.parametrize(("installer", "shown"), [("pip", "PyTorch 1.9.0 (pip)"), ("conda", "PyTorch 1.9.0 (conda)"), (None, "PyTorch 1.9.0")])  # fmt: skip
def test_installer_shows_only_when_known(v100, installer, shown):
    markdown = render_markdown(v100[0], {}, dict(V100_ENV, torch_installer=installer))
    assert tables(markdown)["Test Server Spec"][-1] == ["Installation", shown]


def test_published_and_ratio_columns_by_default(v100):
    matrix, _ = v100
    records = published_records(matrix)
    rows = matrix.sections[0].rows
    records[rows[0].cell.cell_id]["samples_per_s"] = 1868 * 1.25
    markdown = render_markdown(matrix, records, V100_ENV)
    table = tables(markdown)["1. 2 Million Identities"]
    assert table[0][-3:] == ["Samples/sec", "Published", "Ratio"]
    assert table[1][-3:] == ["~2335", "~1868", "1.25"]
    assert table[2][-3:] == ["~2712", "~2712", "1.00"]


def test_fail_against_fail_reads_as_agreement_distinct_from_one_sided_fails(v100):
    matrix, _ = v100
    section = matrix.sections[1]
    measured_fail, published_fail, both_fail = section.rows[:3]
    rows = (
        measured_fail,
        dataclasses.replace(published_fail, published="Fail"),
        dataclasses.replace(both_fail, published="Fail"),
    )
    only = dataclasses.replace(matrix, sections=(dataclasses.replace(section, rows=rows),))
    records = published_records(matrix)
    records[measured_fail.cell.cell_id] = {"status": "oom"}
    records[published_fail.cell.cell_id]["samples_per_s"] = 3000.0
    records[both_fail.cell.cell_id] = {"status": "oom"}
    table = tables(render_markdown(only, records, V100_ENV))["2. 600K Identities"]
    assert [row[-3:] for row in table[1:]] == [
        ["Fail", "~2430", "measured Fail"],
        ["~3000", "Fail", "published Fail"],
        ["Fail", "Fail", "both Fail"],
    ]


def test_published_gpu_memory_is_compared_with_the_measured_peak(a100):
    matrix, _ = a100
    records = published_records(matrix)
    first = matrix.sections[0].rows[0].cell.cell_id
    records[first]["gpu_mem_used_mib_max"] = 20.02 * 1024
    table = tables(render_markdown(matrix, records, A100_ENV))["Experiments on arcface_torch"]
    assert table[0][-6:] == ["Samples/sec", "Published", "Ratio", "GPU Mem(GB)", "Published Mem(GB)", "Mem ratio"]
    assert table[1][-6:] == ["~3670", "~3670", "1.00", "~20.0", "~18.2", "1.10"]


def test_cli_report_of_rtx3080_as_it_is_has_published_and_ratio(tmp_path, monkeypatch):
    rtx3080 = load_matrix(Path(__file__).resolve().parents[1] / "bench" / "matrices" / "rtx3080.toml")
    results = write_results_dir(tmp_path / "results" / "rtx3080", list(published_records(rtx3080).values()))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["report", str(results)])
    assert result.exit_code == 0, result.output
    table = tables((tmp_path / "report" / "rtx3080.md").read_text())["1. 2 Million Identities"]
    assert table[0][-3:] == ["Samples/sec", "Published", "Ratio"]
    assert table[1][-3:] == ["Fail", "Fail", "both Fail"]
    assert table[2][-3:] == ["~2190", "~2190", "1.00"]
    result = CliRunner().invoke(main, ["report", str(results), "--as-published", "-o", "plain.md"])
    assert result.exit_code == 0, result.output
    assert tables((tmp_path / "plain.md").read_text())["1. 2 Million Identities"][0][-1] == "Samples/sec"
