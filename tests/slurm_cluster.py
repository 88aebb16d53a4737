"""A real single-host Slurm for the tests: munged, slurmctld and slurmd from Debian's packages.

The host is two Slurm nodes, n1 and n2 (a slurmd each, on its own port), so that a cell of two
nodes runs as it would on a cluster: srun on both, c10d rendezvous on the first, shared workdir.

Everything lives in one temporary folder: a munge key and socket of its own, a slurm.conf that
SLURM_CONF points the daemons and the client commands at, state, spool, logs, and free ports. So
nothing under /etc is touched and a Slurm already installed on the machine is left alone. Missing
binaries fail the tests that need the cluster; they never skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "scancel", "squeue", "sinfo")
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
START_TIMEOUT_S = 60.0

SLURM_CONF = """\
ClusterName=pfcbench-test
# A job's c10d rendezvous listens on port 20000 + job id % 20000 of its first node (bench/slurm.py);
# each pytest worker's cluster numbers its jobs from its own range, so that two clusters on this one
# host never give two running jobs the same port.
FirstJobId={first_job_id}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
AuthType=auth/munge
CredType=cred/munge
# A requeued job waits cred_expire seconds before it may start again (120 by default).
AuthInfo=socket={munge_socket},cred_expire=30
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool-%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd-%n.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
# Look at the pending jobs every 5 s, not every minute, so that a job whose wait ended starts soon.
SchedulerParameters=sched_interval=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
# A finished job stays visible to scontrol for a minute, so that its final state can be read.
MinJobAge=60
# Stop a job at its time limit at once, and SIGKILL 2 s after SIGTERM.
OverTimeLimit=0
KillWait=2
InactiveLimit=0
# Two nodes on this one host, one slurmd each, so that cells of two nodes run too.
NodeName=n1 NodeHostname={host} NodeAddr=127.0.0.1 Port={slurmd_ports[0]} CPUs={cpus} RealMemory={memory_mib}
NodeName=n2 NodeHostname={host} NodeAddr=127.0.0.1 Port={slurmd_ports[1]} CPUs={cpus} RealMemory={memory_mib}
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
"""


@dataclass(frozen=True)
class SlurmCluster:
    """The running test cluster: its config file and the folder holding its logs."""

    conf: Path
    root: Path

    def queue(self) -> list[str]:
        """`squeue -h`: one line per job still pending, running or completing."""
        done = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True, check=True)
        return done.stdout.splitlines()

    def logs(self) -> str:
        tails = []
        for path in sorted(self.root.glob("*.log")):
            tails.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-1500:])
        return "\n".join(tails)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


JOB_IDS_PER_WORKER = 2000
"""Job ids each pytest worker's cluster has to itself: far more than the suite submits."""


def first_job_id() -> int:
    """1 for a run without workers; 1 + 2000 x N for pytest-xdist's worker gwN."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 1 + JOB_IDS_PER_WORKER * int(worker.removeprefix("gw"))


def memory_mib() -> int:
    """What slurmd may offer: the machine's memory less a tenth, so that slurmd never finds less."""
    with open("/proc/meminfo") as meminfo:
        total_kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    return max(1, int(total_kib / 1024 * 0.9))


def require_binaries() -> dict[str, str]:
    """The paths of the daemons and client commands; fail with what to install when one is missing."""
    found = {name: shutil.which(name, path=SEARCH_PATH) for name in DAEMONS + CLIENTS}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.fail(
            f"the Slurm tests need {', '.join(missing)}: install Debian's slurm-wlm and munge "
            "(apt-get install slurm-wlm munge; .ci/run does it)",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail("the Slurm tests start slurmd, which must run as root: run them as root", pytrace=False)
    return found


def wait_for(condition, what: str, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"the test Slurm did not start: {what} after {START_TIMEOUT_S:g} s\n{cluster.logs()}", pytrace=False)


def nodes_idle() -> bool:
    done = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, check=False)
    return done.stdout.split() == ["idle", "idle"]


def daemon(procs: list[subprocess.Popen], root: Path, argv: list[str], name: str | None = None) -> None:
    """Start a daemon in the foreground, its output in ROOT/NAME.out.log."""
    with open(root / f"{name or Path(argv[0]).name}.out.log", "wb") as out:
        procs.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))


def controller_up() -> bool:
    return "UP" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True, check=False).stdout


def start(binaries: dict[str, str], root: Path, procs: list[subprocess.Popen]) -> SlurmCluster:
    """Write the munge key and slurm.conf, start munged, slurmctld and slurmd (into procs), wait for an idle node."""
    for folder in ("state", "spool-n1", "spool-n2", "munge"):
        (root / folder).mkdir()
    (root / "munge").chmod(0o755)  # munged wants its socket's folder open to all
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    munge_socket = root / "munge" / "munge.socket"
    conf = root / "slurm.conf"
    conf.write_text(
        SLURM_CONF.format(
            host=socket.gethostname().split(".")[0], root=root, munge_socket=munge_socket, cpus=os.cpu_count() or 1,
            memory_mib=memory_mib(), ctld_port=free_port(), slurmd_ports=(free_port(), free_port()),
            first_job_id=first_job_id(),
        )
    )  # fmt: skip
    os.environ["SLURM_CONF"] = str(conf)
    cluster = SlurmCluster(conf=conf, root=root)
    daemon(procs, root, [
        binaries["munged"], "--foreground", "--force", f"--socket={munge_socket}", f"--key-file={key}",
        f"--log-file={root / 'munged.log'}", f"--pid-file={root / 'munged.pid'}", f"--seed-file={root / 'munged.seed'}",
    ])  # fmt: skip
    wait_for(munge_socket.exists, "no munge socket", cluster)
    daemon(procs, root, [binaries["slurmctld"], "-D", "-i"])
    wait_for(controller_up, "slurmctld does not answer scontrol ping", cluster)
    for node in ("n1", "n2"):
        daemon(procs, root, [binaries["slurmd"], "-D", "-N", node], name=f"slurmd-{node}")
    wait_for(nodes_idle, "nodes n1 and n2 not idle in sinfo", cluster)
    return cluster


def stop(procs: list[subprocess.Popen]) -> None:
    """Cancel every job, then stop the daemons, last started first."""
    subprocess.run(["scancel", f"--user={os.getuid()}"], capture_output=True, check=False, timeout=30)
    time.sleep(1)
    for proc in reversed(procs):
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> SlurmCluster:
    """A running single-host Slurm; SLURM_CONF points this process and its children at it."""
    binaries = require_binaries()
    root = tmp_path_factory.mktemp("slurm")
    previous = os.environ.get("SLURM_CONF")
    procs: list[subprocess.Popen] = []
    try:
        yield start(binaries, root, procs)
    finally:
        stop(procs)
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
