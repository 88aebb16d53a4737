#!/usr/bin/env bash
# The GPU check: NCCL, fp16, bf16, both arcface_torch impls (the 2021 one in fp16 with its scaler),
# the CUDA memory cap (a real out-of-memory) and a short matrix on every GPU of this machine;
# results, report and logs go to OUT_DIR (default: gpu-check-out).
#
#   bash benchmarks/gpu_check.sh OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-gpu-check-out}")
mkdir -p "$out"
python3 -c "import bench" 2>/dev/null || python3 -m pip install -q -e . || exit 1
ngpu=$(python3 -c "import torch; print(torch.cuda.device_count())")
if [ "$ngpu" -lt 1 ]; then
    echo "gpu_check: no CUDA device visible" >&2
    exit 1
fi
pfcbench env | tee "$out/env.md"
pfcbench run bench/matrices/gpu-check.toml --nproc "$ngpu" --results "$out/results" 2>&1 | tee "$out/run.log"
pfcbench report "$out/results/gpu-check" -o "$out/gpu-check.md" && cat "$out/gpu-check.md"
python3 benchmarks/partial_fc_step.py --device cuda --nproc "$ngpu" --classes 2000000 --batch-size 512 | tee "$out/partial_fc_step.txt"
python3 - "$out/results/gpu-check/results.jsonl" <<'PY'
import json, math, sys
records = [json.loads(line) for line in open(sys.argv[1])]
for r in records:
    c = r["config"]
    print(f"{c['impl']:<20} {c['precision']:<5} rate {c['sample_rate']:<4} cap {c['max_memory_gib']}: {r['status']}")
capped = [r for r in records if r["config"]["max_memory_gib"] is not None]
uncapped = [r for r in records if r["config"]["max_memory_gib"] is None]
ok = (
    len(uncapped) == 5
    and all(r["status"] == "ok" and math.isfinite(r["loss_last"]) for r in uncapped)
    and {r["config"]["impl"] for r in uncapped} == {"arcface_torch", "arcface_torch_2021"}
    and [r["status"] for r in capped] == ["oom"]
)
print("GPU check", "passed" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
