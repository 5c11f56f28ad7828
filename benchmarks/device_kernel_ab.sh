#!/usr/bin/env bash
# A/B of kernel variants on a lent GPU, in one call, from torch-free harness binaries built
# beforehand with nvcc (no GPU needed to build; carry them to the device):
#   for v in ...; do EXTRA_NVCC_FLAGS="..." BUILD_DIR=/tmp/b_$v csrc/cuda/tests/build_and_run.sh \
#     --build-only && cp /tmp/b_$v/harness build/ab/$v; done
# Usage: benchmarks/device_kernel_ab.sh CHECKED "V1 V2 ..." [ROUNDS]
#   CHECKED  variants that also run the correctness suite (27 cases vs the C core) and the small
#            cases under compute-sanitizer memcheck / racecheck / synccheck
#   V...     variants timed by `harness --bench`, interleaved, ROUNDS times (default 2)
# Prints each variant's entry-point lines per round; the logs come back as $OUT/kernel_ab_logs.tgz
# (the device tool returns only a few files).
set -u
cd "$(dirname "$0")/.."
O=/tmp/kernel_ab_logs; mkdir -p "$O"
SAN="$(dirname "$(command -v nvcc)")/compute-sanitizer"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
step() { local n=$1 t=$2; shift 2; local s=$SECONDS; timeout "$t" "$@" > "$O/$n.log" 2>&1; echo "== $n rc=$? $((SECONDS-s))s"; tail -n "${TAIL:-3}" "$O/$n.log"; }
for v in $1; do
  TAIL=2 step "check_$v" 120 "build/ab/$v"
  for tool in memcheck racecheck synccheck; do
    TAIL=2 step "${tool}_$v" 150 "$SAN" --tool "$tool" --error-exitcode 1 "build/ab/$v" --small
  done
done
for round in $(seq "${3:-2}"); do
  for v in $2; do
    step "bench_${v}_r$round" 120 "build/ab/$v" --bench > /dev/null
    echo "-- $v round $round"
    grep -E "entry point +[0-9]" "$O/bench_${v}_r$round.log"
  done
done
tar -czf "${OUT:-/tmp}/kernel_ab_logs.tgz" -C "$O" .
