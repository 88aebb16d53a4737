"""Limits and a rendezvous validate themselves, as Cell does: a bad value is a ValueError naming the fix; the ranks
import the bench package their parent imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.config import Cell
from bench.launch.local import PACKAGE_ROOT, Rendezvous, same_bench_path, worker_env
from bench.launch.watchdog import Limits
from tests.cli import start_pfcbench


@pytest.mark.parametrize(
    ("kind", "settings", "message"),
    [
        (Limits, {"timeout_s": 0}, "timeout_s must be a number of seconds above 0"),
        (Limits, {"inactivity_timeout_s": -5.0}, "inactivity_timeout_s must be a number of seconds above 0"),
        (Limits, {"timeout_s": "60"}, "timeout_s must be a number of seconds above 0"),
        (Rendezvous, {"endpoint": "node1"}, "expected HOST:PORT"),
        (Rendezvous, {"endpoint": "node1:99999"}, "expected HOST:PORT"),
        (Rendezvous, {"endpoint": "node1:29400", "id": ""}, "rdzv_id must not be empty"),
    ],
)
def test_bad_launch_settings_are_refused(kind, settings, message):
    with pytest.raises(ValueError, match=message):
        kind(**settings)


def test_good_launch_settings_are_kept():
    limits = Limits(timeout_s=60, inactivity_timeout_s=5.5)
    assert (limits.timeout_s, limits.inactivity_timeout_s) == (60, 5.5)
    assert Rendezvous(endpoint="node1:29400").endpoint == "node1:29400"


def test_a_limit_not_given_is_the_matrixs_else_the_default():
    assert Limits.of(None, None) == Limits()
    assert Limits.of(None, 9.0, {"timeout_s": 60, "inactivity_timeout_s": 30}) == Limits(
        timeout_s=60, inactivity_timeout_s=9.0
    )


def test_the_ranks_import_path_puts_this_bench_first_and_leaves_the_working_directory_out(monkeypatch):
    env = worker_env(Cell(device="cpu", nproc_per_node=2))
    assert env["PYTHONSAFEPATH"] == "1"
    # this checkout is not in site-packages (an editable install, or PYTHONPATH): it goes first, once
    assert same_bench_path(os.pathsep.join(["/elsewhere", str(PACKAGE_ROOT)]))["PYTHONPATH"] == os.pathsep.join(
        [str(PACKAGE_ROOT), "/elsewhere"]
    )
    # a package installed into site-packages is found there: PYTHONPATH is left as it was
    monkeypatch.setattr("site.getsitepackages", lambda: [str(PACKAGE_ROOT)])
    assert same_bench_path("/elsewhere") == {"PYTHONSAFEPATH": "1", "PYTHONPATH": "/elsewhere"}
    assert same_bench_path(None) == {"PYTHONSAFEPATH": "1"}


@pytest.mark.slow
def test_run_from_a_folder_holding_another_bench_the_ranks_import_the_parents(tmp_path):
    decoy = tmp_path / "bench"
    (decoy / "rank").mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the bench of the working directory was imported')\n")
    (decoy / "rank" / "__init__.py").write_text("")
    argv = [sys.executable, "-P", "-m", "bench.cli", "cell", "--backbone", "none", "--classes", "100",
            "--batch-size", "4", "--nproc", "2", "--device", "cpu", "--warmup-steps", "1", "--num-windows", "1",
            "--steps-per-window", "1", "--json", "--timeout", "240"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "ok"


@pytest.mark.slow
def test_a_cpu_rank_runs_as_many_threads_as_the_cpus_its_run_may_use_not_the_machines():
    """A run pinned to one CPU (taskset, a cgroup's cpuset, a Slurm step's binding): its one rank runs one thread."""
    pinned = start_pfcbench(
        "cell", "--backbone", "none", "--classes", "100", "--batch-size", "4", "--nproc", "1", "--device", "cpu",
        "--warmup-steps", "1", "--num-windows", "1", "--steps-per-window", "1", "--json",
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),
    )  # fmt: skip
    out, err = pinned.communicate(timeout=300)
    assert pinned.returncode == 0, err
    [rank] = json.loads(out)["ranks"]
    assert rank["threads"] == 1
