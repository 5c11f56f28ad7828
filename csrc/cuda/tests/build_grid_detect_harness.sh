#!/usr/bin/env bash
# Builds the torch-free grid detection harness (csrc/cuda/tests/grid_detect_harness.cu, linked with
# the C core) into build/grid_detect_harness/ and runs it. `--build-only` skips the run (machines
# without a GPU). MMI_CUDA_ARCH_FLAGS overrides the target list, as in setup.py.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=build/grid_detect_harness
mkdir -p "$out"
arch=${MMI_CUDA_ARCH_FLAGS:-"-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a"}
for src in csrc/core/status.c csrc/core/detect_grid.c; do
  gcc -std=c11 -O2 -fPIC -fopenmp -Wall -Wextra -I csrc/core -c "$src" -o "$out/$(basename "${src%.c}").o"
done
# The same nvcc flags as setup.py (fast math included: results must not depend on them).
# shellcheck disable=SC2086  # $arch is a list of flags
nvcc -std=c++17 -O3 --use_fast_math $arch -I csrc/core -I csrc/cuda \
  csrc/cuda/detect_grid.cu csrc/cuda/tests/grid_detect_harness.cu "$out"/*.o -Xcompiler -fopenmp \
  -o "$out/grid_detect_harness"
if [ "${1:-}" != "--build-only" ]; then
  "$out/grid_detect_harness"
fi
