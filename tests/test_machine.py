"""Tests for bench.rank.host and bench.rank.telemetry: host description, spec rows, GPU sampling, peak RSS."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from types import SimpleNamespace

import pynvml
import pytest

from bench.rank import host, nvml, telemetry
from bench.report import server

MACHINE_KEYS = {
    "hostname",
    "cpu_model",
    "cpu_sockets",
    "cpu_cores",
    "cpu_threads",
    "memory_gib",
    "gpus",
    "gpu_driver",
    "cuda_driver",
    "torch",
    "torch_cuda",
    "cudnn",
    "torch_installer",
    "python",
    "os",
    "kernel",
}


def _nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


HAS_NVML = _nvml_works()


UUIDS = {
    0: "GPU-5a9e0b6c-1d2f-4e3a-9b8c-7d6e5f4a3b2c",
    1: "GPU-0f1e2d3c-4b5a-6978-8a9b-acbdcedfe0f1",
    10: "MIG-9c8b7a69-5847-3625-1403-f2e1d0c9b8a7",
}
"""NVML's UUIDs of the fake's devices: two GPUs, and a MIG instance (handle 10) of the second."""


class FakeNvml:
    """A stand-in for pynvml: two GPUs, the second in MIG mode with one instance and no power or energy.

    The first GPU draws 300 W by its energy counter, but its polled power reads 250 W (a
    one-second average that lags), so a test can tell which one a figure came from.
    """

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE

    def __init__(self) -> None:
        self.open_count = 0
        self.started_s = time.monotonic()
        self.used_bytes = {0: 1 * 2**30, 1: 2 * 2**30, 10: 3 * 2**30}

    def nvmlInit(self) -> None:
        self.open_count += 1

    def nvmlShutdown(self) -> None:
        self.open_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return UUIDS[handle]

    def nvmlDeviceGetMigMode(self, handle: int) -> list[int]:
        if handle == 0:
            raise pynvml.NVMLError_NotSupported()
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: int) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: int, index: int) -> int:
        if index > 0:
            raise pynvml.NVMLError_NotFound()
        return 10

    def nvmlDeviceGetName(self, handle: int) -> str:
        return {0: "NVIDIA H100 80GB HBM3", 1: "NVIDIA A100-SXM4-40GB", 10: "NVIDIA A100-SXM4-40GB MIG 1g.5gb"}[handle]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        self.used_bytes[handle] += 2**20
        return SimpleNamespace(total=80 * 2**30, used=self.used_bytes[handle])

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        if handle != 0:
            raise pynvml.NVMLError_NotSupported()
        return 250_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        if handle != 0:
            raise pynvml.NVMLError_NotSupported()
        return 1_000_000 + round(300_000 * (time.monotonic() - self.started_s))


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    fake = FakeNvml()
    monkeypatch.setattr(nvml, "pynvml", fake)
    return fake


def _rss_now_mib() -> float:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * resource.getpagesize() / 2**20


def test_describe_machine_on_this_host() -> None:
    env = host.describe_machine()

    assert set(env) == MACHINE_KEYS
    assert env["cpu_threads"] >= (env["cpu_cores"] or 1) >= 1
    assert env["cpu_sockets"] >= 1
    assert env["memory_gib"] > 0
    assert env["cpu_model"]
    assert env["hostname"]
    assert env["python"].count(".") == 2
    if not HAS_NVML:
        assert env["gpus"] == []
        assert env["gpu_driver"] is None
        assert env["cuda_driver"] is None
    assert json.loads(json.dumps(env)) == env


def test_describe_machine_reads_gpus_through_nvml(fake_nvml: FakeNvml) -> None:
    env = host.describe_machine()

    assert env["gpus"] == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81920},
        {"index": 1, "name": "NVIDIA A100-SXM4-40GB", "memory_mib": 81920},
    ]
    assert env["gpu_driver"] == "550.54.15"
    assert env["cuda_driver"] == "12.4"
    assert fake_nvml.open_count == 0


def _spec_env(**overrides: object) -> dict[str, object]:
    env: dict[str, object] = {
        "cpu_model": "Intel(R) Xeon(R) Platinum 8255C CPU @ 2.50GHz",
        "cpu_sockets": 2,
        "memory_gib": 376.6,
        "gpus": [{"index": i, "name": "NVIDIA GeForce RTX 3080", "memory_mib": 10240} for i in range(8)],
        "os": "Ubuntu 18.04.4 LTS",
        "torch_cuda": "11.1",
        "python": "3.7.10",
        "torch": "1.9.0",
    }
    env.update(overrides)
    return env


def test_server_spec_rows() -> None:
    assert server.server_spec(_spec_env()) == [
        ("CPU", "2 x Intel(R) Xeon(R) Platinum 8255C CPU @ 2.50GHz"),
        ("Memory", "377GB"),
        ("GPU", "8 x NVIDIA GeForce RTX 3080"),
        ("OS", "Ubuntu 18.04.4 LTS"),
        ("Installation", "CUDA 11.1"),
        ("Installation", "Python 3.7.10"),
        ("Installation", "PyTorch 1.9.0"),
    ]


def test_the_cpu_row_counts_cores_and_threads_where_the_cells_ran_on_them() -> None:
    def cpu_row(**env: object) -> str:
        return dict(server.server_spec(_spec_env(gpus=[], **env)))["CPU"]

    assert cpu_row(cpu_cores=48, cpu_threads=96).endswith("CPU @ 2.50GHz (48 cores, 96 threads)")
    assert cpu_row(cpu_cores=None, cpu_threads=4).endswith(" (4 threads)")
    # a description from before cpu_threads was recorded: its cpu_cores counted logical CPUs
    assert cpu_row(cpu_cores=96).endswith(" (96 logical CPUs)")
    # a GPU server's row reads as the published reports write it, unless asked (pfcbench env)
    gpu_server = _spec_env(cpu_cores=48, cpu_threads=96)
    assert dict(server.server_spec(gpu_server))["CPU"] == "2 x Intel(R) Xeon(R) Platinum 8255C CPU @ 2.50GHz"
    assert dict(server.server_spec(gpu_server, cpu_counts=True))["CPU"].endswith("(48 cores, 96 threads)")


def test_env_prints_the_cpus_cores_and_threads() -> None:
    from click.testing import CliRunner

    from bench.cli import main

    env = host.describe_machine()
    done = CliRunner().invoke(main, ["env"])
    assert done.exit_code == 0, done.output
    assert f"({env['cpu_cores']} cores, {env['cpu_threads']} threads)" in done.output


def test_server_spec_without_gpus_or_cuda() -> None:
    rows = server.server_spec(_spec_env(gpus=[], torch_cuda=None))

    assert ("GPU", "none") in rows
    assert [value for key, value in rows if key == "Installation"] == [
        "Python 3.7.10",
        "PyTorch 1.9.0",
    ]


def test_server_spec_of_this_host() -> None:
    rows = server.server_spec(host.describe_machine())

    assert [key for key, _ in rows[:4]] == ["CPU", "Memory", "GPU", "OS"]
    assert rows[-1][1].startswith("PyTorch ")


@pytest.mark.skipif(HAS_NVML, reason="NVML is present on this host")
def test_gpu_sampler_is_inert_without_nvml() -> None:
    with telemetry.GpuSampler(["5a9e0b6c-1d2f-4e3a-9b8c-7d6e5f4a3b2c"], interval_s=0.01) as sampler:
        time.sleep(0.02)

    assert sampler.available is False
    assert sampler.summary() == []


def cuda_uuid(nvml_uuid: str) -> str:
    """The UUID as CUDA (torch's device properties) prints it: no GPU-/MIG- prefix."""
    return nvml_uuid.split("-", 1)[1]


def test_gpu_sampler_takes_mean_power_from_the_energy_counter(fake_nvml: FakeNvml) -> None:
    with telemetry.GpuSampler([cuda_uuid(UUIDS[0])], interval_s=0.005) as sampler:
        time.sleep(0.5)

    assert sampler.available is True
    assert fake_nvml.open_count == 0
    (gpu,) = sampler.summary()
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["nvml"] == "ok"
    assert gpu["mem_used_peak_mib"] == fake_nvml.used_bytes[0] / 2**20
    assert gpu["energy_j"] >= 300 * 0.5 * 0.98  # the window holds the 0.5 s sleep, and more on a busy machine
    assert gpu["power_mean_w"] == pytest.approx(300.0, rel=0.05)  # not the lagging 250 W samples
    assert gpu["power_source"] == "energy counter"


def test_gpu_sampler_finds_gpus_by_uuid_whatever_their_index(fake_nvml: FakeNvml) -> None:
    """As under CUDA_VISIBLE_DEVICES=1, a MIG instance or Slurm isolation: cuda:0 is NVML's GPU 1 or a MIG device."""
    unknown = "6b1f0c2e-0000-4000-8000-000000000000"
    asked = [cuda_uuid(UUIDS[1]), UUIDS[10], unknown]
    with telemetry.GpuSampler(asked, interval_s=0.005) as sampler:
        time.sleep(0.02)

    second, mig, missing = sampler.summary()
    assert second["name"] == "NVIDIA A100-SXM4-40GB" and second["uuid"] == asked[0]
    assert second["mem_used_peak_mib"] == fake_nvml.used_bytes[1] / 2**20
    assert second["power_mean_w"] is None and second["energy_j"] is None
    assert mig["name"] == "NVIDIA A100-SXM4-40GB MIG 1g.5gb"
    assert mig["mem_used_peak_mib"] == fake_nvml.used_bytes[10] / 2**20
    assert missing["nvml"] == "unsupported" and missing["uuid"] == unknown
    assert missing["mem_used_peak_mib"] is None and missing["power_mean_w"] is None
    assert fake_nvml.open_count == 0


def test_cpu_peak_rss_grows_after_touching_memory() -> None:
    before_mib = telemetry.cpu_peak_rss_mib()
    rss_start_mib = _rss_now_mib()
    size = 200 * 2**20
    buf = bytearray(size)
    for offset in range(0, size, 4096):
        buf[offset] = 1

    after_mib = telemetry.cpu_peak_rss_mib()

    assert after_mib >= before_mib
    assert after_mib >= rss_start_mib + 190
    assert after_mib < 1024 * 1024
    del buf


def test_torch_versions_are_read_without_importing_torch() -> None:
    probe = "import json, sys; from bench.rank import host; print(json.dumps([host.describe_machine(), 'torch' in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    env, imported = json.loads(done.stdout)
    assert imported is False
    import torch

    assert env["torch"] == torch.__version__
    assert env["torch_cuda"] == torch.version.cuda
    if torch.backends.cudnn.version() is not None and env["cudnn"] is not None:
        assert env["cudnn"] == server._cudnn_text(torch.backends.cudnn.version())
    assert env["torch_installer"] in (None, "pip", "conda", "uv")


def test_server_spec_cuda_cudnn_and_installer() -> None:
    rows = dict(server.server_spec(_spec_env(cudnn=90100, torch_installer="conda"))[4:5])
    assert rows == {"Installation": "CUDA 11.1, cuDNN 9.1.0"}
    assert server.server_spec(_spec_env(cudnn="8.0.5"))[4] == ("Installation", "CUDA 11.1, cuDNN 8.0.5")
    assert server.server_spec(_spec_env(torch_installer="conda"))[-1] == ("Installation", "PyTorch 1.9.0 (conda)")
