#!/usr/bin/env bash
# The GPU check: NCCL, fp16, bf16, the CUDA memory cap (a real out-of-memory), a short matrix and the
# fused classifier beside arcface_torch's at 2M classes, on every GPU of this machine; results, report
# and logs go to OUT_DIR (default: gpu-check-out).
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
python3 benchmarks/classifier_impls.py --device cuda --nproc "$ngpu" --classes 2000000 --batch-sizes 512 \
    --rates 1.0,0.1 --json "$out/classifier_impls.json" | tee "$out/classifier_impls.txt"
python3 - "$out/classifier_impls.json" <<'PY' || exit 1
import json, sys
runs = json.load(open(sys.argv[1]))["runs"]
by_point = {}
for run in runs:
    by_point.setdefault(tuple(run["point"]), {})[run["impl"]] = run["record"]
ok = True
for point, records in by_point.items():
    fused, reference = records["fused"], records["arcface_torch"]
    same = reference["status"] != "ok" or abs(fused["loss_first"] - reference["loss_first"]) <= 1e-4 * reference["loss_first"]
    print("fused at", point, fused["status"], "first loss", fused.get("loss_first"), "arcface_torch", reference.get("loss_first"))
    ok = ok and fused["status"] == "ok" and same
print("fused beside arcface_torch", "passed" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
python3 - "$out/results/gpu-check/results.jsonl" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
statuses = [r["status"] for r in records]
print("statuses:", statuses)
ok = statuses[:3] == ["ok", "ok", "ok"] and statuses[3] == "oom"
print("GPU check", "passed" if ok else "FAILED")
sys.exit(0 if ok else 1)
PY
