#!/usr/bin/env bash
# The issue-3 acceptance run on a lent GPU, in two calls of one lease (each under 10 minutes):
#   benchmarks/device_final.sh checks   build, torch-free kernel harness (27 cases vs the C core)
#                                       and its memcheck / racecheck / synccheck and timing, index harness,
#                                       GPU pytest, per-stage online index costs
#   benchmarks/device_final.sh bench    benchmarks/kernels.py at 32K .. 1M in one process, from 512K
#                                       on capped at 76 GiB of allocator memory (an 80 GB card)
#   benchmarks/device_final.sh all      build, harness, memcheck, racecheck, then bench (one call)
# Each step is time-limited and logged under $OUT; what finishes comes back even if a later step
# runs out. The bench call builds the extension again only if the first call's build is gone.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 MMI_CUDA_ARCH_FLAGS="-gencode=arch=compute_90a,code=sm_90a"
lib="$(c++ -print-file-name=libstdc++.so.6)"; [ "${lib#/}" != "$lib" ] && export LD_PRELOAD="$lib"
O="${OUT:-/tmp/out}"; mkdir -p "$O"
step() { local n=$1 t=$2; shift 2; local s=$SECONDS; timeout "$t" "$@" > "$O/$n.log" 2>&1; echo "== $n rc=$? $((SECONDS-s))s"; tail -n "${TAIL:-6}" "$O/$n.log"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
SAN="$(dirname "$(command -v nvcc)")/compute-sanitizer"

# The extension, the torch-free kernel harness (vs the C core) and the index harness, then the
# harness's small cases under each compute-sanitizer tool named. $1: seconds per step.
build_and_check() {
  local limit=$1; shift
  BUILD_DIR=/tmp/harness step harness_build 150 csrc/cuda/tests/build_and_run.sh --build-only &
  TAIL=8 step index_harness 150 csrc/cuda/tests/build_index_harness.sh &
  step build 300 python3 setup.py build_ext --inplace
  wait
  TAIL=3 step harness "$limit" /tmp/harness/harness
  for tool in "$@"; do
    TAIL=2 step "sanitize_$tool" "$limit" "$SAN" --tool "$tool" --error-exitcode 1 /tmp/harness/harness --small
  done
}

case "${1:-checks}" in
  checks)
    build_and_check 120 memcheck racecheck synccheck
    TAIL=12 step harness_bench 120 /tmp/harness/harness --bench
    pip install -q --no-index --find-links .device/wheels pytest > /dev/null 2>&1
    TAIL=12 step pytest_gpu 240 python3 -m pytest -q -m gpu -p no:cacheprovider -rfs tests
    [ -n "${SKIP_BREAKDOWN:-}" ] ||
      TAIL=20 step index_breakdown 120 python3 benchmarks/index_breakdown.py --seqs 131072 262144 1048576 --out "$O"
    ;;
  all)
    # One call for a short lease: build, the harness and two sanitizers, then the bench with
    # whatever remains of 590 s (kernels.py writes its JSON after every length).
    build_and_check 60 memcheck racecheck
    "$0" bench_only $((590 - SECONDS))
    ;;
  bench|bench_only)
    ls mminference/_C*.so > /dev/null 2>&1 || step build 300 python3 setup.py build_ext --inplace
    TAIL=60 step kernels "${2:-330}" python3 benchmarks/kernels.py --seqs 32768 131072 262144 524288 1048576 \
      --patterns full a_shape vertical_slash grid --baselines sdpa_cudnn sdpa_flash flex \
      --flex-seqs 131072 --flash-max-seq 262144 --full-max-seq 131072 --memory-cap-gib 76 --out "$O"
    ;;
esac
