#!/usr/bin/env bash
# Builds the torch-free CUDA harness (nvcc + the C core compiled with gcc) and runs it.
#
# Usage: csrc/cuda/tests/build_and_run.sh [ARCH] [MODE]
#   ARCH   sm_80, sm_90a, ... (default sm_90a): -gencode=arch=compute_XX,code=sm_XX
#   MODE   (none)       full correctness suite
#          --small      small cases + malformed index
#          --checks     host-side argument checks only (no GPU needed)
#          --bench      timing, full causal density, S = 16K and 32K
#          --memcheck   --small under compute-sanitizer --tool memcheck
#          --racecheck  --small under compute-sanitizer --tool racecheck
#          --synccheck  --small under compute-sanitizer --tool synccheck
#          --sanitize   memcheck, racecheck and synccheck in turn
#          --all        full suite, then --sanitize, then --bench (one build; non-zero if any fails)
#          --build-only compile and link, run nothing
# Build outputs go to build/cuda_harness/ (or $BUILD_DIR). $EXTRA_NVCC_FLAGS is added to the CUDA
# compile lines (e.g. -DMMI_SM90_NO_PINGPONG for an A/B build of a kernel variant).
# On compute capability 9.0 with ARCH sm_90a, block_q 128 with head_dim 64 / 128 runs the wgmma
# kernel (csrc/cuda/sm90/); the harness prints the kernel of every case. Environment:
#   MMI_CUDA_FORCE_MMA_SYNC=1   force the mma.sync kernel everywhere (read by the C entry point)
# Every mode but --build-only and --bench first runs the host-only sm90 layout test
# (sm90_layout_test.cpp: swizzle / descriptor / fragment bookkeeping, no GPU needed).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
BUILD="${BUILD_DIR:-$ROOT/build/cuda_harness}"
ARCH=sm_90a
MODE=
for arg in "$@"; do
  case "$arg" in
    sm_*) ARCH="$arg" ;;
    --small|--checks|--bench|--memcheck|--racecheck|--synccheck|--sanitize|--all|--build-only)
      MODE="$arg" ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

CUDA_BIN="${CUDA_HOME:+$CUDA_HOME/bin/}"
NVCC="${NVCC:-$(command -v nvcc || echo "${CUDA_BIN}nvcc")}"
SANITIZER="${SANITIZER:-$(command -v compute-sanitizer || echo "$(dirname "$NVCC")/compute-sanitizer")}"
CC="${CC:-gcc}"
COMPUTE="compute_${ARCH#sm_}"

mkdir -p "$BUILD"
NVCC_FLAGS=(-std=c++17 -O3 --use_fast_math -lineinfo "-gencode=arch=$COMPUTE,code=$ARCH"
            -I "$ROOT/csrc/core" -I "$ROOT/csrc/cuda" -Xcompiler -fopenmp ${EXTRA_NVCC_FLAGS:-})
# The two CUDA translation units compile in the background while gcc builds the C core.
"$NVCC" "${NVCC_FLAGS[@]}" -Xptxas -warn-spills -c "$ROOT/csrc/cuda/sparse_attention_fwd.cu" \
  -o "$BUILD/sparse_attention_fwd.o" &
kernel_job=$!
"$NVCC" "${NVCC_FLAGS[@]}" -c "$ROOT/csrc/cuda/tests/harness.cu" -o "$BUILD/harness.o" &
harness_job=$!
objects=()
for src in "$ROOT"/csrc/core/*.c; do
  obj="$BUILD/$(basename "${src%.c}").o"
  "$CC" -std=c11 -O2 -fPIC -fopenmp -Wall -Wextra -I "$ROOT/csrc/core" -c "$src" -o "$obj"
  objects+=("$obj")
done
wait "$kernel_job"
wait "$harness_job"
"$NVCC" "-gencode=arch=$COMPUTE,code=$ARCH" "$BUILD/harness.o" "$BUILD/sparse_attention_fwd.o" \
  "${objects[@]}" -Xcompiler -fopenmp -lgomp -lm -o "$BUILD/harness"
echo "built $BUILD/harness ($ARCH)"
"${CXX:-g++}" -std=c++17 -O2 -Wall -Wextra -I "$ROOT/csrc/cuda" "$ROOT/csrc/cuda/tests/sm90_layout_test.cpp" \
  -o "$BUILD/sm90_layout_test"
case "$MODE" in
  --build-only|--bench) ;;
  *) "$BUILD/sm90_layout_test" ;;
esac

HARNESS="$BUILD/harness"
sanitize() {
  echo "=== compute-sanitizer --tool $1"
  "$SANITIZER" --tool "$1" --error-exitcode 1 "$HARNESS" --small
}
case "$MODE" in
  --build-only) ;;
  --memcheck) sanitize memcheck ;;
  --racecheck) sanitize racecheck ;;
  --synccheck) sanitize synccheck ;;
  --sanitize) sanitize memcheck && sanitize racecheck && sanitize synccheck ;;
  --all)
    status=0
    "$HARNESS" || status=1
    for tool in memcheck racecheck synccheck; do sanitize "$tool" || status=1; done
    "$HARNESS" --bench || status=1
    exit "$status" ;;
  *) "$HARNESS" $MODE ;;
esac
