#!/usr/bin/env bash
# Everything a GPU lease should do in one call: build the extension for Hopper, run the GPU tests,
# the torch-free kernel harnesses (also under compute-sanitizer), and the kernel benchmark.
# Usage: benchmarks/device_run.sh [build|test|sanitize|bench]...   (default: all four)
# Logs go to $OUT (or benchmarks/results/device-logs when $OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}"
export MMI_CUDA_ARCH_FLAGS="${MMI_CUDA_ARCH_FLAGS:--gencode=arch=compute_90a,code=sm_90a}"
LOGS="${OUT:-benchmarks/results/device-logs}"
mkdir -p "$LOGS"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(build test sanitize bench)
status=0

step() {  # step NAME COMMAND...: runs and logs, remembers failure, keeps going
  local name=$1; shift
  echo "=== $name: $*"
  local start=$SECONDS
  "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-25}" "$LOGS/$name.log"
  echo "=== $name: rc=$rc in $((SECONDS - start)) s"
  [ $rc -eq 0 ] || status=1
}

for s in "${steps[@]}"; do
  case "$s" in
    build)
      nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv
      python3 -c "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__)"
      step build python3 setup.py build_ext --inplace ;;
    test)
      step pytest python3 -m pytest -q -x tests
      [ -x csrc/cuda/tests/build_and_run.sh ] && step harness csrc/cuda/tests/build_and_run.sh
      [ -x csrc/cuda/tests/build_index_harness.sh ] && step index_harness csrc/cuda/tests/build_index_harness.sh ;;
    sanitize)
      [ -x csrc/cuda/tests/build_and_run.sh ] && step sanitize csrc/cuda/tests/build_and_run.sh --sanitize ;;
    bench)
      step bench python3 benchmarks/kernels.py --out "$LOGS" ${BENCH_ARGS:-} ;;
    *) echo "unknown step $s"; status=1 ;;
  esac
done
exit $status
