"""Results folders of the smoke matrix in a blink, for the publish tests: records made by the real record
builder from ranks' figures, one cell that trained NaN, one with a rank far from the other, the
memory-capped cell out of memory; and what a page must show for each row."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

from bench.config import Cell
from bench.matrix import PACKAGED, load_matrix
from bench.records import build_record
from bench.store.results import append_record, latest_by_cell, read_results
from bench.verdicts import nonfinite, outlier_ranks

SMOKE = PACKAGED / "smoke.toml"
T0 = 1_767_000_000.0
"""When the first synthetic run started (seconds since the epoch)."""
NAN_CELL, FAR_RANK_CELL = 1, 4
"""Which of the smoke matrix's cells (numbered from 0) trained NaN, and which had a rank far from the other."""


def machine(host: str, cpu: str) -> dict:
    """A CPU machine's description, as describe_machine writes one."""
    return {
        "hostname": host,
        "cpu_model": cpu,
        "cpu_sockets": 1,
        "cpu_cores": 2,
        "cpu_threads": 4,
        "memory_gib": 16.0,
        "gpus": [],
        "os": "Debian GNU/Linux 12 (bookworm)",
        "python": "3.11.7",
        "torch": "2.14.1",
    }


ALPHA, BETA = machine("alpha", "AMD EPYC 7B13"), machine("beta", "Intel Xeon Gold 6338")


def ranks(cell: Cell, step_s: float, *, status: str = "ok", nonfinite_losses: int = 0, far: bool = False) -> list[dict]:
    """What the cell's ranks write: window and step times, losses, peak RSS (rank 1's three times rank 0's if far)."""
    steps = cell.num_windows * cell.steps_per_window
    windows = [step_s * cell.steps_per_window * f for f in (1.0, 1.03, 0.97, 1.01)[: cell.num_windows]]
    figures = {"window_times_s": windows, "step_times_s": [step_s * (1 + 0.01 * (i % 3)) for i in range(steps)]}
    if status != "ok":
        figures = {
            "phase": "forward",
            "exception": "RuntimeError",
            "error": "DefaultCPUAllocator: can't allocate memory",
        }
    return [
        {
            "rank": rank,
            "host": "node",
            "status": status,
            "losses": [11.0, 10.8],
            "nonfinite_losses": nonfinite_losses,
            "peak_rss_mib": 1000.0 * (3 if far and rank == 1 else 1),
            **figures,
        }
        for rank in range(cell.world_size)
    ]


def cell_record(number: int, cell: Cell, started: float, speedup: float) -> dict:
    if cell.max_memory_gib is not None:
        return build_record(cell, ranks(cell, 0, status="oom"), "oom", error=None, started=started, duration_s=3.0)
    step_s = (0.5 + 0.15 * number) / speedup
    made = ranks(cell, step_s, nonfinite_losses=2 if number == NAN_CELL else 0, far=number == FAR_RANK_CELL)
    return build_record(cell, made, "ok", error=None, started=started, duration_s=10.0)


def smoke_folder(path: Path, env: dict, *, speedup: float = 1.0, started: float = T0, runs: int = 1) -> Path:
    """A results folder of the smoke matrix on env; runs > 1 runs it again a day later, each time faster."""
    path.mkdir(parents=True)
    shutil.copyfile(SMOKE, path / "matrix.toml")
    (path / "env.json").write_text(json.dumps(env))
    for run in range(runs):
        for number, cell in enumerate(load_matrix(SMOKE).cells()):
            record = cell_record(number, cell, started + run * 86400 + number, speedup * (1 + 0.2 * run))
            append_record(path / "results.jsonl", record)
    return path


def expected_speeds(folder: Path) -> list[list[str]]:
    """Per section of the folder's matrix, what each row's samples/sec must read: ~N, NaN or Fail."""
    matrix = load_matrix(folder / "matrix.toml")
    latest = latest_by_cell(read_results(folder / "results.jsonl").records)
    return [[speed_text(latest.get(row.cell.cell_id)) for row in section.rows] for section in matrix.sections]


def cell_speeds(folder: Path) -> list[str]:
    """What each cell of the folder's matrix must read in the table across machines (no far-off rank label there)."""
    latest = latest_by_cell(read_results(folder / "results.jsonl").records)
    return [speed_text(latest.get(cell.cell_id), far=False) for cell in load_matrix(folder / "matrix.toml").cells()]


def speed_text(record: dict | None, *, far: bool = True) -> str:
    if record is None:
        return "—"
    if record["status"] == "oom":
        return "Fail"
    if nonfinite(record):
        return "NaN"
    return f"~{round(record['samples_per_s'])}" + (" far-off rank" if far and outlier_ranks(record) else "")


class Tables(HTMLParser):
    """The tables of a page as rows of cell texts (header row first), in the page's order."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def html_tables(path: Path) -> list[list[list[str]]]:
    parser = Tables()
    parser.feed(path.read_text())
    return parser.tables
