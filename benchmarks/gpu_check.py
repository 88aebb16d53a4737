"""The GPU check's matrix and verdict: `python benchmarks/gpu_check.py OUT_DIR --num-gpus N`.

benchmarks/gpu_check.sh runs this after its set-up. It writes a matrix sized to N GPUs (every
global batch is a per-GPU batch times N, so it splits over 3, 5 or 7 GPUs too), runs it with
`pfcbench run --rerun all`, renders the report, and judges the records of THIS run, picked by
cell id and start time: a rerun into the same folder judges the new run. OUT_DIR/summary.txt gets
the verdict, one line per cell (status, samples/sec, CUDA overhead, memory, power) and the report.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench.config import IMPLS
from bench.matrix import load_matrix
from bench.store.results import latest_by_cell, read_records

PER_GPU_BATCH = 128
RUN = {"timeout_s": 240, "inactivity_timeout_s": 120}
DEFAULTS = {"device": "cuda", "backbone": "r18", "precision": "fp16", "classes": 1_000_000, "sample_rate": 0.1,
            "warmup_steps": 5, "num_windows": 3, "steps_per_window": 10}  # fmt: skip
COLUMNS = [
    ("Impl", "impl"), ("Backbone", "backbone"), ("Classes", "classes"), ("Batch-size", "batch_size"),
    ("Precision", "precision"), ("Partial FC", "sample_rate"), ("Cap (GiB)", "max_memory_gib"),
    ("Samples/sec", "samples_per_s"), ("Spread", "spread"), ("GPU Mem(GB)", "gpu_mem_gb"),
    ("Power (W)", "power_w"), ("J/1k samples", "energy_per_1k_j"),
]  # fmt: skip


def sections(num_gpus: int) -> list[tuple[str, list[tuple[dict, str]]]]:
    """The check's sections: (title, [(row fields, expected status)]), batches scaled to num_gpus.

    Every implementation in bench.config.IMPLS gets an fp16 and a bf16 cell, so an
    implementation added there is checked with no change here.
    """
    batch = PER_GPU_BATCH * num_gpus
    return [
        ("1. Precision and implementation (NCCL)", [
            ({"impl": impl, "precision": precision, "batch_size": batch}, "ok")
            for impl in IMPLS for precision in ("fp16", "bf16")
        ]),
        ("2. IResNet-50", [({"backbone": "r50", "batch_size": batch}, "ok")]),
        ("3. Memory cap (the device's whole memory)", [
            ({"classes": 100_000, "batch_size": 64 * num_gpus, "max_memory_gib": 8.0}, "ok"),
            ({"backbone": "r50", "precision": "fp32", "classes": 2_000_000, "sample_rate": 1.0,
              "batch_size": 512 * num_gpus, "max_memory_gib": 4.0}, "oom"),
        ]),
        ("4. Short matrix", [
            ({"classes": classes, "sample_rate": rate, "batch_size": batch}, "ok")
            for classes in (1_000_000, 2_000_000) for rate in (1.0, 0.1)
        ]),
        ("5. The classifier alone at 2M classes, fused beside arcface_torch", [
            ({"impl": impl, "backbone": "none", "precision": "fp32", "classes": 2_000_000, "sample_rate": rate,
              "batch_size": 512 * num_gpus}, "ok")
            for rate in (1.0, 0.1) for impl in ("arcface_torch", "fused")
        ]),
        # the RTX 3080 report's fp16 Fail at 2M classes, batch 512; the memory model's verdicts at 10 GiB:
        # 11.3 GiB for the 2021 code, 7.8 for arcface_torch and the 2022 code, 5.9 for fused
        ("6. One RTX 3080 of eight: rank 0 emulated on one GPU capped at 10 GiB", [
            ({"impl": impl, "backbone": "r50", "classes": 2_059_906, "sample_rate": 1.0, "batch_size": 512,
              "nproc_per_node": 8, "emulated": True, "max_memory_gib": 10.0, "label_mode": "constant", "tf32": True},
             "oom" if impl == "arcface_torch_2021" else "ok")
            for impl in IMPLS
        ]),
    ]  # fmt: skip


def toml_value(value) -> str:
    return str(value).lower() if isinstance(value, bool) else json.dumps(value)


def matrix_text(num_gpus: int) -> str:
    """The matrix file of the check for num_gpus GPUs."""
    lines = [
        'name = "gpu-check"',
        "[report]",
        'title = "pfcbench GPU check"',
        f'blurb = "Partial FC training on {num_gpus} GPU(s) of this machine (NCCL): each implementation in fp16 and '
        "bf16, IResNet-50, the memory cap (one cell must run out of memory), a short matrix and one RTX 3080 of eight, "
        'emulated."',
        "[run]",
        *(f"{key} = {value}" for key, value in RUN.items()),
        "[defaults]",
        f"nproc_per_node = {num_gpus}",
        *(f"{key} = {toml_value(value)}" for key, value in DEFAULTS.items()),
    ]
    columns = ", ".join(f'{{ header = "{header}", field = "{field}" }}' for header, field in COLUMNS)
    for title, rows in sections(num_gpus):
        lines += ["[[sections]]", f'title = "{title}"', f"columns = [{columns}]"]
        for fields, _ in rows:
            lines += ["[[sections.rows]]", *(f"{key} = {toml_value(value)}" for key, value in fields.items())]
    return "\n".join(lines) + "\n"


def expectations(matrix_path: Path, num_gpus: int) -> dict[str, str]:
    """The expected status of each cell id of the check, in the matrix's order."""
    matrix = load_matrix(matrix_path)
    expected = {}
    for section, (_, rows) in zip(matrix.sections, sections(num_gpus)):
        for row, (_, status) in zip(section.rows, rows):
            expected[row.cell.cell_id] = status
    return expected


def this_run(results_file: Path, cell_ids: set[str], since: float) -> dict[str, dict]:
    """The newest record of each of the check's cells that this run wrote (started at or after since)."""
    records = [r for r in read_records(results_file) if r["cell_id"] in cell_ids and r.get("started_at", 0) >= since]
    return latest_by_cell(records)


def number(value, fmt: str = ".0f") -> str:
    return "-" if value is None else format(value, fmt)


def figures(record: dict) -> str:
    """Speed, memory, power and GradScaler figures of an ok record."""
    sources = sorted({str(g.get("power_source")) for g in record.get("gpus", [])})
    text = (
        f"{record['samples_per_s']:.0f} samples/s ({record['samples_per_s_min']:.0f}-{record['samples_per_s_max']:.0f})"
        f"  warm-up peak reserved {number(record.get('warmup_peak_reserved_mib_max'))} MiB"
        f"  peak allocated {number(record.get('peak_allocated_mib_max'))} reserved {number(record.get('peak_reserved_mib_max'))}"
        f"  NVML used {number(record.get('gpu_mem_used_mib_max'))} MiB"
        f"  power {number(record.get('power_w'))} W ({', '.join(sources)})"
        f"  {number(record.get('energy_j_per_1k_samples'), '.1f')} J/1k"
    )  # fmt: skip
    if record["config"]["precision"] == "fp16":
        text += f"  grad scale {number(record.get('grad_scale'), 'g')} skipped {record.get('skipped_steps_max')}"
    return text


def cell_line(cell_id: str, expected: str, record: dict | None) -> str:
    """One line of the summary: PASS or FAIL, what the cell was, what it did and its figures."""
    if record is None:
        return f"{cell_id}  FAIL  expected {expected:3}  got no record from this run"
    c = record["config"]
    cap = f" cap {c['max_memory_gib']:g} GiB" if c["max_memory_gib"] else ""
    what = f"{c['impl']} {c['backbone']} {c['precision']} {c['classes']} classes batch {c['batch_size']} rate {c['sample_rate']:g}{cap}"
    verdict = "PASS" if record["status"] == expected else "FAIL"
    line = f"{cell_id}  {verdict}  expected {expected:3}  got {record['status']:7}  {what}"
    line += f"  | CUDA overhead {number(record.get('cuda_overhead_mib_max'))} MiB  | "
    if record["status"] == "ok":
        return line + figures(record)
    error = (record.get("error") or "").strip().splitlines()
    return line + f"{record.get('phase')}: {error[-1][-300:] if error else ''}"


def pfcbench(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], check=False).returncode


def judge(out: Path, expected: dict[str, str], since: float) -> tuple[bool, list[str]]:
    """Whether every cell of this run did what it should; the verdict and one line per cell."""
    records = this_run(out / "results" / "gpu-check" / "results.jsonl", set(expected), since)
    lines = [cell_line(cell_id, status, records.get(cell_id)) for cell_id, status in expected.items()]
    passed = sum(line.split()[1] == "PASS" for line in lines)
    verdict = (
        f"GPU check {'passed' if passed == len(expected) else 'FAILED'}: {passed} of {len(expected)} cells as expected"
    )
    if len(records) < len(expected):
        verdict += f"; {len(expected) - len(records)} cell(s) have no record from this run (see check.log)"
    return passed == len(expected), [verdict, *lines]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--num-gpus", type=int, required=True)
    args = parser.parse_args()
    out = args.out.resolve()
    matrix_path = out / "gpu-check.toml"
    matrix_path.write_text(matrix_text(args.num_gpus))
    expected = expectations(matrix_path, args.num_gpus)
    started = time.time()
    pfcbench("run", str(matrix_path), "--results", str(out / "results"), "--rerun", "all")
    pfcbench("report", str(out / "results" / "gpu-check"), "-o", str(out / "gpu-check.md"))
    passed, lines = judge(out, expected, started)
    report = (out / "gpu-check.md").read_text() if (out / "gpu-check.md").exists() else "(no report)\n"
    took = f"{args.num_gpus} GPU(s), {time.time() - started:.0f} s"
    (out / "summary.txt").write_text("\n".join([lines[0], took, *lines[1:], "", report]))
    print("\n".join([*lines[1:], lines[0]]))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
