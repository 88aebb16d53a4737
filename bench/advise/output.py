"""What `pfcbench advise` prints: per GPU the fastest configuration that fits at each count, what would fit
where nothing does, the memory a GPU as the count grows, and how sure the speeds are; as text, markdown
or one JSON document listing every configuration searched."""

from __future__ import annotations

from tabulate import tabulate

from bench.advise.search import Advice, Config, least_memory
from bench.gpus import GpuSpec
from bench.sureness import sureness
from bench.time_model import FITTED_SOFTWARE
from bench.units import GIB


def precision_text(config: Config) -> str:
    """fp16, bf16, or fp32 with (TF32) where it is allowed."""
    cell = config.cell
    return cell.precision + (" (TF32)" if cell.tf32 and cell.precision == "fp32" else "")


def knobs_text(config: Config) -> str:
    cell = config.cell
    return f"batch {cell.per_gpu_batch} a GPU, sample rate {cell.sample_rate:g}, {precision_text(config)}"


def config_json(config: Config, price: float | None) -> dict:
    """One configuration as --json lists it."""
    cell, memory, run = config.cell, config.memory, config.run
    hours = run.hours(config.samples_per_s)
    return {
        "gpu": config.gpu.name,
        "gpus": config.gpus,
        "nnodes": cell.nnodes,
        "batch_size": cell.batch_size,
        "batch_per_gpu": cell.per_gpu_batch,
        "sample_rate": cell.sample_rate,
        "precision": cell.precision,
        "tf32": cell.tf32,
        "impl": cell.impl,
        "fits": config.fits,
        "memory_basis": config.basis,
        "memory_gib": round(config.card_gib, 3),
        "predicted_peak_gib": round(memory.peak_gib, 3),
        "headroom_gib": round(config.card_gib - memory.peak_gib, 3),
        "predicted_parts_gib": {part: round(n / GIB, 3) for part, n in memory.parts.items()},
        "predicted_samples_per_s": round(config.samples_per_s, 1),
        "predicted_step_ms": {part: round(ms, 3) for part, ms in config.step.parts_ms().items()},
        "hours": round(hours, 2),
        **({"cost": round(run.cost(config.samples_per_s, config.gpus, price), 2)} if price is not None else {}),
    }


def nothing_fits(advice: Advice, gpu: GpuSpec, count: int) -> str:
    """What would fit where nothing does at count, and which part of memory rules it out."""
    least = least_memory(advice, gpu, count)
    part = least.memory.largest_part()
    ruled_out = (
        f"every configuration needs more than the card: the least ({knobs_text(least)}) at least "
        f"{least.memory.peak_gib:.1f} GiB of {least.card_gib:.1f}, its largest part {part} at "
        f"{least.memory.parts[part] / GIB:.1f} GiB"
    )
    larger = advice.instead.get((gpu.name, count))
    if larger is None:
        return f"nothing fits {count} x {gpu.name}, nor any larger count searched: {ruled_out}"
    return (
        f"nothing fits {count} x {gpu.name}: the smallest count that fits is {larger.gpus}, at sample rates up to "
        f"{larger.cell.sample_rate:g} (batch {larger.cell.per_gpu_batch} a GPU, {larger.cell.precision}); at "
        f"{count}, {ruled_out}"
    )


def chosen_row(config: Config, price: float | None) -> dict:
    row = {
        "GPUs": config.gpus,
        "batch": config.cell.batch_size,
        "batch/GPU": config.cell.per_gpu_batch,
        "sample rate": f"{config.cell.sample_rate:g}",
        "precision": precision_text(config),
        "samples/s": f"{config.samples_per_s:,.0f}",
        "GiB/GPU (card)": f"{config.memory.peak_gib:.1f} ({config.card_gib:.1f})",
        "headroom GiB": f"{config.card_gib - config.memory.peak_gib:.1f}",
        "hours": f"{config.run.hours(config.samples_per_s):,.1f}",
    }
    if price is not None:
        row["cost"] = f"{config.run.cost(config.samples_per_s, config.gpus, price):,.0f}"
    return row


def split_rows(configs: list[Config]) -> list[dict]:
    """The memory a GPU of one configuration at each count, by part."""
    rows = []
    for config in configs:
        memory = config.memory
        rows.append({
            "GPUs": config.gpus,
            **{part: f"{n / GIB:.2f}" for part, n in memory.parts.items() if any(c.memory.parts[part] for c in configs)},
            "peak GiB": f"{memory.peak_gib:.2f}",
            "fits": "fits" if config.fits else "Fail",
        })  # fmt: skip
    return rows


def gpu_lines(advice: Advice, gpu: GpuSpec, price: float | None, table_format: str) -> list[str]:
    """The advice for one GPU: the chosen configuration per count, what would fit, the memory split, sureness."""
    chosen = [(count, advice.chosen[(gpu.name, count)]) for count in advice.counts]
    rows = [chosen_row(config, price) for _, config in chosen if config is not None]
    lines = [f"{gpu.name} ({gpu.model}, {gpu.memory_gib:.1f} GiB as its driver reports it):", ""]
    if rows:
        lines += [tabulate(rows, headers="keys", tablefmt=table_format), ""]
    lines += [nothing_fits(advice, gpu, count) for count, config in chosen if config is None]
    split = advice.splits.get(gpu.name)
    if split is not None:
        reference, configs = split
        lines += [
            "",
            f"Memory a GPU as the count grows, by part (GiB), at {knobs_text(reference)}: the classifier's shard "
            "falls with the count, the backbone's state and activations do not:",
            "",
            tabulate(split_rows(configs), headers="keys", tablefmt=table_format),
        ]
    target = advice.targets[gpu.name]
    lines += [
        "",
        f"Speeds predicted in {target.server.name} ({target.server.text}; link {target.link}: {target.link_text}); "
        f"{sureness(gpu).text(gpu.name)}.",
        "",
    ]
    return lines


def header(advice: Advice) -> str:
    job = advice.job
    what = job.dataset or f"{job.classes:,} classes"
    return (
        f"{what} ({job.classes:,} classes, {job.run.images:,} images x {job.run.epochs} epochs) on {job.backbone}, "
        f"{job.impl}; samples/sec predicted for {FITTED_SOFTWARE}"
    )


def advice_lines(advice: Advice, price: float | None) -> list[str]:
    lines = [header(advice), ""]
    for gpu in advice.gpus:
        lines += gpu_lines(advice, gpu, price, "github")
    return lines


def markdown_lines(advice: Advice, price: float | None) -> list[str]:
    """The advice as a markdown document, with every configuration searched."""
    lines = ["# Advice", "", header(advice), ""]
    for gpu in advice.gpus:
        lines += [f"## {gpu.name}", "", *gpu_lines(advice, gpu, price, "github")[2:]]
    every = [config_json(config, price) for config in advice.configs]
    shown = [{key: value for key, value in row.items() if not isinstance(value, dict)} for row in every]
    lines += ["## Every configuration searched", "", tabulate(shown, headers="keys", tablefmt="github")]
    return lines


def advice_json(advice: Advice, price: float | None) -> dict:
    job = advice.job
    return {
        "job": {
            "dataset": job.dataset,
            "classes": job.classes,
            "images": job.run.images,
            "epochs": job.run.epochs,
            "backbone": job.backbone,
            "impl": job.impl,
            "software": FITTED_SOFTWARE,
        },
        "configurations": [config_json(config, price) for config in advice.configs],
        "chosen": [
            {"gpu": gpu.name, "gpus": count, "configuration": None if c is None else config_json(c, price)}
            | ({"nothing_fits": nothing_fits(advice, gpu, count)} if c is None else {})
            for gpu in advice.gpus
            for count in advice.counts
            for c in [advice.chosen[(gpu.name, count)]]
        ],
        "memory_split": {
            name: None if split is None else [config_json(c, price) for c in split[1]]
            for name, split in advice.splits.items()
        },
        "sureness": {gpu.name: sureness(gpu).__dict__ for gpu in advice.gpus},
        "servers": {name: target.to_dict() for name, target in advice.targets.items()},
    }
