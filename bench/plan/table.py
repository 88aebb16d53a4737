"""What `pfcbench plan` lists about each cell, with the memory model's predictions, and which cells
`pfcbench run --skip-predicted-fail` records as skipped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bench.config import Cell
from bench.report.fields import SAID_BY_RANKS, field_text, varying_fields
from bench.report.marks import emulated_mark
from bench.store.results import is_ok
from bench.verdicts import not_a_speed, training_speed

if TYPE_CHECKING:
    from bench.matrix import Matrix
    from bench.plan.build import Plan
    from bench.report.training import TrainingColumns
    from bench.time_model import StepTime, Target


class NoMemorySize(ValueError):
    """No cell has a memory size per rank to predict a Fail against."""


def plan_entries_plain(the_plan: Plan) -> list[dict]:
    """One dict per cell: id, sections, config, status (its record's, or pending), why an ok record is
    no training speed ("NaN loss") and, where a row of the matrix gives them for the cell, the published
    samples/sec (or Fail) and GPU memory."""
    published = published_figures(the_plan.matrix)
    entries = []
    for cell in the_plan.cells:
        record = the_plan.latest.get(cell.cell_id)
        entries.append({
            "cell_id": cell.cell_id,
            "sections": the_plan.sections_of(cell),
            "config": cell.to_dict(),
            "status": record["status"] if record else "pending",
            **({"not_a_speed": not_a_speed(record)} if is_ok(record) and training_speed(record) is None else {}),
            **published.get(cell.cell_id, {}),
        })  # fmt: skip
    return entries


def published_figures(matrix: Matrix) -> dict[str, dict]:
    """Cell id: the published figures of the first row that runs it and has any."""
    figures: dict[str, dict] = {}
    for section in matrix.sections:
        for row in section.rows:
            found = {"published": row.published, "published_gpu_mem_gb": row.published_gpu_mem_gb}
            found = {key: value for key, value in found.items() if value is not None}
            if row.not_run is None and found:
                figures.setdefault(row.cell.cell_id, found)
    return figures


def plan_entries(the_plan: Plan, memory_gib: float | None, gpu: str | None = None) -> list[dict]:
    """plan_entries_plain with each cell's predicted peak, parts and fit against its memory size;
    gpu names the catalogue GPU memory_gib is the memory of, where one is.

    Raises RuntimeError where the memory model cannot trace a cell.
    """
    from bench.memory import memory_size_gib, predict_cells
    from bench.rank.host import gpu_memory_gib
    from bench.units import GIB

    predictions = predict_cells(the_plan.cells)
    gpu_gib = gpu_memory_gib() if memory_gib is None else None
    entries = plan_entries_plain(the_plan)
    for entry, cell, prediction in zip(entries, the_plan.cells, predictions, strict=True):
        size_gib = memory_size_gib(cell, memory_gib, gpu_gib)
        entry.update(
            memory_gib=size_gib,
            predicted_peak_gib=round(prediction.peak_gib, 3),
            predicted_fits=prediction.fits(size_gib),
            predicted_parts_gib={part: round(n / GIB, 3) for part, n in prediction.parts.items()},
            predicted_largest_part=prediction.largest_part(),
            **({"gpu": gpu} if gpu else {}),
        )
    return entries


def add_training(entries: list[dict], rows: list[dict], the_plan: Plan, training: Sequence[TrainingColumns]) -> None:
    """Beside each cell that has run ok: its samples/sec, and what one training run would take at it
    (hours, and cost with a price); as numbers in the entries, as text in the table's rows."""
    records = [the_plan.latest.get(cell.cell_id) for cell in the_plan.cells]
    for extra in training:
        for entry, row, cell, record in zip(entries, rows, the_plan.cells, records, strict=True):
            figures = extra.figures(cell, record)
            entry.update(figures, samples_per_s=training_speed(record) if figures else None)
            row["samples/s"] = f"{entry['samples_per_s']:,.0f}" if figures else ""
        for header, texts in extra.columns(the_plan.cells, records).items():
            for row, text in zip(rows, texts, strict=True):
                row[header] = text


def predict_speeds(cells: Sequence[Cell], target: Target) -> list[StepTime | None]:
    """Each cell's predicted step on target; None for a cell on the CPU.

    Raises bench.time_model.CannotPredict where every cell is on the CPU or the model has no prediction for one.
    """
    from bench.time_model import CannotPredict

    if not any(cell.on_gpu for cell in cells):
        raise CannotPredict(
            f"--gpu {target.gpu.name}: every cell runs on the CPU (device cpu); the time model predicts cells on GPUs"
        )
    return [target.predict(cell) if cell.on_gpu else None for cell in cells]


def add_speeds(entries: list[dict], cells: Sequence[Cell], steps: Sequence[StepTime | None], target: Target) -> None:
    """Beside each cell's memory prediction: its predicted samples/sec and step parts on target, what software
    they are for, the model's error on the published reports, and what of the cell the fit has not seen."""
    from bench.sureness import sureness
    from bench.time_model import FITTED_SOFTWARE

    sure = sureness(target.gpu)
    for entry, cell, step in zip(entries, cells, steps, strict=True):
        if step is None:
            entry.update(predicted_samples_per_s=None)
            continue
        entry.update(
            target.to_dict(),
            predicted_samples_per_s=round(step.samples_per_s, 1),
            predicted_step_ms={part: round(ms, 3) for part, ms in step.parts_ms().items()},
            predicted_for={"impl": cell.impl, "software": FITTED_SOFTWARE},
            predicted_error_pct=sure.error_pct,
            predicted_error_worst_pct=sure.worst_error_pct,
            predicted_error_of=sure.published_gpu,
            extrapolated=target.extrapolated(cell),
        )


def add_predicted_training(
    entries: list[dict], rows: list[dict], cells: Sequence[Cell], training: Sequence[TrainingColumns]
) -> None:
    """What one training run would take at each cell's predicted samples/sec (hours, and cost with a price)."""
    speeds = [entry.get("predicted_samples_per_s") for entry in entries]
    for extra in training:
        for entry, cell, speed in zip(entries, cells, speeds, strict=True):
            entry.update({f"predicted_{key}": value for key, value in extra.figures_at(cell, speed).items()})
        for header, texts in extra.columns_at(cells, speeds).items():
            for row, text in zip(rows, texts, strict=True):
                row[f"predicted {header}"] = text


PLAN_FIELDS = ("backbone", "classes", "batch_size", "impl", "precision", "sample_rate", "emulated", *SAID_BY_RANKS)
"""Cell fields the plan's fixed columns show (emulated beside the ranks); any other that varies gets a column."""


def plan_rows(the_plan: Plan, entries: list[dict]) -> list[dict]:
    """The table rows of the plan's entries, with a column for each other cell field that varies among
    its cells (tf32, data, a memory cap), so that no two rows read the same."""
    shown = varying_fields(the_plan.cells, besides=PLAN_FIELDS)
    return [plan_row(number, entry, shown) for number, entry in enumerate(entries, start=1)]


def plan_row(number: int, entry: dict, shown: Sequence[str] = ()) -> dict:
    """The table row of one plan entry, with the cell fields in shown as columns before its status."""
    config = entry["config"]
    row = {
        "#": number,
        "cell": entry["cell_id"],
        "section": "; ".join(entry["sections"]),
        "backbone": config["backbone"],
        "classes": config["classes"],
        "batch": config["batch_size"],
        "impl": config["impl"],
        "precision": config["precision"],
        "sample rate": config["sample_rate"],
        "ranks": f"{config['nnodes'] * config['nproc_per_node']}{emulated_mark(entry)}",
        **{name.replace("_", " "): field_text(name, config[name]) for name in shown},
        "status": entry["status"] + (f" ({entry['not_a_speed']})" if "not_a_speed" in entry else ""),
    }
    if "published" in entry:
        row["published"] = entry["published"] if entry["published"] == "Fail" else f"~{entry['published']:g}"
    if entry.get("predicted_samples_per_s") is not None:
        row["predicted samples/s"] = f"{entry['predicted_samples_per_s']:,.0f}"
    if "predicted_peak_gib" in entry:
        fits = entry["predicted_fits"]
        row["predicted GiB/rank"] = f"{entry['predicted_peak_gib']:.2f}"
        if "published_gpu_mem_gb" in entry:
            row["published GPU Mem(GB)"] = f"~{entry['published_gpu_mem_gb']}"
        row["predicted"] = "" if fits is None else ("fits" if fits else "Fail") + f" ({memory_text(entry)})"
        row["largest part"] = entry["predicted_largest_part"]
    return row


def memory_text(entry: dict) -> str:
    """The memory per rank a plan entry was predicted against: "10 GiB", "rtx3080: 9.78 GiB"."""
    size = f"{round(entry['memory_gib'], 2):g} GiB"
    return f"{entry['gpu']}: {size}" if "gpu" in entry else size


def predicted_failures(cells: list[Cell]) -> dict[str, str]:
    """Cell id: the prediction, for the cells predicted not to fit in their memory per rank.

    Raises NoMemorySize where no cell has a memory size, RuntimeError where a cell cannot be traced.
    """
    from bench.memory import memory_size_gib, predict_cells, verdict
    from bench.rank.host import gpu_memory_gib

    gpu_gib = gpu_memory_gib()
    sizes = [memory_size_gib(cell, None, gpu_gib) for cell in cells]
    if all(size is None for size in sizes):
        raise NoMemorySize(
            "--skip-predicted-fail needs a memory size per rank: --max-memory-gib, max_memory_gib in the matrix, or a GPU"
        )
    predictions = predict_cells(cells)
    return {
        cell.cell_id: verdict(prediction, size)
        for cell, prediction, size in zip(cells, predictions, sizes, strict=True)
        if prediction.fits(size) is False
    }


def cpu_sections_hint(matrix: Matrix) -> str:
    """Where a matrix mixes CPU and CUDA sections, which ones run without a GPU."""
    titles = [s.title or "untitled" for s in matrix.sections if all(not row.cell.on_gpu for row in s.rows)]
    if not titles:
        return ""
    return f" (sections that need no GPU: {'; '.join(titles)}; --section N runs section N alone)"
