#!/usr/bin/env bash
# One prepared check of `hubkit quantize` on a CUDA host, run as it is (no network, <= 8 minutes on one H100/H200):
#   0. install the carried wheels (.gpu-wheels/, built by benchmarks/gpu_wheels.py) into a scratch folder
#   1. CUDA vs CPU fallback: the same tiny model quantized with modelopt's CUDA kernels and hubkit's CPU stand-ins
#   2. a medium model (4 GiB BF16) resident and layerwise: peak GPU memory per stage against the plan, the
#      layerwise seconds per part of a layer against the plan, and whether the layerwise export is
#      byte-identical to the resident one on CUDA
#   3. the quantize tests with CUDA visible
# Every step runs under its own time limit and prints its result; the exit status is the number of failed steps.
# Results go to stdout (and, when $OUT is set, to $OUT/gpu_check.txt). SMOKE=1 tries the script itself on a
# machine without a GPU (a tiny model on the CPU, no CUDA comparison, the shard tests only).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
PY=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hubkit-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONWARNINGS=ignore TOKENIZERS_PARALLELISM=false
LOG=${OUT:+$OUT/gpu_check.txt}
exec > >(tee ${LOG:+"$LOG"}) 2>&1
failed=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, report, keep going
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo
  echo "=== $name (limit ${limit} s)"
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  if [ "$rc" -eq 0 ]; then echo "=== $name: ok ($((SECONDS - start)) s)"; else
    echo "=== $name: FAILED (exit $rc$([ "$rc" -eq 124 ] && echo ', time limit'), $((SECONDS - start)) s)"
    failed=$((failed + 1))
  fi
}

echo "=== host"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ -d .gpu-wheels ] && ls .gpu-wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install --quiet --no-index --no-deps --target "$WORK/site" .gpu-wheels/*.whl || exit 90
  export PYTHONPATH="$WORK/site:$REPO"
  echo "installed $(ls .gpu-wheels/*.whl | wc -l) carried wheels into a scratch folder"
else
  export PYTHONPATH=$REPO
  echo "no .gpu-wheels/: using the installed packages"
fi
SMOKE=${SMOKE:-0} "$PY" - <<'EOF' || exit 91
import importlib.metadata as m, os, torch
names = ["torch", "transformers", "nvidia-modelopt", "compressed-tensors", "accelerate", "huggingface-hub"]
print(", ".join(f"{n} {m.version(n)}" for n in names), f"| CUDA {torch.version.cuda}")
if os.environ["SMOKE"] == "1":
    print("SMOKE=1: no GPU needed")
else:
    assert torch.cuda.is_available(), "no CUDA device visible"
    print(f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
EOF

if [ "${SMOKE:-0}" = 1 ]; then
  step "2. tiny model, resident and layerwise (SMOKE)" 170 "$PY" benchmarks/gpu_medium.py --work "$WORK" --smoke
  step "3. shard tests (SMOKE)" 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_quantize_shards.py
else
  step "1. CUDA vs CPU fallback (tiny DeepSeek-V3)" 90 "$PY" benchmarks/compare_cuda_fallback.py
  step "2. medium model, resident and layerwise" 170 "$PY" benchmarks/gpu_medium.py --work "$WORK"
  step "3. quantize tests with CUDA visible" 180 "$PY" -m pytest -q -p no:cacheprovider --maxfail=3 \
    tests/test_quantize.py tests/test_quantize_cpu_fallback.py tests/test_quantize_layerwise.py \
    tests/test_quantize_shards.py tests/test_quantize_cli.py
fi

echo
echo "=== gpu_check: $failed step(s) failed"
exit "$failed"
