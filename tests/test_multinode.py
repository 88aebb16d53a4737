"""A cell of two nodes: two torchrun agents on 127.0.0.1 joined by a c10d rendezvous."""

from __future__ import annotations

import json
import resource
import subprocess
import sys

import pytest

from bench.launch.local import free_port
from tests.cli import pfcbench, start_pfcbench
from tests.procs import pids_with, wait_until

pytestmark = pytest.mark.slow  # real torchrun agents

CELL = ["--backbone", "none", "--classes", "1000", "--batch-size", "8", "--device", "cpu", "--seed", "7",
        "--warmup-steps", "0", "--num-windows", "1", "--steps-per-window", "2", "--json"]  # fmt: skip


def test_two_agents_make_one_cell_of_two_nodes_with_the_single_node_loss():
    endpoint = f"127.0.0.1:{free_port()}"
    agents = [
        start_pfcbench("cell", *CELL, "--nnodes", "2", "--nproc", "1", "--rdzv-endpoint", endpoint) for _ in range(2)
    ]
    outputs = [agent.communicate(timeout=240) for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], [err for _, err in outputs]
    records = [json.loads(out) for out, _ in outputs]

    single = pfcbench("cell", *CELL, "--nnodes", "1", "--nproc", "2", timeout_s=240)
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


def address_space_after_import_bytes() -> int:
    """VmSize of a Python that has imported torch and the worker: about what a rank maps before its step."""
    probe = (
        "import bench.rank.worker\n"
        "print(next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:')))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_an_oom_on_the_node_without_rank_0_is_recorded_oom_by_the_node_with_it():
    """The second node's rank may map 1 GiB more than a fresh process, and its 1M centres need 2 GiB.

    (A later --classes wins over CELL's.)
    """
    endpoint = f"127.0.0.1:{free_port()}"
    limit = address_space_after_import_bytes() + 2**30
    args = ["--classes", "2000000", "--nnodes", "2", "--nproc", "1", "--rdzv-endpoint", endpoint]
    first = start_pfcbench("cell", *CELL, *args)
    # the rendezvous gives rank 0 to the agent with the lower pid: the second starts once the first's is up
    assert wait_until(lambda: pids_with("torch.distributed.run", endpoint), timeout_s=120), "no first agent"
    second = start_pfcbench(
        "cell", *CELL, *args, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    )
    (out, err), (_, second_err) = first.communicate(timeout=240), second.communicate(timeout=240)

    assert second.returncode == 1 and "this node did not hold rank 0" in second_err, second_err
    assert first.returncode == 1, err
    record = json.loads(out)
    assert record["status"] == "oom", record
    assert record["failed_rank"] == 1
    assert "can't allocate memory" in record["error"]
    assert [r["rank"] for r in record["ranks"]] == [0] and record["ranks"][0]["status"] == "error"
