// Candidate scoring of the pattern search on the GPU (semantics: csrc/core/mmi_search.h,
// reference: csrc/core/search_score.c).
//
// Work split: tile counts take one thread per (head, query block). Scores take one CTA per
// (sampled row, head): its threads first find the row's query slot (a scan of q_perm), then each
// warp walks 32-slot chunks of the block's key set (ranges, then columns; chunk c goes to warp
// c % kWarps). A lane reads one key's probability and adds it to its modality's sum; with values,
// the warp then walks the chunk's 32 keys (shuffled from their lanes) and each lane adds
// p * v[key, d] for its dims d = lane + 32 t. Warp sums use a fixed xor tree, CTA sums add the
// warps in order: no atomics, the same bits on every run.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "mmi_cuda_search.h"

extern "C" {
#include "mmi_internal.h"
}

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxDimsPerLane = MMI_SEARCH_CUDA_MAX_HEAD_DIM / 32;
constexpr int kTileThreads = 128;
constexpr unsigned kFullMask = 0xffffffffu;

struct SearchParams {
  const float* probs;      // [H, R, S]
  const int32_t* row_pos;  // [R]
  const int32_t* modality; // [S]
  const float* value;      // [Hkv, S, D] or nullptr
  const int32_t* ranges;   // head h at ranges + h * ranges_stride_h, [NQB, R_cap, 2]
  const int32_t* range_count;
  const int32_t* columns;
  const int32_t* column_count;
  const int32_t* q_perm;
  const int32_t* k_perm;
  int64_t ranges_stride_h, range_count_stride_h, columns_stride_h, column_count_stride_h;
  int64_t q_perm_stride_h, k_perm_stride_h;
  float* kept_mass;      // [H, R, M]
  float* kept_out;       // [H, R, D] or nullptr
  int32_t* block_tiles;  // [H, NQB]
  int heads, group, rows, seq, num_modalities, block_q, block_k, head_dim;
  int max_ranges, max_columns, num_q_blocks;
};

__device__ __forceinline__ int clamp_count(int32_t n, int capacity) {
  return n < 0 ? 0 : (n > capacity ? capacity : n);
}

__global__ void block_tiles_kernel(SearchParams p) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= static_cast<int64_t>(p.heads) * p.num_q_blocks) return;
  const int h = static_cast<int>(t / p.num_q_blocks), qb = static_cast<int>(t % p.num_q_blocks);
  const int nr = clamp_count(p.range_count[h * p.range_count_stride_h + qb], p.max_ranges);
  const int nc = p.max_columns > 0
                     ? clamp_count(p.column_count[h * p.column_count_stride_h + qb], p.max_columns)
                     : 0;
  int64_t tiles = (nc + p.block_k - 1) / p.block_k;
  const int32_t* ranges = p.ranges + h * p.ranges_stride_h + static_cast<int64_t>(qb) * p.max_ranges * 2;
  for (int r = 0; r < nr; ++r) {
    const int64_t len = static_cast<int64_t>(ranges[2 * r + 1]) - ranges[2 * r];
    if (len > 0) tiles += (len + p.block_k - 1) / p.block_k;
  }
  p.block_tiles[t] = static_cast<int32_t>(tiles < INT32_MAX ? tiles : INT32_MAX);
}

struct RowState {
  float mass[MMI_SEARCH_MAX_MODALITIES];
  float out[kMaxDimsPerLane];
};

// One 32-slot chunk: lane `lane` holds slot `slot` (or none when valid is false); k_perm is the
// head's key permutation (nullptr: identity).
__device__ __forceinline__ void add_chunk(const SearchParams& p, const int32_t* k_perm,
                                          const float* prob_row, const float* value_head, int pos,
                                          bool valid, int slot, int lane, RowState& st) {
  int key = -1;
  float w = 0.0f;
  if (valid && slot >= 0 && slot < p.seq) {
    key = k_perm != nullptr ? k_perm[slot] : slot;
    if (key >= 0 && key <= pos && key < p.seq) {
      const int m = p.modality[key];
      if (m >= 0 && m < p.num_modalities) {
        w = prob_row[key];
#pragma unroll
        for (int i = 0; i < MMI_SEARCH_MAX_MODALITIES; ++i) st.mass[i] += (i == m) ? w : 0.0f;
      } else {
        w = 0.0f;
      }
    }
  }
  if (value_head == nullptr) return;
  for (int l = 0; l < 32; ++l) {
    const float wl = __shfl_sync(kFullMask, w, l);
    const int kl = __shfl_sync(kFullMask, key, l);
    if (wl == 0.0f) continue;  // warp-uniform
    const float* v = value_head + static_cast<int64_t>(kl) * p.head_dim;
#pragma unroll
    for (int t = 0; t < kMaxDimsPerLane; ++t) {
      const int d = lane + 32 * t;
      if (d < p.head_dim) st.out[t] += wl * v[d];
    }
  }
}

__global__ void __launch_bounds__(kThreads) score_rows_kernel(SearchParams p) {
  const int r = blockIdx.x, h = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __shared__ int slot_shared;
  __shared__ float mass_shared[kWarps][MMI_SEARCH_MAX_MODALITIES];
  __shared__ float out_shared[kWarps][MMI_SEARCH_CUDA_MAX_HEAD_DIM];
  const int pos = p.row_pos[r];
  const bool pos_ok = pos >= 0 && pos < p.seq;
  if (threadIdx.x == 0) slot_shared = (p.q_perm == nullptr && pos_ok) ? pos : -1;
  __syncthreads();
  if (p.q_perm != nullptr && pos_ok) {
    const int32_t* q_perm = p.q_perm + h * p.q_perm_stride_h;
    for (int s = threadIdx.x; s < p.seq; s += kThreads)
      if (q_perm[s] == pos) slot_shared = s;  // one writer for a valid permutation
  }
  __syncthreads();
  const int slot = slot_shared;

  RowState st;
#pragma unroll
  for (int i = 0; i < MMI_SEARCH_MAX_MODALITIES; ++i) st.mass[i] = 0.0f;
#pragma unroll
  for (int t = 0; t < kMaxDimsPerLane; ++t) st.out[t] = 0.0f;

  if (slot >= 0) {
    const int qb = slot / p.block_q;
    const int32_t* k_perm = p.k_perm != nullptr ? p.k_perm + h * p.k_perm_stride_h : nullptr;
    const float* prob_row = p.probs + (static_cast<int64_t>(h) * p.rows + r) * p.seq;
    const float* value_head =
        p.value != nullptr ? p.value + static_cast<int64_t>(h / p.group) * p.seq * p.head_dim : nullptr;
    const int nr = clamp_count(p.range_count[h * p.range_count_stride_h + qb], p.max_ranges);
    const int32_t* ranges = p.ranges + h * p.ranges_stride_h + static_cast<int64_t>(qb) * p.max_ranges * 2;
    int chunk = 0;  // running chunk number over the whole key set: chunk % kWarps picks the warp
    for (int i = 0; i < nr; ++i) {
      const int start = max(ranges[2 * i], 0), end = min(ranges[2 * i + 1], p.seq);
      for (int base = start; base < end; base += 32, ++chunk)
        if (chunk % kWarps == warp)
          add_chunk(p, k_perm, prob_row, value_head, pos, base + lane < end, base + lane, lane, st);
    }
    if (p.max_columns > 0) {
      const int nc = clamp_count(p.column_count[h * p.column_count_stride_h + qb], p.max_columns);
      const int32_t* columns = p.columns + h * p.columns_stride_h + static_cast<int64_t>(qb) * p.max_columns;
      for (int base = 0; base < nc; base += 32, ++chunk)
        if (chunk % kWarps == warp) {
          const bool valid = base + lane < nc;
          add_chunk(p, k_perm, prob_row, value_head, pos, valid, valid ? columns[base + lane] : -1,
                    lane, st);
        }
    }
  }

  // Warp sums (fixed xor tree), then warps in order.
#pragma unroll
  for (int i = 0; i < MMI_SEARCH_MAX_MODALITIES; ++i) {
    float v = st.mass[i];
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(kFullMask, v, off);
    if (lane == 0) mass_shared[warp][i] = v;
  }
  if (p.value != nullptr) {
#pragma unroll
    for (int t = 0; t < kMaxDimsPerLane; ++t) {
      const int d = lane + 32 * t;
      if (d < p.head_dim) out_shared[warp][d] = st.out[t];
    }
  }
  __syncthreads();
  const int64_t row = static_cast<int64_t>(h) * p.rows + r;
  if (threadIdx.x < p.num_modalities) {
    float v = 0.0f;
    for (int w = 0; w < kWarps; ++w) v += mass_shared[w][threadIdx.x];
    p.kept_mass[row * p.num_modalities + threadIdx.x] = v;
  }
  if (p.value != nullptr)
    for (int d = threadIdx.x; d < p.head_dim; d += kThreads) {
      float v = 0.0f;
      for (int w = 0; w < kWarps; ++w) v += out_shared[w][d];
      p.kept_out[row * p.head_dim + d] = v;
    }
}

int device_error(mmi_error* err, const char* what, cudaError_t status) {
  return mmi_error_set(err, MMI_ERR_DEVICE, "%s: %s", what, cudaGetErrorString(status));
}

}  // namespace

extern "C" int mmi_search_score_cuda(const mmi_search_problem* problem, void* stream, mmi_error* err) {
  int status = mmi_search_check(problem, err);
  if (status != MMI_OK) return status;
  const mmi_search_problem& q = *problem;
  const mmi_sparse_index& ix = q.index;
  if (q.value != nullptr && q.head_dim > MMI_SEARCH_CUDA_MAX_HEAD_DIM)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED, "value: head_dim %lld exceeds the CUDA limit %d",
                         (long long)q.head_dim, MMI_SEARCH_CUDA_MAX_HEAD_DIM);
  if (q.heads > 65535 || q.rows > INT32_MAX || ix.max_ranges > INT32_MAX / 2 ||
      ix.max_columns > INT32_MAX || ix.num_q_blocks > INT32_MAX)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "probs: heads (%lld) must be <= 65535 and rows / capacities < 2^31 on CUDA",
                         (long long)q.heads);
  SearchParams p{};
  p.probs = q.probs;
  p.row_pos = q.row_pos;
  p.modality = q.modality;
  p.value = q.value;
  p.ranges = ix.kv_ranges;
  p.range_count = ix.kv_range_count;
  p.columns = ix.kv_columns;
  p.column_count = ix.kv_column_count;
  p.q_perm = ix.q_perm;
  p.k_perm = ix.k_perm;
  p.ranges_stride_h = ix.kv_ranges_stride_h;
  p.range_count_stride_h = ix.kv_range_count_stride_h;
  p.columns_stride_h = ix.kv_columns_stride_h;
  p.column_count_stride_h = ix.kv_column_count_stride_h;
  p.q_perm_stride_h = ix.q_perm_stride_h;
  p.k_perm_stride_h = ix.k_perm_stride_h;
  p.kept_mass = q.kept_mass;
  p.kept_out = q.kept_out;
  p.block_tiles = q.block_tiles;
  p.heads = static_cast<int>(q.heads);
  p.group = static_cast<int>(q.heads / q.kv_heads);
  p.rows = static_cast<int>(q.rows);
  p.seq = static_cast<int>(q.seq);
  p.num_modalities = static_cast<int>(q.num_modalities);
  p.block_q = static_cast<int>(ix.block_q);
  p.block_k = static_cast<int>(q.block_k);
  p.head_dim = q.value != nullptr ? static_cast<int>(q.head_dim) : 0;
  p.max_ranges = static_cast<int>(ix.max_ranges);
  p.max_columns = static_cast<int>(ix.max_columns);
  p.num_q_blocks = static_cast<int>(ix.num_q_blocks);
  cudaStream_t s = static_cast<cudaStream_t>(stream);

  const int64_t tile_tasks = q.heads * ix.num_q_blocks;
  const int64_t tile_blocks = (tile_tasks + kTileThreads - 1) / kTileThreads;
  if (tile_blocks > INT32_MAX)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED, "kv_ranges: too many (head, query block) pairs");
  block_tiles_kernel<<<static_cast<unsigned>(tile_blocks), kTileThreads, 0, s>>>(p);
  cudaError_t cuda_status = cudaGetLastError();
  if (cuda_status != cudaSuccess) return device_error(err, "block_tiles_kernel launch", cuda_status);
  if (q.rows > 0) {
    const dim3 grid(static_cast<unsigned>(q.rows), static_cast<unsigned>(q.heads));
    score_rows_kernel<<<grid, kThreads, 0, s>>>(p);
    cuda_status = cudaGetLastError();
    if (cuda_status != cudaSuccess) return device_error(err, "score_rows_kernel launch", cuda_status);
  }
  return MMI_OK;
}
