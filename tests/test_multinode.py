"""A cell of two nodes: two torchrun agents on 127.0.0.1 joined by a c10d rendezvous."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.launch import free_port

CELL = ["--backbone", "none", "--classes", "1000", "--batch-size", "8", "--device", "cpu", "--seed", "7",
        "--warmup-steps", "0", "--num-windows", "1", "--steps-per-window", "2", "--json"]  # fmt: skip


def pfcbench_cell(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "cell", *CELL, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_agents_make_one_cell_of_two_nodes_with_the_single_node_loss():
    endpoint = f"127.0.0.1:{free_port()}"
    agents = [pfcbench_cell("--nnodes", "2", "--nproc", "1", "--rdzv-endpoint", endpoint) for _ in range(2)]
    outputs = [agent.communicate(timeout=240) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], [err for _, err in outputs]
    records = [json.loads(out) for out, _ in outputs]

    single = subprocess.run(
        [sys.executable, "-m", "bench.cli", "cell", *CELL, "--nnodes", "1", "--nproc", "2"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    reference = json.loads(single.stdout)

    for record in records:
        assert record["status"] == "ok"
        assert record["config"]["nnodes"] == 2 and record["config"]["nproc_per_node"] == 1
        assert record["world_size"] == 2
        assert [r["rank"] for r in record["ranks"]] == [0, 1]
        assert len(record["hosts"]) == 1  # both agents ran on this host
        assert all(r["peak_rss_mib"] > 0 for r in record["ranks"])
        assert record["loss_first"] == reference["loss_first"]
    assert reference["world_size"] == 2 and reference["config"]["nnodes"] == 1
