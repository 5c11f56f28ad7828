// Last-query estimation of vertical and slash scores on the GPU (semantics: csrc/core/mmi_estimate.h,
// reference: csrc/core/estimate_scores.c). Nothing of size last x Sk exists at any time.
//
// Work split: a CTA takes one (batch, kv head, group of its query heads, key segment). Each warp
// owns 16 estimation rows of one query head (its Q fragments stay in registers) and walks the
// segment's keys in chunks of 64 that the CTA streams through shared memory with cp.async
// (kStages deep). Per chunk a warp computes its 16 x 64 score tile with mma.sync m16n8k16.
//   pass 1: per row running max and sum of 2^(s - max) over the segment -> workspace [row][segment]
//   combine: per row log2-sum-exp over the segments -> workspace [row]
//   pass 2: p = 2^(s - lse) recomputed per tile; column sums go through shared memory to the head's
//           first warp, which stores the chunk's vertical scores (the CTA owns those keys). Diagonal
//           sums are gathered per warp in a shared ring indexed by distance; the head's first warp
//           adds the distances no later chunk can reach to slash_score with global atomics.
// Without slash_score (vertical scores only) pass 2 is a separate instantiation with no ring, no
// diagonal sums, no atomics and no slash memset; its column sums are the same code.
// Scores are in the log2 domain: s = (q . k) * scale * log2(e).
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "mmi_cuda_index.h"
#include "ptx_primitives.cuh"

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kChunkKeys = 64;       // keys per pipeline stage = width of a warp's score tile
constexpr int kStages = 3;           // cp.async pipeline depth
constexpr int kMaxWarps = 8;         // per CTA
constexpr int kThreads = kMaxWarps * 32;
constexpr int kRowsPerWarp = 16;     // one m16 tile of estimation rows per warp
constexpr int kWindow = 256;         // per-warp ring of diagonal partial sums (floats)
constexpr int kTargetCtas = 2048;    // enough CTAs for several waves on a large GPU
constexpr int kMinSegmentKeys = 256; // at least four chunks per CTA
constexpr int kCombineThreads = 256;
constexpr int64_t kMaxSeqK = INT32_MAX - 256;  // key arithmetic adds up to a chunk to positions
constexpr float kLog2e = 1.4426950408889634f;

struct EstimateParams {
  const uint16_t* q;  // [B, Hq, Sq, D], raw 16-bit storage
  int64_t q_stride_b, q_stride_h, q_stride_s;
  const uint16_t* k;  // [B, Hkv, Sk, D]
  int64_t k_stride_b, k_stride_h, k_stride_s;
  float* vertical;    // [B, Hq, Sk]
  float* slash;       // [B, Hq, Sk], or NULL (vertical scores only)
  float2* row_stats;  // [B * Hq * L, num_segments]: (max, sum of 2^(s - max)) per segment
  float* row_lse;     // [B * Hq * L]: log2-sum-exp of each row
  int q_heads, kv_heads, group, seq_k, last;
  int first_row;  // query_end - L: the first estimation row
  int a0;         // its absolute position first_row + Sk - Sq
  int key_end;    // a0 + L: keys at or beyond it are never attended
  int warps_per_head, heads_per_cta, segment_keys, num_segments;
  float scale_log2;
};

// PTX wrappers (cp.async, ldmatrix, m16n8k16 MMA, ex2/lg2) shared with the attention kernel.
using mmi_cuda::Bfloat16;
using mmi_cuda::Float16;
using mmi_cuda::cp_async_16;
using mmi_cuda::cp_async_commit;
using mmi_cuda::cp_async_wait;
using mmi_cuda::fast_exp2;
using mmi_cuda::fast_log2;
using mmi_cuda::ldmatrix_x4;
using mmi_cuda::shared_address;

// ---- Shared memory layout ---------------------------------------------------------------------

// Key rows are padded by 16 bytes: an odd number of 16-byte pieces per row makes the 8 row
// addresses of each ldmatrix phase hit distinct bank groups.
template <int kHeadDim>
__host__ __device__ constexpr int row_elements() {
  return kHeadDim + 8;
}

template <int kHeadDim>
__host__ __device__ constexpr int stage_bytes() {
  return kChunkKeys * row_elements<kHeadDim>() * 2;
}

// The kernel's variants: pass 1, and pass 2 with or without the diagonal (slash) sums.
enum class Pass { kRowStats, kVertical, kVerticalSlash };

// Pass 2 adds column partials [2 parities][kMaxWarps][64], and with slash sums the rings
// [kMaxWarps][kWindow].
template <int kHeadDim, Pass kPass>
__host__ __device__ constexpr int shared_bytes() {
  return kStages * stage_bytes<kHeadDim>() +
         (kPass != Pass::kRowStats ? 2 * kMaxWarps * kChunkKeys * 4 : 0) +
         (kPass == Pass::kVerticalSlash ? kMaxWarps * kWindow * 4 : 0);
}

// ---- Tile pieces ------------------------------------------------------------------------------

// The 64 x D key chunk starting at key0 into a stage; keys at or beyond key_limit are zeros.
template <int kHeadDim>
__device__ __forceinline__ void load_key_chunk(uint16_t* stage, const uint16_t* k_head,
                                               int64_t k_stride_s, int key0, int key_limit) {
  constexpr int kPieces = kHeadDim / 8;
  for (int idx = threadIdx.x; idx < kChunkKeys * kPieces; idx += blockDim.x) {
    const int row = idx / kPieces;
    const int piece = idx - row * kPieces;
    const int key = key0 + row;
    const bool valid = key < key_limit;
    const uint16_t* src = k_head + (valid ? key * k_stride_s + piece * 8 : 0);
    cp_async_16(shared_address(stage + row * row_elements<kHeadDim>() + piece * 8), src, valid);
  }
}

__device__ __forceinline__ uint32_t load_pair(const uint16_t* element) {
  return static_cast<uint32_t>(__ldg(element)) | (static_cast<uint32_t>(__ldg(element + 1)) << 16);
}

// A fragments of rows row0 + [0, 16) of one head (rows >= last are zeros):
// a0 = (g, 2c), a1 = (g + 8, 2c), a2 = (g, 2c + 8), a3 = (g + 8, 2c + 8) within each 16-wide slice.
template <int kHeadDim>
__device__ __forceinline__ void load_query_fragments(uint32_t (&frag)[kHeadDim / 16][4],
                                                     const uint16_t* q_head, int64_t q_stride_s,
                                                     int first_row, int row0, int last, int lane) {
  const int g = lane >> 2, c = lane & 3;
#pragma unroll
  for (int ks = 0; ks < kHeadDim / 16; ++ks)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int row = row0 + g + 8 * (j & 1);
      const int col = 16 * ks + 2 * c + 8 * (j >> 1);
      frag[ks][j] = row < last ? load_pair(q_head + (first_row + row) * q_stride_s + col) : 0u;
    }
}

// acc[t] = the warp's 16 rows x keys [8t, 8t + 8) of the chunk in `stage`:
// acc[t][0..1] = row g, keys 8t + 2c + {0, 1}; acc[t][2..3] = row g + 8, same keys.
template <int kHeadDim, class Mma>
__device__ __forceinline__ void score_tile(float (&acc)[8][4],
                                           const uint32_t (&q_frag)[kHeadDim / 16][4],
                                           const uint16_t* stage, int lane) {
  constexpr int kRow = row_elements<kHeadDim>();
  // ldmatrix.x4 matrix m = lane / 8: keys 8 * (m / 2) + lane % 8, dims 8 * (m % 2) of a 16-key pair,
  // giving b0, b1 of n-tile 2 * pair and b0, b1 of n-tile 2 * pair + 1.
  const int m = lane >> 3;
  const uint32_t lane_address =
      shared_address(stage) + ((8 * (m >> 1) + (lane & 7)) * kRow + 8 * (m & 1)) * 2;
#pragma unroll
  for (int t = 0; t < 8; ++t)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[t][j] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < kHeadDim / 16; ++ks)
#pragma unroll
    for (int pair = 0; pair < 4; ++pair) {
      uint32_t b[4];
      ldmatrix_x4(b, lane_address + (16 * pair * kRow + 16 * ks) * 2);
      Mma::mma(acc[2 * pair], q_frag[ks], b[0], b[1]);
      Mma::mma(acc[2 * pair + 1], q_frag[ks], b[2], b[3]);
    }
}

// Scales to the log2 domain and masks keys after each row's position with -inf.
__device__ __forceinline__ void scale_and_mask(float (&acc)[8][4], float scale_log2, int key0,
                                               int row_position, bool needs_mask, int lane) {
  const int g = lane >> 2, c = lane & 3;
#pragma unroll
  for (int t = 0; t < 8; ++t)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float s = acc[t][j] * scale_log2;
      if (needs_mask && key0 + 8 * t + 2 * c + (j & 1) > row_position + g + 8 * (j >> 1))
        s = -INFINITY;
      acc[t][j] = s;
    }
}

// Pass 1: folds the tile into the running (max, sum of 2^(s - max)) of rows g and g + 8. The max is
// kept equal across the 4 lanes of a row; the sums stay per lane until the end.
__device__ __forceinline__ void update_row_stats(const float (&acc)[8][4], float (&row_max)[2],
                                                 float (&row_sum)[2]) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float tile_max = -INFINITY;
#pragma unroll
    for (int t = 0; t < 8; ++t)
      tile_max = fmaxf(tile_max, fmaxf(acc[t][2 * half], acc[t][2 * half + 1]));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 2));
    const float new_max = fmaxf(row_max[half], tile_max);
    const float reference = new_max == -INFINITY ? 0.0f : new_max;
    float sum = 0.0f;
#pragma unroll
    for (int t = 0; t < 8; ++t)
      sum += fast_exp2(acc[t][2 * half] - reference) + fast_exp2(acc[t][2 * half + 1] - reference);
    row_sum[half] = row_sum[half] * fast_exp2(row_max[half] - reference) + sum;
    row_max[half] = new_max;
  }
}

// Column sums of the tile over its 16 rows, reduce-scattered so that lane l ends with keys 2l, 2l+1.
// v[2t + e] is the lane's partial for key 8t + 2c + e; lanes of equal c are summed over g.
__device__ __forceinline__ float2 reduce_scatter_columns(const float (&v)[16], int lane) {
  const bool upper4 = (lane & 16) != 0, upper3 = (lane & 8) != 0, upper2 = (lane & 4) != 0;
  float w[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float send = upper4 ? v[i] : v[8 + i];
    w[i] = (upper4 ? v[8 + i] : v[i]) + __shfl_xor_sync(kFullMask, send, 16);
  }
  float x[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float send = upper3 ? w[i] : w[4 + i];
    x[i] = (upper3 ? w[4 + i] : w[i]) + __shfl_xor_sync(kFullMask, send, 8);
  }
  float y[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const float send = upper2 ? x[i] : x[2 + i];
    y[i] = (upper2 ? x[2 + i] : x[i]) + __shfl_xor_sync(kFullMask, send, 4);
  }
  return make_float2(y[0], y[1]);
}

// Sums v over the lanes that share lambda = g - 2c, i.e. lanes l, l + 9, l + 18, l + 27 along
// (g + 2k, c + k); the sum lands in the chain's first lane (g < 2 or c == 0).
template <int kCount>
__device__ __forceinline__ void reduce_lambda_chains(float (&v)[kCount], int lane) {
  const int g = lane >> 2, c = lane & 3;
  const bool has_second_next = g <= 3 && c <= 1;  // lane + 18 is (g + 4, c + 2)
  const bool has_next = g <= 5 && c <= 2;         // lane + 9 is (g + 2, c + 1)
#pragma unroll
  for (int i = 0; i < kCount; ++i) {
    const float far = __shfl_down_sync(kFullMask, v[i], 18);
    if (has_second_next) v[i] += far;
  }
#pragma unroll
  for (int i = 0; i < kCount; ++i) {
    const float near = __shfl_down_sync(kFullMask, v[i], 9);
    if (has_next) v[i] += near;
  }
}

// Pass 2 diagonal sums of the tile into the warp's ring. Element (t, j) sits at distance
// d = base + lambda - 8u - (j & 1) with base = a0 + row0 - key0, lambda = g - 2c, u = t - (j >> 1)
// in [-1, 7]. Lanes sum per (u, parity), chains of equal lambda are reduced, then each chain's first
// lane adds its value; one (u, parity) per step keeps the lanes' ring addresses distinct.
__device__ __forceinline__ void accumulate_diagonals(const float (&p)[8][4], float* ring, int base,
                                                     int lane) {
  const int g = lane >> 2, c = lane & 3;
  float even[9], odd[9];
#pragma unroll
  for (int u = 0; u < 9; ++u) even[u] = odd[u] = 0.0f;
#pragma unroll
  for (int t = 0; t < 8; ++t) {
    even[t + 1] += p[t][0];
    odd[t + 1] += p[t][1];
    even[t] += p[t][2];
    odd[t] += p[t][3];
  }
  reduce_lambda_chains(even, lane);
  reduce_lambda_chains(odd, lane);
  const bool chain_head = g < 2 || c == 0;
  const int d0 = base + g - 2 * c + 8;  // distance of even[0] (u = -1)
#pragma unroll
  for (int u = 0; u < 9; ++u) {
    if (chain_head) ring[(d0 - 8 * u) & (kWindow - 1)] += even[u];
    __syncwarp();
  }
#pragma unroll
  for (int u = 0; u < 9; ++u) {
    if (chain_head) ring[(d0 - 8 * u - 1) & (kWindow - 1)] += odd[u];
    __syncwarp();
  }
}

// Adds the head's ring entries of distances [first, first + count) to slash_row and clears them.
__device__ __forceinline__ void flush_distances(float* rings, int leader, int warps_per_head,
                                                int first, int count, float* slash_row, int seq_k,
                                                int lane) {
  for (int r = lane; r < count; r += 32) {
    const int d = first + r;
    float sum = 0.0f;
    for (int w = 0; w < warps_per_head; ++w) {
      float* entry = rings + (leader + w) * kWindow + (d & (kWindow - 1));
      sum += *entry;
      *entry = 0.0f;
    }
    if (sum != 0.0f && d >= 0 && d < seq_k) atomicAdd(slash_row + d, sum);
  }
}

// The head's first warp finishes chunk key0: its vertical scores, and with slash sums the distances
// it completed (no later key can reach a distance >= a0 - key0).
template <bool kSlash>
__device__ __forceinline__ void finish_chunk(const EstimateParams& p, const float* column_parts,
                                             float* rings, int leader, int parity, int key0,
                                             float* vertical_row, float* slash_row, int lane) {
  float2 sum = make_float2(0.0f, 0.0f);
  for (int w = 0; w < p.warps_per_head; ++w) {
    const float2 part = reinterpret_cast<const float2*>(
        column_parts + (parity * kMaxWarps + leader + w) * kChunkKeys)[lane];
    sum.x += part.x;
    sum.y += part.y;
  }
  const int key = key0 + 2 * lane;
  if (key < p.key_end) vertical_row[key] = sum.x;
  if (key + 1 < p.key_end) vertical_row[key + 1] = sum.y;
  if constexpr (kSlash)
    flush_distances(rings, leader, p.warps_per_head, p.a0 - key0, kChunkKeys, slash_row, p.seq_k,
                    lane);
}

// ---- Kernels ----------------------------------------------------------------------------------

// Pass::kRowStats: pass 1 (row statistics); kVertical / kVerticalSlash: pass 2 (column sums, and
// diagonal sums for the latter).
template <int kHeadDim, class Mma, Pass kPass>
__global__ void __launch_bounds__(kThreads, 2) estimate_pass_kernel(const EstimateParams p) {
  constexpr bool kProbabilities = kPass != Pass::kRowStats;
  constexpr bool kSlash = kPass == Pass::kVerticalSlash;
  extern __shared__ __align__(16) unsigned char shared[];
  uint16_t* stages = reinterpret_cast<uint16_t*>(shared);  // [kStages][64][kHeadDim + 8]
  float* column_parts =
      reinterpret_cast<float*>(shared + kStages * stage_bytes<kHeadDim>());  // [2][kMaxWarps][64]
  // [kMaxWarps][kWindow], only with slash sums
  float* rings = kSlash ? column_parts + 2 * kMaxWarps * kChunkKeys : nullptr;
  constexpr int kStageElements = kChunkKeys * row_elements<kHeadDim>();

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int b = blockIdx.z / p.kv_heads, kv_head = blockIdx.z % p.kv_heads;
  const int segment = blockIdx.y;
  const int head_in_group = blockIdx.x * p.heads_per_cta + warp / p.warps_per_head;
  const bool active = head_in_group < p.group;  // the last group of heads may be short
  const int head = kv_head * p.group + head_in_group;
  const int row0 = kRowsPerWarp * (warp % p.warps_per_head);
  const bool leader = active && warp % p.warps_per_head == 0;
  const int leader_warp = warp - warp % p.warps_per_head;
  const int seg_begin = segment * p.segment_keys;
  const int seg_end = min(seg_begin + p.segment_keys, p.key_end);
  const int num_chunks = (seg_end - seg_begin + kChunkKeys - 1) / kChunkKeys;
  const int64_t head_rows = (static_cast<int64_t>(b) * p.q_heads + head) * p.last;
  const uint16_t* k_head = p.k + b * p.k_stride_b + kv_head * p.k_stride_h;

  uint32_t q_frag[kHeadDim / 16][4];
  if (active)
    load_query_fragments<kHeadDim>(q_frag, p.q + b * p.q_stride_b + head * p.q_stride_h,
                                   p.q_stride_s, p.first_row, row0, p.last, lane);
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};
  float row_lse[2] = {INFINITY, INFINITY};  // padded rows get probability 0
  float* vertical_row = nullptr;
  float* slash_row = nullptr;
  if (kProbabilities && active) {
    const int g = lane >> 2;
    if (row0 + g < p.last) row_lse[0] = p.row_lse[head_rows + row0 + g];
    if (row0 + g + 8 < p.last) row_lse[1] = p.row_lse[head_rows + row0 + g + 8];
    vertical_row = p.vertical + (static_cast<int64_t>(b) * p.q_heads + head) * p.seq_k;
    if (kSlash) slash_row = p.slash + (static_cast<int64_t>(b) * p.q_heads + head) * p.seq_k;
  }
  if constexpr (kSlash) {
    for (int i = lane; i < kWindow; i += 32) rings[warp * kWindow + i] = 0.0f;
  }

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_chunks)
      load_key_chunk<kHeadDim>(stages + s * kStageElements, k_head, p.k_stride_s,
                               seg_begin + s * kChunkKeys, seg_end);
    cp_async_commit();
  }
  for (int i = 0; i < num_chunks; ++i) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // chunk i landed for everyone; every warp is done with chunk i - 1
    if (kProbabilities && leader && i > 0)
      finish_chunk<kSlash>(p, column_parts, rings, leader_warp, (i - 1) & 1,
                           seg_begin + (i - 1) * kChunkKeys, vertical_row, slash_row, lane);
    const int next = i + kStages - 1;
    if (next < num_chunks)
      load_key_chunk<kHeadDim>(stages + (next % kStages) * kStageElements, k_head, p.k_stride_s,
                               seg_begin + next * kChunkKeys, seg_end);
    cp_async_commit();
    if (!active) continue;

    const int key0 = seg_begin + i * kChunkKeys;
    float acc[8][4];
    score_tile<kHeadDim, Mma>(acc, q_frag, stages + (i % kStages) * kStageElements, lane);
    const int row_position = p.a0 + row0;
    scale_and_mask(acc, p.scale_log2, key0, row_position,
                   key0 + kChunkKeys - 1 > row_position, lane);
    if (!kProbabilities) {
      update_row_stats(acc, row_max, row_sum);
    } else {
#pragma unroll
      for (int t = 0; t < 8; ++t)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[t][j] = fast_exp2(acc[t][j] - row_lse[j >> 1]);
      float columns[16];
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        columns[2 * t] = acc[t][0] + acc[t][2];
        columns[2 * t + 1] = acc[t][1] + acc[t][3];
      }
      reinterpret_cast<float2*>(column_parts + ((i & 1) * kMaxWarps + warp) * kChunkKeys)[lane] =
          reduce_scatter_columns(columns, lane);
      if constexpr (kSlash)
        accumulate_diagonals(acc, rings + warp * kWindow, p.a0 + row0 - key0, lane);
    }
  }

  if (!kProbabilities) {
    if (active) {
      const int g = lane >> 2, c = lane & 3;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float sum = row_sum[half];
        sum += __shfl_xor_sync(kFullMask, sum, 1);
        sum += __shfl_xor_sync(kFullMask, sum, 2);
        const int row = row0 + g + 8 * half;
        if (c == 0 && row < p.last)
          p.row_stats[(head_rows + row) * p.num_segments + segment] =
              make_float2(row_max[half], sum);
      }
    }
  } else {
    __syncthreads();
    if (leader) {
      const int key0 = seg_begin + (num_chunks - 1) * kChunkKeys;
      finish_chunk<kSlash>(p, column_parts, rings, leader_warp, (num_chunks - 1) & 1, key0,
                           vertical_row, slash_row, lane);
      // Distances below a0 - key0 that the last chunk reached (down to a0 - key0 - 63).
      if constexpr (kSlash)
        flush_distances(rings, leader_warp, p.warps_per_head, p.a0 - key0 - (kChunkKeys - 1),
                        kChunkKeys - 1, slash_row, p.seq_k, lane);
    }
  }
}

// Per row: log2-sum-exp over the segments' (max, sum). One warp per row.
__global__ void __launch_bounds__(kCombineThreads) combine_row_stats_kernel(
    const float2* row_stats, int num_segments, int64_t rows, float* row_lse) {
  const int64_t row = (blockIdx.x * static_cast<int64_t>(kCombineThreads) + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float2* stats = row_stats + row * num_segments;
  float row_max = -INFINITY;
  for (int s = lane; s < num_segments; s += 32) row_max = fmaxf(row_max, stats[s].x);
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    row_max = fmaxf(row_max, __shfl_xor_sync(kFullMask, row_max, offset));
  const float reference = row_max == -INFINITY ? 0.0f : row_max;
  float sum = 0.0f;
  for (int s = lane; s < num_segments; s += 32) {
    const float2 st = stats[s];
    sum += st.y * fast_exp2(st.x - reference);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(kFullMask, sum, offset);
  if (lane == 0) row_lse[row] = sum > 0.0f ? reference + fast_log2(sum) : INFINITY;
}

// ---- Host side --------------------------------------------------------------------------------

struct Plan {
  int batch, group, warps_per_head, heads_per_cta, sub_groups;
  int key_end, segment_keys, num_segments;
  int64_t rows;  // B * Hq * L
  size_t lse_offset, workspace_bytes;
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

size_t align_256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Assumes mmi_estimate_check passed and last <= 64.
Plan make_plan(const mmi_estimate_problem& p) {
  Plan plan;
  plan.batch = static_cast<int>(p.batch);
  plan.group = static_cast<int>(p.q_heads / p.kv_heads);
  plan.warps_per_head = static_cast<int>(ceil_div(p.last, kRowsPerWarp));
  const int max_heads = kMaxWarps / plan.warps_per_head;
  plan.sub_groups = static_cast<int>(ceil_div(plan.group, max_heads));
  plan.heads_per_cta = static_cast<int>(ceil_div(plan.group, plan.sub_groups));
  plan.key_end = static_cast<int>(p.query_end + (p.seq_k - p.seq_q));
  const int64_t ctas_per_segment = p.batch * p.kv_heads * plan.sub_groups;
  int64_t segments = ceil_div(kTargetCtas, ctas_per_segment);
  const int64_t by_length = ceil_div(plan.key_end, kMinSegmentKeys);
  if (segments > by_length) segments = by_length;
  if (segments < 1) segments = 1;
  plan.segment_keys =
      static_cast<int>(ceil_div(ceil_div(plan.key_end, segments), kChunkKeys) * kChunkKeys);
  plan.num_segments = static_cast<int>(ceil_div(plan.key_end, plan.segment_keys));
  plan.rows = p.batch * p.q_heads * p.last;
  plan.lse_offset = align_256(sizeof(float2) * static_cast<size_t>(plan.rows) * plan.num_segments);
  plan.workspace_bytes = plan.lse_offset + align_256(sizeof(float) * static_cast<size_t>(plan.rows));
  return plan;
}

const char* dtype_name(mmi_dtype dtype) {
  switch (dtype) {
    case MMI_DTYPE_FLOAT32: return "float32";
    case MMI_DTYPE_FLOAT16: return "float16";
    case MMI_DTYPE_BFLOAT16: return "bfloat16";
  }
  return "unknown";
}

int device_error(cudaError_t status, const char* what, mmi_error* err) {
  return mmi_error_set(err, MMI_ERR_DEVICE, "%s: %s", what, cudaGetErrorString(status));
}

int check_cuda_problem(const mmi_estimate_problem* p, mmi_error* err) {
  int status = mmi_estimate_check(p, err);
  if (status != MMI_OK) return status;
  if (p->q == nullptr || p->k == nullptr || p->vertical_score == nullptr)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER,
                         "q, k and vertical_score must be non-NULL (slash_score may be NULL)");
  if (p->dtype != MMI_DTYPE_FLOAT16 && p->dtype != MMI_DTYPE_BFLOAT16)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "q: dtype %s is not supported by the CUDA estimation (float16, bfloat16)",
                         dtype_name(p->dtype));
  if (p->head_dim != 64 && p->head_dim != 80 && p->head_dim != 96 && p->head_dim != 128)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "q: head_dim %lld is not supported by the CUDA estimation (64, 80, 96, 128)",
                         (long long)p->head_dim);
  if (p->last > MMI_ESTIMATE_CUDA_MAX_LAST)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "last must be <= %d for the CUDA estimation, got %lld",
                         MMI_ESTIMATE_CUDA_MAX_LAST, (long long)p->last);
  if (p->seq_k > kMaxSeqK)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "k: sequence length %lld exceeds the CUDA estimation's limit %lld",
                         (long long)p->seq_k, (long long)kMaxSeqK);
  if (reinterpret_cast<uintptr_t>(p->k) % 16 != 0 || p->k_stride_b % 8 != 0 ||
      p->k_stride_h % 8 != 0 || p->k_stride_s % 8 != 0)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "k: rows must be 16-byte aligned for the CUDA estimation (pointer, and "
                         "batch/head/seq strides (%lld, %lld, %lld) multiples of 8 elements)",
                         (long long)p->k_stride_b, (long long)p->k_stride_h,
                         (long long)p->k_stride_s);
  if (p->batch * p->kv_heads > 65535)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "k: batch x kv heads = %lld exceeds the CUDA estimation's limit 65535",
                         (long long)(p->batch * p->kv_heads));
  return MMI_OK;
}

template <int kHeadDim, class Mma, Pass kPass>
cudaError_t launch_pass(const EstimateParams& params, const Plan& plan, cudaStream_t stream) {
  constexpr int kShared = shared_bytes<kHeadDim, kPass>();
  const auto kernel = estimate_pass_kernel<kHeadDim, Mma, kPass>;
  cudaError_t status =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kShared);
  if (status != cudaSuccess) return status;
  // Sub-groups fastest: the CTAs that read the same key chunks run side by side (L2 reuse).
  const dim3 grid(static_cast<unsigned>(plan.sub_groups), static_cast<unsigned>(plan.num_segments),
                  static_cast<unsigned>(plan.batch * params.kv_heads));
  const int threads = plan.heads_per_cta * plan.warps_per_head * 32;
  kernel<<<grid, threads, kShared, stream>>>(params);
  return cudaGetLastError();
}

template <int kHeadDim, class Mma>
int run_passes(const EstimateParams& params, const Plan& plan, cudaStream_t stream,
               mmi_error* err) {
  cudaError_t status = launch_pass<kHeadDim, Mma, Pass::kRowStats>(params, plan, stream);
  if (status != cudaSuccess) return device_error(status, "estimation pass 1 launch", err);
  const int64_t combine_blocks = ceil_div(plan.rows * 32, kCombineThreads);
  combine_row_stats_kernel<<<static_cast<unsigned>(combine_blocks), kCombineThreads, 0, stream>>>(
      params.row_stats, plan.num_segments, plan.rows, params.row_lse);
  status = cudaGetLastError();
  if (status != cudaSuccess) return device_error(status, "estimation combine launch", err);
  status = params.slash != nullptr
               ? launch_pass<kHeadDim, Mma, Pass::kVerticalSlash>(params, plan, stream)
               : launch_pass<kHeadDim, Mma, Pass::kVertical>(params, plan, stream);
  if (status != cudaSuccess) return device_error(status, "estimation pass 2 launch", err);
  return MMI_OK;
}

template <class Mma>
int dispatch_head_dim(int64_t head_dim, const EstimateParams& params, const Plan& plan,
                      cudaStream_t stream, mmi_error* err) {
  switch (head_dim) {
    case 64: return run_passes<64, Mma>(params, plan, stream, err);
    case 80: return run_passes<80, Mma>(params, plan, stream, err);
    case 96: return run_passes<96, Mma>(params, plan, stream, err);
    default: return run_passes<128, Mma>(params, plan, stream, err);
  }
}

}  // namespace

extern "C" size_t mmi_estimate_cuda_workspace_bytes(const mmi_estimate_problem* problem) {
  mmi_error err;
  if (mmi_estimate_check(problem, &err) != MMI_OK || problem->last > MMI_ESTIMATE_CUDA_MAX_LAST)
    return 0;
  return make_plan(*problem).workspace_bytes;
}

extern "C" int mmi_estimate_vertical_slash_scores_cuda(const mmi_estimate_problem* problem,
                                                       void* workspace, size_t workspace_bytes,
                                                       void* stream, mmi_error* err) {
  mmi_error_clear(err);
  int status = check_cuda_problem(problem, err);
  if (status != MMI_OK) return status;
  const mmi_estimate_problem& p = *problem;
  const Plan plan = make_plan(p);
  if (workspace == nullptr || workspace_bytes < plan.workspace_bytes)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "workspace: need %zu bytes (mmi_estimate_cuda_workspace_bytes), got %zu%s",
                         plan.workspace_bytes, workspace_bytes,
                         workspace == nullptr ? " (NULL)" : "");
  if (reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "workspace must be 16-byte aligned");

  int device = 0;
  cudaError_t cuda_status = cudaGetDevice(&device);
  if (cuda_status != cudaSuccess) return device_error(cuda_status, "cudaGetDevice", err);
  int major = 0;
  cuda_status = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (cuda_status != cudaSuccess) return device_error(cuda_status, "cudaDeviceGetAttribute", err);
  if (major < 8)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "device %d has compute capability %d.x; the CUDA estimation needs 8.0 or "
                         "newer",
                         device, major);

  const cudaStream_t cuda_stream = static_cast<cudaStream_t>(stream);
  const size_t plane = static_cast<size_t>(p.seq_k) * sizeof(float);
  const size_t heads_total = static_cast<size_t>(p.batch * p.q_heads);
  // slash_score is accumulated with atomics; vertical_score is stored for keys < key_end only.
  if (p.slash_score != nullptr) {
    cuda_status = cudaMemsetAsync(p.slash_score, 0, plane * heads_total, cuda_stream);
    if (cuda_status != cudaSuccess) return device_error(cuda_status, "cudaMemsetAsync(slash)", err);
  }
  if (plan.key_end < p.seq_k) {
    cuda_status = cudaMemset2DAsync(p.vertical_score + plan.key_end, plane, 0,
                                    static_cast<size_t>(p.seq_k - plan.key_end) * sizeof(float),
                                    heads_total, cuda_stream);
    if (cuda_status != cudaSuccess)
      return device_error(cuda_status, "cudaMemset2DAsync(vertical)", err);
  }

  EstimateParams params;
  params.q = static_cast<const uint16_t*>(p.q);
  params.q_stride_b = p.q_stride_b;
  params.q_stride_h = p.q_stride_h;
  params.q_stride_s = p.q_stride_s;
  params.k = static_cast<const uint16_t*>(p.k);
  params.k_stride_b = p.k_stride_b;
  params.k_stride_h = p.k_stride_h;
  params.k_stride_s = p.k_stride_s;
  params.vertical = p.vertical_score;
  params.slash = p.slash_score;  // NULL: the vertical-only pass 2
  params.row_stats = static_cast<float2*>(workspace);
  params.row_lse = reinterpret_cast<float*>(static_cast<unsigned char*>(workspace) + plan.lse_offset);
  params.q_heads = static_cast<int>(p.q_heads);
  params.kv_heads = static_cast<int>(p.kv_heads);
  params.group = plan.group;
  params.seq_k = static_cast<int>(p.seq_k);
  params.last = static_cast<int>(p.last);
  params.first_row = static_cast<int>(p.query_end - p.last);
  params.a0 = static_cast<int>(p.query_end - p.last + (p.seq_k - p.seq_q));
  params.key_end = plan.key_end;
  params.warps_per_head = plan.warps_per_head;
  params.heads_per_cta = plan.heads_per_cta;
  params.segment_keys = plan.segment_keys;
  params.num_segments = plan.num_segments;
  params.scale_log2 = p.scale * kLog2e;

  if (p.dtype == MMI_DTYPE_BFLOAT16)
    return dispatch_head_dim<Bfloat16>(p.head_dim, params, plan, cuda_stream, err);
  return dispatch_head_dim<Float16>(p.head_dim, params, plan, cuda_stream, err);
}
