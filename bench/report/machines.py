"""One table across machines: the cells of several results folders side by side, one column per machine.

Each folder is one machine, named from its env (GPU model and count, the CPU model where it has no
GPU). A row is a cell that any folder ran, in the order the folders' matrices list them; a cell a
machine lacks prints "—" in its column. Beside them: the published figure of any packaged report
with the same cell, and samples/sec per watt where a machine measured its power.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.config import Cell
from bench.matrix import PACKAGED, Row, load_matrix
from bench.metrics import EMULATED, METRICS, NO_SPEED, NOT_YET, Entry, Mark, speed_entry
from bench.numbers import is_number
from bench.report.fields import SAID_BY_RANKS, cell_label, field_text, varying_fields
from bench.report.read import read_envs, read_run
from bench.report.server import server_spec
from bench.report.tables import markdown_table
from bench.report.write import prepare_out, write_out
from bench.store.results import Results, latest_by_cell
from bench.verdicts import nonfinite_lines, training_speed

ROW_FIELDS = ("backbone", "classes", "batch_size", "precision", "sample_rate", "impl", "world_size", "device")
"""Cell fields a row names first where they vary among the rows; any other field that varies (tf32,
data, a memory cap) follows, so that no two rows read the same."""


@dataclass(frozen=True)
class Machine:
    """One results folder: the machine that ran it, its cells in matrix order, its latest records."""

    name: str
    folder: Path
    cells: list[Cell]
    latest: dict[str, dict]
    results: Results


def machine_name(env: dict) -> str:
    """ "8 x NVIDIA A100-SXM4-80GB" from an env; the CPU model where there is no GPU."""
    if env.get("gpus"):
        return dict(server_spec(env))["GPU"]
    return str(env.get("cpu_model") or env.get("hostname") or "unknown machine")


def read_machine(folder: Path) -> Machine:
    matrix, results = read_run(folder)
    latest = latest_by_cell(results.records)
    cells = [c for c in matrix.cells() if c.cell_id in latest]
    envs = read_envs(Path(folder), [latest[c.cell_id] for c in cells])
    env = max(envs.values(), key=lambda pair: pair[1])[0]
    return Machine(machine_name(env), Path(folder), cells, latest, results)


def read_machines(folders: list[Path]) -> list[Machine]:
    """The machines of the folders, each name made unique by its folder where two share one."""
    machines = [read_machine(folder) for folder in folders]
    names = [m.name for m in machines]
    return [
        Machine(f"{m.name} ({m.folder})", m.folder, m.cells, m.latest, m.results) if names.count(m.name) > 1 else m
        for m in machines
    ]


def published_rows() -> dict[str, Row]:
    """The first row of the packaged reports that gives a published samples/sec (or Fail) of a cell, by cell id."""
    rows: dict[str, Row] = {}
    for path in sorted(PACKAGED.glob("*.toml")):
        for section in load_matrix(path).sections:
            for row in section.rows:
                if row.published is not None and row.not_run is None:
                    rows.setdefault(row.cell.cell_id, row)
    return rows


def per_watt(record: dict | None) -> float | None:
    speed, power = training_speed(record), (record or {}).get("power_w")
    return speed / power if speed is not None and is_number(power) and power > 0 else None


def row_fields(cells: list[Cell]) -> list[str]:
    """The cell fields that name the rows: those that vary among the cells, ROW_FIELDS first."""
    first = [f for f in ROW_FIELDS if len({getattr(c, f) for c in cells}) > 1]
    return first + varying_fields(cells, besides={*ROW_FIELDS, *SAID_BY_RANKS}) or ["backbone", "classes"]


def machines_frame(machines: list[Machine]) -> pd.DataFrame:
    """One row of entries per cell any machine ran; per machine its samples/sec (or mark, "—" where it lacks
    the cell) and where it measured power its samples/sec per watt; the published figure where one exists."""
    cells = list({c.cell_id: c for m in machines for c in m.cells}.values())
    fields, published = row_fields(cells), published_rows()
    rows = []
    for cell in cells:
        row = {field: Entry(field_text(field, getattr(cell, field))) for field in fields}
        for m in machines:
            row[m.name] = speed_entry(m.latest.get(cell.cell_id), after=(EMULATED,))
            if any(per_watt(r) is not None for r in m.latest.values()):
                row[f"{m.name} samples/s/W"] = Entry(per_watt(m.latest.get(cell.cell_id)), format="float2")
        figure = published.get(cell.cell_id)
        row["Published"] = METRICS["published"].read(figure, None) if figure is not None else Entry()
        rows.append(row)
    frame = pd.DataFrame(rows)
    shown = any(entry.value is not None or entry.marks for entry in frame["Published"])
    return frame if shown else frame.drop(columns="Published")


def has_mark(entries: Iterable[Entry], mark: Mark) -> bool:
    return any(mark in entry.marks for entry in entries)


def plot_machines(machines: list[Machine], frame: pd.DataFrame, path: Path) -> Path | None:
    """Samples/sec of each cell, one bar per machine (its mark where it has none), each row labelled with
    the fields that tell it apart, the legend below the bars; None when nothing finished."""
    from matplotlib.figure import Figure

    cells = list({c.cell_id: c for m in machines for c in m.cells}.values())
    if not any(training_speed(m.latest.get(c.cell_id)) for m in machines for c in cells):
        return None
    fields = row_fields(cells)
    labels = [cell_label(c, fields) for c in cells]
    fig = Figure(figsize=(8, 0.4 * len(cells) * len(machines) + 0.25 * len(machines) + 2), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(machines)
    for i, m in enumerate(machines):
        speeds = [training_speed(m.latest.get(c.cell_id)) for c in cells]
        ax.barh([j + i * height for j in range(len(cells))], [s or 0 for s in speeds], height=height, label=m.name)
        for j, speed in enumerate(speeds):
            if speed is None:
                ax.annotate(frame[m.name][j].text(), (0, j + i * height), fontsize=7, color="tab:red", va="center")
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(cells))], labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(METRICS["samples_per_s"].label)
    fig.legend(loc="outside lower center", fontsize=8)  # below the axes: never over a bar
    ax.grid(axis="x", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_machines_report(folders: list[Path], *, out: Path | None = None) -> tuple[Path, list[Results]]:
    """Render several results folders as one table across machines, with its plot beside it."""
    machines = read_machines(folders)
    out = Path(out or Path("report") / "machines.md")
    prepare_out(out)
    frame = machines_frame(machines)

    def render(staging: Path) -> str:
        plot = plot_machines(machines, frame, staging / f"{out.stem}.png")
        parts = (
            "# Samples/sec across machines",
            markdown_table(machines_listing(machines)),
            markdown_table(frame),
            *machines_notes(machines, frame),
            f"![samples/sec across machines]({plot.name})" if plot else "",
        )
        return "\n\n".join(part for part in parts if part) + "\n"

    write_out(out, render)
    return out, [m.results for m in machines]


def machines_listing(machines: list[Machine]) -> pd.DataFrame:
    """The machines of the table: name, results folder, cells."""
    return pd.DataFrame([{"Machine": m.name, "Results": str(m.folder), "Cells": len(m.cells)} for m in machines])


def machines_notes(machines: list[Machine], frame: pd.DataFrame) -> list[str]:
    """The lines under the table across machines: what "—", Published, no speed and NaN mean there."""
    only = sum(1 for _, row in frame.iterrows() if has_mark((row[m.name] for m in machines), NOT_YET))
    notes = [
        f"—: the machine has no record of the cell ({only} of {len(frame)} cells not on every machine)."
        + (" Published: the figure of the packaged report with the same cell." if "Published" in frame else ""),
        f"{NO_SPEED.text}: {NO_SPEED.meaning}." if has_mark(frame.to_numpy().ravel(), NO_SPEED) else "",
        " ".join(nonfinite_lines([r for m in machines for r in m.latest.values()])),
    ]
    return [note for note in notes if note]
