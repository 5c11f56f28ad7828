#!/usr/bin/env bash
# Builds the torch-free CUDA index harness (csrc/cuda/tests/index_harness.cu, linked with the C core)
# into build/index_harness/ and runs it. `--build-only` skips the run (machines without a GPU).
# MMI_CUDA_ARCH_FLAGS overrides the target list, as in setup.py.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=build/index_harness
mkdir -p "$out"
arch=${MMI_CUDA_ARCH_FLAGS:-"-gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90a,code=sm_90a"}
for src in csrc/core/*.c; do
  gcc -std=c11 -O2 -fPIC -fopenmp -Wall -Wextra -I csrc/core -c "$src" -o "$out/$(basename "${src%.c}").o"
done
# shellcheck disable=SC2086  # $arch is a list of flags
nvcc -std=c++17 -O3 --use_fast_math $arch -I csrc/core -I csrc/cuda \
  csrc/cuda/build_index_vertical_slash.cu csrc/cuda/build_index_grid.cu csrc/cuda/estimate_scores.cu \
  csrc/cuda/tests/index_harness.cu "$out"/*.o -Xcompiler -fopenmp -o "$out/index_harness"
if [ "${1:-}" != "--build-only" ]; then
  "$out/index_harness"
fi
