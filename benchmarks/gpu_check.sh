#!/usr/bin/env bash
# The GPU check: NCCL, fp16 and bf16 for every implementation, IResNet-50, the memory cap (a real
# out-of-memory) and a short matrix on every visible GPU; batches scale with the number of GPUs.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Runs pfcbench from this source tree (PYTHONPATH): nothing is downloaded or installed. python3
# (or $PYTHON) must already have torch, click, pandas, tabulate, matplotlib, psutil and
# nvidia-ml-py. OUT_DIR gets summary.txt (the verdict, one line per cell, the report), check.log,
# env.md, gpu-check.md, gpu-check.toml and results/. Exit code 0 when every cell did as expected.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(realpath -m "${1:-gpu-check-out}")
python=${PYTHON:-python3}
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

pfcbench() { "$python" -m bench.cli "$@"; }

check() {
    local missing
    missing=$("$python" - <<'PY'
import importlib.util
needed = {"torch": "torch", "click": "click", "pandas": "pandas", "tabulate": "tabulate",
          "matplotlib": "matplotlib", "psutil": "psutil", "pynvml": "nvidia-ml-py"}
print(" ".join(pip for module, pip in needed.items() if importlib.util.find_spec(module) is None))
PY
)
    if [ -n "$missing" ]; then
        echo "gpu_check: $python lacks $missing; install them first (this check downloads nothing)"
        return 1
    fi
    echo "gpu_check: $(pfcbench --version) from $repo, $("$python" --version)"
    pfcbench env | tee "$out/env.md" || return 1
    local ngpu
    ngpu=$("$python" -c "import torch; print(torch.cuda.device_count())") || return 1
    if [ "$ngpu" -lt 1 ]; then
        echo "gpu_check: no CUDA device visible"
        return 1
    fi
    "$python" "$repo/benchmarks/gpu_check.py" "$out" --num-gpus "$ngpu"
}

mkdir -p "$out"
check 2>&1 | tee "$out/check.log"
exit "${PIPESTATUS[0]}"
