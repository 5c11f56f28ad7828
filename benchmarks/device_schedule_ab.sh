#!/usr/bin/env bash
# A/B of the persistent sm_90a kernel's scheduling on one lent GPU, in one call: the extension
# built with -DMMI_SM90_STATIC_SCHEDULE (static, last-first: the kernel before dynamic
# scheduling), and as shipped (atomic counter, heavy-first order; an extension already built in
# the tree is taken as the shipped one), each timed by kernels.py $ROUNDS times (default 2),
# interleaved (static, dynamic, static, dynamic) so drift shows.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16
lib="$(c++ -print-file-name=libstdc++.so.6)"; [ "${lib#/}" != "$lib" ] && export LD_PRELOAD="$lib"
O="${OUT:-/tmp/out}"; mkdir -p "$O"
ARCH="-gencode=arch=compute_90a,code=sm_90a"
build() {
  rm -rf build/temp.* mminference/_C*.so
  MMI_CUDA_ARCH_FLAGS="$ARCH $1" timeout 200 python3 setup.py build_ext --inplace > "$O/build_$2.log" 2>&1
  mkdir -p "/tmp/ab/$2" && cp mminference/_C*.so "/tmp/ab/$2/"
}
if ls mminference/_C*.so > /dev/null 2>&1; then
  mkdir -p /tmp/ab/dynamic && cp mminference/_C*.so /tmp/ab/dynamic/
  build -DMMI_SM90_STATIC_SCHEDULE static
else
  build -DMMI_SM90_STATIC_SCHEDULE static
  build "" dynamic
fi
for round in $(seq "${ROUNDS:-2}"); do
  for variant in static dynamic; do
    cp /tmp/ab/$variant/_C*.so mminference/
    echo "== $variant round $round"
    timeout 150 python3 benchmarks/kernels.py --seqs 32768 131072 --patterns full a_shape grid \
      --baselines sdpa_cudnn --out "$O/$variant$round" 2>&1 | grep -E "^ +[0-9]+ (sdpa|mminf)"
  done
done
