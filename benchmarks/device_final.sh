#!/usr/bin/env bash
# One lease, in priority order, each step time-limited and logged under $OUT (what finishes comes
# back even if the lease runs out): build, 7B pattern search at 32K, one layer at 1M, GPU tests of
# the new ops, kernel benchmark at 128K.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MAX_JOBS=16 MMI_CUDA_ARCH_FLAGS="-gencode=arch=compute_90a,code=sm_90a"
lib="$(c++ -print-file-name=libstdc++.so.6)"; [ "${lib#/}" != "$lib" ] && export LD_PRELOAD="$lib"
O="${OUT:-/tmp/out}"; mkdir -p "$O"
step() { local n=$1 t=$2; shift 2; local s=$SECONDS; timeout "$t" "$@" > "$O/$n.log" 2>&1; echo "== $n rc=$? $((SECONDS-s))s"; tail -n "${TAIL:-6}" "$O/$n.log"; }
nvidia-smi --query-gpu=name --format=csv,noheader
step build 200 python3 setup.py build_ext --inplace
step search7b 150 python3 -m mminference search --model qwen2.5-vl-7b-random --calib synthetic --tokens 32768 --out "$O/cfg_7b_32k.json"
step layer1m 110 python3 benchmarks/layer_long.py --tokens 1048576 --configs auto q_boundary 2d_boundary --reps 1 --out "$O"
pip install -q --no-index --find-links .device/wheels pytest >/dev/null 2>&1
step pytest_gpu 90 python3 -m pytest -q -x -m gpu -p no:cacheprovider tests/test_search_score.py tests/test_search_planted.py tests/test_search_e2e.py tests/test_search_cost.py tests/test_grid_detect.py tests/test_sparse_attention.py
step kernels128k 200 python3 benchmarks/kernels.py --seqs 131072 --patterns a_shape vertical_slash grid --baselines sdpa_cudnn flex --flex-seqs 131072 --out "$O"
