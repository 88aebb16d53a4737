"""Tests for bench.report and `pfcbench report`: the published RTX 3080 tables, marks, metrics, exports, CLI."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.matrix import Row, load_matrix
from bench.metrics import BOTH_FAIL, EMULATED, FAIL, LOADER_BOUND, METRICS, NAN, NOT_YET, Entry
from bench.report import export, read_run, render_markdown
from bench.report.marks import legend
from bench.report.tables import section_frame
from bench.store.results import append_record, latest_by_cell

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
RTX3080 = REPO / "matrices" / "rtx3080.toml"
ENV = json.loads((DATA / "rtx3080_env.json").read_text())

MINI = """
name = "mini"

[report]
title = "Mini"
heading = "Results"
spec = { GPU = "2 x CPU rank", Installation = "CUDA none,\\nPython 3.12", Storage = "NVMe" }

[defaults]
backbone = "none"
device = "cpu"
nproc_per_node = 2
classes = 1000

[[sections]]
title = "1. Metrics"
columns = [
    { header = "Batch-size", field = "batch_size" },
    { header = "Samples/sec", field = "samples_per_s" },
    { header = "Published", field = "published" },
    { header = "Ratio", field = "ratio" },
    { header = "Spread", field = "spread" },
    { header = "Step (ms)", field = "step_time_ms" },
    { header = "GPU Mem(GB)", field = "gpu_mem_gb" },
    { header = "Power (W)", field = "power_w" },
    { header = "Status", field = "status", labels = { oom = "out of memory" } },
]

[[sections.rows]]
batch_size = 8
published = 100

[[sections.rows]]
batch_size = 16
published = 150

[[sections.rows]]
batch_size = 32
published = "Fail"
"""


def published_records(matrix) -> dict[str, dict]:
    """Records as if every cell had run at its published speed, oom where the report says Fail."""
    records = {}
    for section in matrix.sections:
        for row in section.rows:
            status = "oom" if row.published == "Fail" else "ok"
            record = {"cell_id": row.cell.cell_id, "config": row.cell.to_dict(), "status": status}
            if status == "ok":
                record.update(samples_per_s=float(row.published), harness_version="0.1.0")
            if row.published_gpu_mem_gb is not None:
                record["gpu_mem_used_mib_max"] = row.published_gpu_mem_gb * 1024
            records[row.cell.cell_id] = record
    return records


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """The first table under each heading, as rows of stripped cells (header row first, rule row dropped)."""
    found: dict[str, list[list[str]]] = {}
    heading = None
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and heading is not None:
            if not re.fullmatch(r"[\s|:-]+", line):
                found.setdefault(heading, []).append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif heading in found:
            heading = None
    return found


def write_results_dir(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RTX3080, path / "matrix.toml")
    (path / "env.json").write_text(json.dumps(ENV))
    for record in records:
        append_record(path / "results.jsonl", record)
    return path


@pytest.fixture(scope="module")
def rtx3080():
    return load_matrix(RTX3080)


def test_published_numbers_render_the_reference_tables_cell_for_cell(rtx3080):
    markdown = render_markdown(rtx3080, published_records(rtx3080), ENV, as_published=True)
    ours, reference = tables(markdown), tables((DATA / "nvidia_rtx3080.md").read_text())
    for title in ("1. 2 Million Identities", "2. 600K Identities"):
        assert ours[title] == reference[title]
    assert [row[0] for row in ours["Test Server Spec"]] == [row[0] for row in reference["Test Server Spec"]]
    # The published "CUDA 11.1," ends in a stray comma; the cuDNN it ran with stands there instead.
    cuda_row = reference["Test Server Spec"].index(["Installation", "CUDA 11.1,"])
    reference["Test Server Spec"][cuda_row] = ["Installation", "CUDA 11.1, cuDNN 8.0.5"]
    assert ours["Test Server Spec"] == reference["Test Server Spec"]


def test_layout_follows_the_reference_and_names_what_measured(rtx3080):
    markdown = render_markdown(rtx3080, published_records(rtx3080), ENV)
    headings = [line for line in markdown.splitlines() if line.startswith("#")]
    assert headings == [
        "# Training performance report on NVIDIA RTX3080",
        "## Test Server Spec",
        "## Experiments on arcface_torch",
        "### 1. 2 Million Identities",
        "### 2. 600K Identities",
    ]
    assert "1. The training dataset is SyntheticDataset.\n\n2. Embedding-size are all set to 512.\n\n3. " in markdown
    assert "Measured with pfcbench 0.1.0, impl arcface_torch_2021; precision fp32, fp16 (per row as shown)" in markdown
    assert "not run yet" not in markdown and "Error" not in markdown


def test_unfinished_cells_get_distinct_marks_and_a_legend(rtx3080):
    records = published_records(rtx3080)
    rows = rtx3080.sections[1].rows
    records[rows[0].cell.cell_id].update(status="error", error="RuntimeError: NCCL")
    records[rows[1].cell.cell_id].update(status="timeout")
    records[rows[2].cell.cell_id].update(status="skipped", reason="implied by oom of cell abc at batch size 512")
    del records[rows[4].cell.cell_id]
    markdown = render_markdown(rtx3080, records, ENV, as_published=True)
    speeds = [row[-1] for row in tables(markdown)["2. 600K Identities"][1:]]
    assert speeds == ["Error", "Timeout", "Skipped", "Fail", "—"]
    legend = markdown.split("### 2. 600K Identities")[1].strip().splitlines()[-1]
    assert legend.startswith("Error: the job failed")
    assert "Timeout: " in legend and "—: not run yet." in legend
    assert "Skipped: not run (implied by oom of cell abc at batch size 512)." in legend
    assert "Fail:" not in legend


def test_impl_note_names_the_impl_of_every_number(tmp_path):
    side_by_side = """
[[sections]]
title = "2. Side by side"
columns = [{ header = "Impl", field = "impl" }, { header = "Samples/sec", field = "samples_per_s" }]
rows = [{ impl = "arcface_torch_2021" }, { impl = "arcface_torch" }]
"""
    mixed = MINI.replace("batch_size = 32", 'batch_size = 32\nimpl = "arcface_torch_2021"')
    (tmp_path / "mini.toml").write_text(mixed + side_by_side)
    matrix = load_matrix(tmp_path / "mini.toml")
    records = {cell.cell_id: {"status": "ok", "samples_per_s": 100.0} for cell in matrix.cells()}
    note = (
        "impl arcface_torch (section 1 rows 1, 2), arcface_torch_2021 (section 1 row 3), per row as shown in section 2;"
    )
    assert note in render_markdown(matrix, records, ENV)
    assert tables(render_markdown(matrix, records, ENV))["2. Side by side"][1:] == [
        ["arcface_torch_2021", "~100"],
        ["arcface_torch", "~100"],
    ]
    only_section_1 = {row.cell.cell_id: records[row.cell.cell_id] for row in matrix.sections[0].rows[:2]}
    assert "impl arcface_torch;" in render_markdown(matrix, only_section_1, ENV)
    (tmp_path / "mini.toml").write_text(MINI + side_by_side.replace('"arcface_torch" }', '"arcface_torch_2021" }'))
    matrix = load_matrix(tmp_path / "mini.toml")
    one_each = {cell.cell_id: {"status": "ok", "samples_per_s": 100.0} for cell in matrix.cells()}
    assert "impl arcface_torch (section 1), per row as shown in section 2;" in render_markdown(matrix, one_each, ENV)


def test_metric_columns_ratio_published_and_spec_overrides(tmp_path):
    (tmp_path / "mini.toml").write_text(MINI)
    matrix = load_matrix(tmp_path / "mini.toml")
    ok_8, ok_16, oom_32 = (row.cell for row in matrix.sections[0].rows)
    figures = {"samples_per_s_min": 105.0, "samples_per_s_max": 115.0, "step_time_s_median": 0.0725}
    records = {
        ok_8.cell_id: {"status": "ok", "samples_per_s": 110.0, "gpu_mem_used_mib_max": 2560.0, **figures},
        ok_16.cell_id: {"status": "ok", "samples_per_s": 120.0, "power_w": 301.4},
        oom_32.cell_id: {"status": "oom"},
    }
    markdown = render_markdown(matrix, records, ENV)
    assert tables(markdown)["1. Metrics"] == [
        [
            "Batch-size",
            "Samples/sec",
            "Published",
            "Ratio",
            "Spread",
            "Step (ms)",
            "GPU Mem(GB)",
            "Power (W)",
            "Status",
        ],
        ["8", "~110", "~100", "1.10", "9.1%", "72.5", "2.5", "", "ok"],
        ["16", "~120", "~150", "0.80", "", "", "", "301", "ok"],
        ["32", "Fail", "Fail", "both Fail", "", "", "", "", "out of memory"],
    ]
    assert tables(markdown)["Test Server Spec"][1:] == [
        ["CPU", "2 x Intel(R) Xeon(R) Platinum 8255C CPU @ 2.50GHz"],
        ["Memory", "384GB"],
        ["GPU", "2 x CPU rank"],
        ["OS", "Ubuntu 18.04.4 LTS"],
        ["Installation", "CUDA none,"],
        ["Installation", "Python 3.12"],
        ["Storage", "NVMe"],
    ]


def test_plots_are_written_and_linked_relative_to_the_markdown(tmp_path, rtx3080):
    (tmp_path / "mini.toml").write_text(MINI)
    mini = load_matrix(tmp_path / "mini.toml")
    records = {mini.sections[0].rows[0].cell.cell_id: {"status": "ok", "samples_per_s": 110.0}}
    markdown = render_markdown(mini, records, ENV, plots_dir=tmp_path / "out" / "img", markdown_dir=tmp_path / "out")
    assert "![1. Metrics](img/mini-section-1.png)" in markdown
    assert (tmp_path / "out" / "img" / "mini-section-1.png").read_bytes().startswith(b"\x89PNG")
    no_runs = render_markdown(rtx3080, {}, ENV, plots_dir=tmp_path)
    assert "No cell of this matrix has been run yet." in no_runs
    assert ".png" not in no_runs and not list(tmp_path.glob("rtx3080-*.png"))


def test_export_flattens_records_to_csv_and_json(rtx3080):
    records = list(published_records(rtx3080).values())
    records[1]["step_times_s"] = [0.25, 0.5]
    frame = pd.read_csv(io.StringIO(export(records, "csv")))
    assert len(frame) == 13
    assert {"cell_id", "status", "samples_per_s", "config.batch_size", "config.precision"} <= set(frame.columns)
    assert frame.loc[1, "samples_per_s"] == 2190.0 and frame.loc[1, "config.sample_rate"] == 0.1
    assert json.loads(frame.loc[1, "step_times_s"]) == [0.25, 0.5]
    rows = json.loads(export(records, "json"))
    assert rows[0]["config.classes"] == 2059906 and rows[0]["status"] == "oom" and rows[0]["samples_per_s"] is None
    with pytest.raises(ValueError, match="csv or json"):
        export(records, "xlsx")


def test_cli_report_writes_markdown_with_a_linked_plot(tmp_path, monkeypatch, rtx3080):
    results = write_results_dir(tmp_path / "results" / "rtx3080", list(published_records(rtx3080).values()))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["report", str(results)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(Path("report") / "rtx3080.md")
    markdown = (tmp_path / "report" / "rtx3080.md").read_text()
    assert "![1. 2 Million Identities](rtx3080-section-1.png)" in markdown
    assert (tmp_path / "report" / "rtx3080-section-1.png").is_file()
    result = CliRunner().invoke(main, ["report", str(results), "--format", "json", "-o", "out/r.json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "out" / "r.json").read_text())) == 13


@pytest.mark.parametrize(
    ("setup", "named"),
    [
        (lambda d: None, "results/none: no such results directory"),
        (lambda d: (d / "results.jsonl").unlink(), "results.jsonl: no such file"),
        (lambda d: (d / "env.json").unlink(), "env.json: no such file"),
        (lambda d: (d / "matrix.toml").unlink(), "matrix.toml: no such file"),
    ],
)
def test_cli_report_names_the_missing_file_in_one_line(tmp_path, monkeypatch, rtx3080, setup, named):
    monkeypatch.chdir(tmp_path)
    results = write_results_dir(tmp_path / "results" / "rtx3080", list(published_records(rtx3080).values()))
    target = results if "none" not in named else tmp_path / "results" / "none"
    setup(results)
    result = CliRunner().invoke(main, ["report", str(target.relative_to(tmp_path))])
    assert result.exit_code != 0
    assert len(result.output.strip().splitlines()) == 1
    assert named in result.output


def test_records_of_a_run_with_overrides_match_the_overridden_cells(tmp_path):
    overridden = load_matrix(RTX3080, {"nproc_per_node": 1, "max_memory_gib": 10.0})
    records = [
        dict(r, overrides={"nproc_per_node": 1, "max_memory_gib": 10.0}) for r in published_records(overridden).values()
    ]
    results = write_results_dir(tmp_path / "rtx3080", records)
    matrix, loaded = read_run(results)
    markdown = render_markdown(matrix, latest_by_cell(loaded.records), ENV)
    assert tables(markdown)["2. 600K Identities"][1][-3:] == ["~2023", "~2023", "1.00"]


def test_a_table_holds_each_figure_as_a_number_with_its_marks_apart(tmp_path):
    (tmp_path / "mini.toml").write_text(MINI)
    matrix = load_matrix(tmp_path / "mini.toml")
    ok_8, ok_16, oom_32 = (row.cell for row in matrix.sections[0].rows)
    records = {
        ok_8.cell_id: {
            "status": "ok",
            "samples_per_s": 110.0,
            "config": {"emulated": True},
            "loader_wait_fraction": 0.5,
        },
        ok_16.cell_id: {"status": "ok", "samples_per_s": 120.0, "nonfinite_losses": 2},
        oom_32.cell_id: {"status": "oom"},
    }
    frame = section_frame(matrix.sections[0], records)
    speeds, ratios = list(frame["Samples/sec"]), list(frame["Ratio"])
    assert [(e.value, e.marks) for e in speeds] == [(110.0, (EMULATED, LOADER_BOUND)), (None, (NAN,)), (None, (FAIL,))]
    assert [e.text() for e in speeds] == ["~110 (emulated) (loader-bound)", "NaN", "Fail"]
    assert ratios[0].value == pytest.approx(1.1) and ratios[1] == Entry(format="ratio")
    assert ratios[2].marks == (BOTH_FAIL,) and ratios[2].text() == "both Fail"
    assert frame["Status"][2].value == "oom" and frame["Status"][2].text() == "out of memory"


def test_the_legend_explains_marks_not_texts_that_look_like_one(tmp_path):
    labelled = MINI.replace('labels = { oom = "out of memory" }', 'labels = { error = "Error" }')
    labelled = labelled.replace("batch_size = 32", 'batch_size = 32\nlabels = { "Samples/sec" = "n/a" }')
    (tmp_path / "mini.toml").write_text(labelled)
    section = load_matrix(tmp_path / "mini.toml").sections[0]
    records = {section.rows[0].cell.cell_id: {"status": "error"}}  # the other rows: not run yet
    frame = section_frame(section, records)
    assert [e.text() for e in frame["Samples/sec"]] == ["Error", "—", "n/a"]
    assert frame["Status"][0].text() == "Error" and frame["Samples/sec"][2].marks == (NOT_YET,)
    explained = legend(frame.to_numpy().ravel(), list(records.values()))
    assert explained.startswith("Error: the job failed") and "—: not run yet." in explained
    status_only = frame[["Batch-size", "Status"]].to_numpy().ravel()
    assert legend(status_only, list(records.values())) == ""  # "Error" there is the matrix's label, not a mark


@pytest.mark.parametrize(
    "record",
    [
        None,
        {"status": "ok", "samples_per_s": 90.0, "gpu_mem_used_mib_max": 900.0, "config": {"emulated": True}},
        {"status": "ok", "samples_per_s": 90.0, "loader_wait_fraction": 0.9},
        {"status": "ok", "samples_per_s": 90.0, "nonfinite_losses": 1},
        {"status": "ok"},
        *({"status": status} for status in ("oom", "error", "timeout", "skipped", "not_run", "lost")),
    ],
)
@pytest.mark.parametrize("published", [None, 100.0, "Fail"])
def test_every_metric_carries_only_the_marks_it_declares(record, published):
    row = Row(cell=load_matrix(RTX3080).cells()[0], published=published, published_gpu_mem_gb=1.0)
    shown = None if record is None else dict(record, largest=None, smallest_oom=None, num_probes=2)
    for metric in METRICS.values():
        entry = metric.read(row, shown)
        assert set(entry.marks) <= set(metric.marks), metric.name
        assert entry.value is None or isinstance(entry.value, str) or entry.format == metric.format
