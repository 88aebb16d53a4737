"""`pfcbench gpus`: the GPU catalogue, each GPU with its figures and their sources."""

from __future__ import annotations

import json

import click

from bench.gpus import CATALOGUE, GpuSpec


def catalogue_row(spec: GpuSpec) -> dict:
    """One GPU as the table shows it; a derived memory size is marked *."""
    peaks = spec.peaks
    return {
        "name": spec.name,
        "model": spec.model,
        "memory GiB": f"{spec.memory_gib:.2f}" + ("*" if spec.memory_derived else ""),
        "FP32": f"{peaks.fp32:g}",
        "TF32": "–" if peaks.tf32 is None else f"{peaks.tf32:g}",
        "FP16/BF16": f"{peaks.fp16:g}" + ("" if peaks.bf16 is not None else " (no BF16)"),
        "memory GB/s": f"{spec.bandwidth_gb_s:g}",
        "link in an 8-GPU server (GB/s, both directions)": spec.link.text(),
        "TDP W": spec.tdp_w,
        "SMs": spec.num_sms,
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the catalogue as a JSON array, one object per GPU.")
def gpus(as_json: bool) -> None:
    """List the GPUs that --gpu NAME takes, with their memory, peaks, bandwidth, link and power.

    Memory is in GiB as the driver reports it (what a job can have, less than the marketing GB);
    * marks a size derived from a like card's. Peaks are dense TFLOP/s (no sparsity); FP16/BF16 is
    the tensor-core rate with FP32 accumulation, which AMP runs. The link is the usual one between
    the GPUs of an 8-GPU server, in GB/s per GPU, both directions.

    \b
    Example:
        pfcbench gpus
        pfcbench gpus --json
        pfcbench plan rtx3080 --gpu rtx3080
    """
    if as_json:
        click.echo(json.dumps([spec.to_dict() for spec in CATALOGUE], indent=2))
        return
    from tabulate import tabulate

    click.echo(tabulate([catalogue_row(spec) for spec in CATALOGUE], headers="keys", tablefmt="github"))
    click.echo(
        "\nFP32, TF32, FP16/BF16: dense peak TFLOP/s (FP16/BF16 on tensor cores, FP32 accumulate).\n"
        "* derived from a like card's memory as its driver reports it (see the sources)\n\nSources:"
    )
    for spec in CATALOGUE:
        click.echo(f"- {spec.name}: {spec.source}")
