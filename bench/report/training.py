"""The optional columns of what one training run would take at each row's samples/sec: hours, and cost.

hours = images x epochs / samples per second / 3600 (bench.report.training_runs.TrainingRun); the cost is
hours x the cell's GPUs x the price of one GPU-hour (a cell on the CPU has none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.config import Cell, check_number
from bench.metrics import NO_GPU, Entry
from bench.report.training_runs import TrainingRun, find_dataset
from bench.verdicts import training_speed

MAX_GPU_HOUR_PRICE = 1e6
"""The highest price of one GPU-hour taken, in any currency: beyond it hours x GPUs x price stops being a cost."""
MAX_IMAGES = 10**12
MAX_EPOCHS = 10**6
"""Bounds of --images and --epochs: far beyond any training run, and their product stays a finite number of hours."""


@dataclass(frozen=True, kw_only=True)
class TrainingColumns:
    """Hours per training run beside samples/sec, and with a price per GPU-hour its cost."""

    run: TrainingRun
    name: str
    """What the run trains on, as the header says it: "WebFace42M x 20 epochs"."""
    gpu_hour_price: float | None = None

    @property
    def note(self) -> str:
        cost = (
            f"; Cost/run = hours x GPUs x {self.gpu_hour_price:g} per GPU-hour ({NO_GPU.text}: a CPU cell uses no GPU-hours)"
            if self.gpu_hour_price is not None
            else ""
        )
        return (
            f"Hours/run is one training run of {self.name} ({self.run.images:,} images x {self.run.epochs} epochs) "
            f"at the row's samples/sec: images x epochs / samples per second{cost}."
        )

    def figures(self, cell: Cell, record: dict | None) -> dict[str, float]:
        """hours_per_run, and cost_per_run with a price (a cell on GPUs), at the record's samples/sec; none
        unless it is a training speed. A CPU cell's ranks are not GPUs: it has no GPU-hours to price."""
        return self.figures_at(cell, training_speed(record))

    def figures_at(self, cell: Cell, speed: float | None) -> dict[str, float]:
        """hours_per_run, and cost_per_run with a price (a cell on GPUs), at speed samples/sec; none without one."""
        if speed is None:
            return {}
        figures = {"hours_per_run": self.run.hours(speed)}
        if self.gpu_hour_price is not None and cell.on_gpu:
            figures["cost_per_run"] = self.run.cost(speed, cell.world_size, self.gpu_hour_price)
        return {key: value for key, value in figures.items() if math.isfinite(value)}

    def entries(self, cells: Sequence[Cell], records: Sequence[dict | None]) -> dict[str, list[Entry]]:
        """Hours per run of each cell, and with a price its cost ("no GPU" for a CPU cell); blank where the
        record is no training speed."""
        return self.entries_at(cells, [training_speed(record) for record in records])

    def entries_at(self, cells: Sequence[Cell], speeds: Sequence[float | None]) -> dict[str, list[Entry]]:
        """entries at the samples/sec of each cell given (a predicted one); blank where there is none."""
        figures = [self.figures_at(cell, speed) for cell, speed in zip(cells, speeds)]
        columns = {f"Hours/run ({self.name})": [Entry(f.get("hours_per_run"), format="thousands1") for f in figures]}
        if self.gpu_hour_price is not None:
            columns[f"Cost/run (at {self.gpu_hour_price:g}/GPU-h)"] = [
                Entry(f.get("cost_per_run"), (NO_GPU,) if f and "cost_per_run" not in f else (), "thousands0")
                for f in figures
            ]
        return columns

    def columns(self, cells: Sequence[Cell], records: Sequence[dict | None]) -> dict[str, list[str]]:
        """The entries as text, for the plan's table."""
        return self.columns_at(cells, [training_speed(record) for record in records])

    def columns_at(self, cells: Sequence[Cell], speeds: Sequence[float | None]) -> dict[str, list[str]]:
        """The entries at the samples/sec given, as text, for the plan's table."""
        columns = self.entries_at(cells, speeds)
        return {header: [entry.text() for entry in entries] for header, entries in columns.items()}


def training_columns(
    train_on: str | None, images: int | None, epochs: int | None, gpu_hour_price: float | None
) -> tuple[TrainingColumns, ...]:
    """The columns `report --train-on / --images --epochs / --gpu-hour-price` asks for; none without them.

    ValueError, one line, for a combination or a value that cannot be meant.
    """
    if train_on is not None and images is not None:
        raise ValueError("give --train-on DATASET or --images N --epochs E, not both")
    if images is not None and epochs is None:
        raise ValueError("--images needs --epochs: how many times over the images one run goes")
    if train_on is None and images is None:
        if epochs is not None or gpu_hour_price is not None:
            given = "--epochs" if epochs is not None else "--gpu-hour-price"
            raise ValueError(f"{given} needs --train-on DATASET or --images N: what one run trains on")
        return ()
    if gpu_hour_price is not None:
        check_number(
            "--gpu-hour-price", gpu_hour_price, 0, MAX_GPU_HOUR_PRICE,
            text=f"a price of at least 0 and at most {MAX_GPU_HOUR_PRICE:,.0f} per GPU-hour",
        )  # fmt: skip
    for option, value, most in (("--images", images, MAX_IMAGES), ("--epochs", epochs, MAX_EPOCHS)):
        if value is not None:
            check_number(option, value, 1, most, text=f"a whole number of at least 1 and at most {most:,}")
    if train_on is not None:
        dataset = find_dataset(train_on)
        run = TrainingRun.of(dataset, epochs)
        name = f"{dataset.name} x {run.epochs} epochs"
    else:
        run = TrainingRun(images=images, epochs=epochs)
        name = f"{images:,} images x {epochs} epochs"
    return (TrainingColumns(run=run, name=name, gpu_hour_price=gpu_hour_price),)
