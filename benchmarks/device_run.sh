#!/usr/bin/env bash
# Everything a GPU lease should do in one call: build the extension for Hopper, run the test suite
# (GPU tests included), the torch-free kernel harnesses (also under compute-sanitizer), and the
# kernel benchmark. Usage: benchmarks/device_run.sh [build] [test] [harness] [sanitize] [bench]
# (default: all). Logs go to $OUT (or benchmarks/results/device-logs); BENCH_ARGS is passed to
# benchmarks/kernels.py.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}"
export MMI_CUDA_ARCH_FLAGS="${MMI_CUDA_ARCH_FLAGS:--gencode=arch=compute_90a,code=sm_90a}"
# The lent machines compile with a newer g++ (/opt/gcc) than the libstdc++ the Python process
# loads; the extension's inline iostream code then crashes in the older library (seen on H200,
# 2026-11-28, in c10::str formatting an integer). Loading the compiler's own libstdc++ first fixes it.
cxx_libstdcxx="$("${CXX:-c++}" -print-file-name=libstdc++.so.6 2>/dev/null)"
if [ -n "$cxx_libstdcxx" ] && [ "${cxx_libstdcxx#/}" != "$cxx_libstdcxx" ]; then
  export LD_PRELOAD="$cxx_libstdcxx${LD_PRELOAD:+:$LD_PRELOAD}"
fi
LOGS="${OUT:-benchmarks/results/device-logs}"
mkdir -p "$LOGS"
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(build test harness sanitize bench)
status=0

step() {  # step NAME TIMEOUT COMMAND...: runs with a time limit, logs, keeps going on failure
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*"
  local start=$SECONDS
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-15}" "$LOGS/$name.log"
  echo "=== $name: rc=$rc in $((SECONDS - start)) s"
  [ $rc -eq 0 ] || status=1
}

for s in "${steps[@]}"; do
  case "$s" in
    build)
      nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
      step build 400 python3 setup.py build_ext --inplace ;;
    test)
      step pytest 300 python3 -m pytest -q -p no:cacheprovider -rf tests ;;
    harness)
      step harness 200 csrc/cuda/tests/build_and_run.sh
      step index_harness 200 csrc/cuda/tests/build_index_harness.sh ;;
    sanitize)
      step sanitize 300 csrc/cuda/tests/build_and_run.sh --sanitize ;;
    bench)
      # shellcheck disable=SC2086  # BENCH_ARGS is a list of arguments
      step bench 500 python3 benchmarks/kernels.py --out "$LOGS" ${BENCH_ARGS:-} ;;
    *) echo "unknown step $s"; status=1 ;;
  esac
done
exit $status
