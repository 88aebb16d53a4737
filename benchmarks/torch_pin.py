"""Check the ends of pyproject's torch pin: the quick tier in a scratch venv for each torch version.

For each version a fresh venv in a temporary folder gets that torch and pfcbench from this source
tree (`pip install torch==VERSION -e .[dev]`; pip refuses a version the pin does not admit) and
runs the quick tier there (`python -m pytest -m "not slow"`). It prints, per version, the tests
passed, failed, errored and skipped and the tier's wall time (the install apart), and exits 1 when
any version failed to install or failed a test. The venvs are deleted afterwards; a CUDA build of
torch needs a few GB of disk while its venv lives.

    python benchmarks/torch_pin.py                 # both ends of the pin, 2.13.0 and 2.15.0
    python benchmarks/torch_pin.py 2.14.1          # any other version the pin admits
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parent.parent

PIN_ENDS = ("2.13.0", "2.15.0")
"""The oldest and the newest torch release that pyproject's pin admits."""


@dataclasses.dataclass(kw_only=True)
class TierResult:
    torch_version: str
    """torch.__version__ in the venv (with its local build tag, such as +cpu)."""
    num_passed: int
    num_failed: int
    num_errors: int
    num_skipped: int
    install_s: float
    tier_s: float

    @property
    def ok(self) -> bool:
        return self.num_failed == 0 and self.num_errors == 0 and self.num_passed > 0

    def line(self) -> str:
        return (
            f"torch {self.torch_version}: {self.num_passed} passed, {self.num_failed} failed, "
            f"{self.num_errors} errors, {self.num_skipped} skipped in {self.tier_s:.1f} s "
            f"(install {self.install_s:.0f} s)"
        )


def check(version: str, scratch: Path) -> TierResult | None:
    """Install torch==version and pfcbench in a venv under scratch and run the quick tier there."""
    venv.create(scratch / "venv", with_pip=True)
    python = str(scratch / "venv" / "bin" / "python")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    start = time.monotonic()
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", f"torch=={version}", "-e", f"{REPO}[dev]"],
        env=env,
        capture_output=True,
        text=True,
    )
    install_s = time.monotonic() - start
    if install.returncode != 0:
        print(f"torch {version}: pip install failed (exit {install.returncode}):\n{tail(install.stderr)}")
        return None
    torch_version = subprocess.run(
        [python, "-c", "import torch; print(torch.__version__)"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    junit = scratch / "junit.xml"
    start = time.monotonic()
    tier = subprocess.run(
        [python, "-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    tier_s = time.monotonic() - start
    if not junit.exists():
        print(f"torch {torch_version}: pytest wrote no results (exit {tier.returncode}):\n{tail(tier.stdout)}")
        return None
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    counts = {key: int(suite.get(key)) for key in ("tests", "failures", "errors", "skipped")}
    result = TierResult(
        torch_version=torch_version,
        num_passed=counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
        num_failed=counts["failures"],
        num_errors=counts["errors"],
        num_skipped=counts["skipped"],
        install_s=install_s,
        tier_s=tier_s,
    )
    if not result.ok:
        print(tail(tier.stdout))
    return result


def tail(text: str, num_lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-num_lines:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="*", default=list(PIN_ENDS), help="torch versions (default: the pin's ends)")
    args = parser.parse_args()
    results = {}
    for version in args.versions:
        with tempfile.TemporaryDirectory(prefix=f"pfcbench-torch-{version}-") as scratch:
            results[version] = check(version, Path(scratch))
        print(results[version].line() if results[version] else f"torch {version}: not checked", flush=True)
    return 0 if all(result and result.ok for result in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
