// Hopper (sm_90a) variant of the block-sparse attention forward: same semantics, index walk and
// robustness rules as sparse_attention_kernel.cuh, with the two matrix products on wgmma.
//
// CTA = one (batch, query head, 128-row query block), 256 threads = 2 warpgroups; warpgroup w owns
// query rows [64 w, 64 w + 64) (warp w' of it: rows 16 w' .. 16 w' + 15, thread rows g and g + 8
// with g = lane / 4). Key tiles are the 64-slot tiles of key_tile_cursor.cuh.
//
// Pipeline (not warp-specialised; one __syncthreads per key tile, as the mma.sync kernel; three
// K/V buffers):
//   prologue  the position warp (warp 0) locates key tiles 0 and 1; Q rows and K/V tile 0 are
//             gathered with 16-byte cp.async into 128-byte-swizzled tiles (wgmma_primitives.cuh).
//   tile i    wait for this thread's copies, fence.proxy.async (cp.async writes are generic-proxy,
//             wgmma reads are async-proxy), barrier; every thread issues the K/V copies of tile
//             i + 1 into the next buffer while warp 0 advances the walk; then each warpgroup
//             (FA3-style intra-warpgroup overlap):
//               S(i)[64x64] = Q K^T       wgmma m64n64k16, A = Q (smem), B = K (smem), K-major
//               O[64xD] += P(i-1) V(i-1)  wgmma m64nDk16, A = P (registers, bf16/fp16 fragments
//                                         converted from S), B = V (smem, MN-major: [key][d])
//             wait for S(i) only; mask (only when the tile's max key position exceeds the
//             warpgroup's min row limit) and online softmax in the log2 domain on the float32
//             fragments while P(i-1) V(i-1) runs; wait for it, rescale O, convert S(i) to P(i).
//             A tile that no row of the warpgroup may attend is skipped (warpgroup-uniform test):
//             it only issues the pending P V. The last P V is issued after the loop.
//   epilogue  normalise, stage through the (swizzled) Q tile, scatter rows to their original
//             positions with 16-byte stores; lse; rows without keys get zeros and -inf.
// Occupancy: D = 64 runs two CTAs per SM (122 registers); D = 128 needs 154 registers (at 128,
// ptxas spills and serialises the wgmmas), so one CTA per SM. An earlier two-buffer loop without
// the overlap (S, softmax, P V in sequence) was measured slower on an H200 and removed. Next steps
// for speed: 128-key tiles, a producer warpgroup with setmaxnreg.
#pragma once

#include <cfloat>
#include <climits>
#include <cmath>
#include <cstdint>

#include "cta_work.cuh"
#include "key_tile_cursor.cuh"
#include "mmi_attention.h"
#include "ptx_primitives.cuh"
#include "sm90/wgmma_ops.cuh"
#include "sm90/wgmma_primitives.cuh"

namespace mmi_cuda {
namespace sm90 {

template <int kHeadDim_>
struct Sm90Traits {
  static constexpr int kHeadDim = kHeadDim_;
  // K/V buffers: computed tile, prefetched tile, and the V of the tile whose P V is still in
  // flight.
  static constexpr int kStages = 3;
  static constexpr int kBlockQ = 128;
  static constexpr int kBlockK = kKeyTile;  // 64 key slots per tile
  static constexpr int kThreads = 256;      // 2 warpgroups
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kRowsPerWarpGroup = 64;
  static constexpr int kKSteps = kHeadDim / 16;     // k16 steps of Q K^T
  static constexpr int kPvSteps = kBlockK / 16;     // k16 steps of P V
  static constexpr int kScoreRegs = kBlockK / 2;    // m64n64 float32 accumulator per thread
  static constexpr int kOutRegs = kHeadDim / 2;     // m64nD float32 accumulator per thread
  static constexpr int kChunksPerRow = kHeadDim / 8;
  static constexpr int kRowsPerPass = kThreads / kChunksPerRow;  // gather rows per pass
  // D = 128 needs more than the 128 registers of two CTAs per SM (64 output + 32 score + 16 P
  // registers live across the wgmma): one CTA per SM, up to 255 registers.
  static constexpr int kMinBlocksPerSm = kHeadDim == 128 ? 1 : 2;
  static_assert(kHeadDim == 64 || kHeadDim == 128, "swizzled tiles of 64-element blocks");
  static_assert(kBlockK == 64, "S is one m64n64 wgmma tile");
  static_assert(kRowsPerPass % 8 == 0, "a thread's rows keep their swizzle phase");
};

template <class Traits>
struct Sm90Shared {
  static constexpr int kTileQ = Traits::kBlockQ * Traits::kHeadDim;
  static constexpr int kTileK = Traits::kBlockK * Traits::kHeadDim;

  // Swizzled tiles first: the structure is placed at a 1024-byte aligned address and every tile
  // size is a multiple of 1024 bytes.
  uint16_t q[kTileQ];     // [128 rows, D]; reused as the output staging tile
  uint16_t k[Traits::kStages][kTileK];  // ring of [64 keys, D] tiles
  uint16_t v[Traits::kStages][kTileK];
  KeyTileMeta tile_meta[3];  // ring: computed (i), loaded (i + 1), located (i + 2)
  int staged_pos[3][kKeyTile];
  int key_pos[3][kKeyTile];
  int query_pos[Traits::kBlockQ];
  int2 warp_limits[Traits::kWarps];
  KeySource source;
  KeyCursor cursor;
  const char* key_columns[Traits::kChunksPerRow];    // K of this (b, kv head) + chunk * 16 bytes
  const char* value_columns[Traits::kChunksPerRow];  // same for V

  static_assert(sizeof(uint16_t) * kTileQ % kSwizzleAtomBytes == 0, "aligned tiles");
  static_assert(sizeof(uint16_t) * kTileK % kSwizzleAtomBytes == 0, "aligned tiles");
};

// Dynamic shared memory requested per CTA: the structure plus the slack to align it to 1024 bytes.
template <class Traits>
constexpr int sm90_shared_bytes() {
  return static_cast<int>(sizeof(Sm90Shared<Traits>)) + kSwizzleAtomBytes;
}

#if defined(__CUDACC__)

__device__ __forceinline__ const char* sm90_row_address(const char* base, int row,
                                                        uint32_t stride_bytes) {
  return base + static_cast<uint64_t>(static_cast<uint32_t>(row)) * stride_bytes;
}

// Copies kRows rows (row r from rows + pos[r] * stride_bytes; zero-filled and never read when
// pos[r] is outside [0, seq)) into the swizzled tile at tile_address. Thread -> (row, chunk):
// kChunksPerRow consecutive threads copy one row.
template <class Traits, int kRows>
__device__ __forceinline__ void sm90_gather_rows(uint32_t tile_address, const char* rows,
                                                 uint32_t stride_bytes, const int* pos, int seq,
                                                 int tid) {
  constexpr int kPass = Traits::kRowsPerPass;
  static_assert(kRows % kPass == 0, "whole passes");
  const int chunk = tid % Traits::kChunksPerRow;
  const int row = tid / Traits::kChunksPerRow;
  const uint32_t address = tile_address + swizzled_chunk_offset(kRows, row, chunk);
  const char* column = rows + chunk * 16;
#pragma unroll
  for (int i = 0; i < kRows / kPass; ++i) {
    const int p = pos[row + i * kPass];
    const bool valid = static_cast<unsigned>(p) < static_cast<unsigned>(seq);
    cp_async_16(address + i * kPass * kSwizzleRowBytes,
                sm90_row_address(column, valid ? p : 0, stride_bytes), valid);
  }
}

// Flips the sign of the chunks this thread copied with sm90_gather_rows, after they landed.
template <class Traits, int kRows>
__device__ __forceinline__ void sm90_negate_rows(unsigned char* tile, int tid) {
  constexpr int kPass = Traits::kRowsPerPass;
  const int chunk = tid % Traits::kChunksPerRow;
  const int row = tid / Traits::kChunksPerRow;
  unsigned char* base = tile + swizzled_chunk_offset(kRows, row, chunk);
#pragma unroll
  for (int i = 0; i < kRows / kPass; ++i) {
    uint4* c = reinterpret_cast<uint4*>(base + i * kPass * kSwizzleRowBytes);
    uint4 bits = *c;
    bits.x ^= 0x80008000u;
    bits.y ^= 0x80008000u;
    bits.z ^= 0x80008000u;
    bits.w ^= 0x80008000u;
    *c = bits;
  }
}

// K and V rows of one key tile (same positions).
template <class Traits>
__device__ __forceinline__ void sm90_gather_key_tile(uint32_t k_tile, uint32_t v_tile,
                                                     const char* const* key_columns,
                                                     uint32_t k_stride_bytes,
                                                     const char* const* value_columns,
                                                     uint32_t v_stride_bytes, const int* key_pos,
                                                     int seq_k, int tid) {
  constexpr int kRows = Traits::kBlockK;
  constexpr int kPass = Traits::kRowsPerPass;
  static_assert(kRows % kPass == 0, "whole passes");
  const int chunk = tid % Traits::kChunksPerRow;
  const int row = tid / Traits::kChunksPerRow;
  const char* k_column = key_columns[chunk];
  const char* v_column = value_columns[chunk];
  const uint32_t offset = swizzled_chunk_offset(kRows, row, chunk);
#pragma unroll
  for (int i = 0; i < kRows / kPass; ++i) {
    const int p = key_pos[row + i * kPass];
    const bool valid = static_cast<unsigned>(p) < static_cast<unsigned>(seq_k);
    const int r = valid ? p : 0;
    const uint32_t step = offset + i * kPass * kSwizzleRowBytes;
    cp_async_16(k_tile + step, sm90_row_address(k_column, r, k_stride_bytes), valid);
    cp_async_16(v_tile + step, sm90_row_address(v_column, r, v_stride_bytes), valid);
  }
}

// Same rule as RowLimits (warp_attention.cuh): key position j is allowed iff j <= limit.
__device__ __forceinline__ int sm90_row_limit(int query_pos, int causal_offset, bool causal) {
  return query_pos < 0 ? -1 : (causal ? query_pos + causal_offset : kNoKey - 1);
}

// This thread's two row limits (rows 16 warp + 8 hf + g of the CTA's query block, -1 for rows
// without a query) and, in warp_limits[warp], the warp's min limit over real rows and max limit.
__device__ __forceinline__ void sm90_row_limits(const int* query_pos, int warp, int lane,
                                                int causal_offset, bool causal,
                                                int (&row_limit)[2], int2* warp_limits) {
  int limit_min = INT_MAX;
  int limit_max = -1;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int pos = query_pos[warp * 16 + hf * 8 + (lane >> 2)];
    row_limit[hf] = sm90_row_limit(pos, causal_offset, causal);
    if (pos >= 0) limit_min = min(limit_min, row_limit[hf]);
    limit_max = max(limit_max, row_limit[hf]);
  }
  limit_min = __reduce_min_sync(0xffffffffu, limit_min);
  limit_max = __reduce_max_sync(0xffffffffu, limit_max);
  if (lane == 0) warp_limits[warp] = make_int2(limit_min, limit_max);
}

// Warpgroup wg's min / max row limit (wgmma is issued by whole warpgroups, so skipping a tile is
// decided per warpgroup), from sm90_row_limits' per-warp values once published.
__device__ __forceinline__ int2 sm90_warpgroup_limits(const int2* warp_limits, int wg) {
  int2 l = make_int2(INT_MAX, -1);
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    l.x = min(l.x, warp_limits[wg * 4 + w].x);
    l.y = max(l.y, warp_limits[wg * 4 + w].y);
  }
  return l;
}

// Epilogue, first half: normalises this thread's two rows of O into the swizzled staging tile
// [kBlockQ, D] and writes their lse (rows without keys: zeros and -inf).
template <class Math, class Element>
__device__ __forceinline__ void sm90_stage_output(const float (&o)[Math::kOutRegs],
                                                  const float (&row_sum)[2],
                                                  const float (&row_max)[2], float scale_log2,
                                                  unsigned char* stage, const int* query_pos,
                                                  float* lse_rows, int warp, int lane) {
  constexpr float kLn2 = 0.6931471805599453f;
  const int g = lane >> 2;
  const int t = lane & 3;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float sum = row_sum[hf];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    const int row = warp * 16 + hf * 8 + g;
#pragma unroll
    for (int j = 0; j < Math::kHeadDim / 8; ++j)
      *reinterpret_cast<uint32_t*>(stage +
                                   swizzled_element_offset(Math::kBlockQ, row, 8 * j + 2 * t)) =
          Element::pack(o[4 * j + 2 * hf] * inv, o[4 * j + 2 * hf + 1] * inv);
    if (lse_rows != nullptr && t == 0) {
      const int pos = query_pos[row];
      if (pos >= 0)
        lse_rows[pos] =
            sum > 0.f ? (row_max[hf] * scale_log2 + fast_log2(sum)) * kLn2 : -INFINITY;
    }
  }
}

// Epilogue, second half (after a barrier over the staging writers): scatters staged rows
// [row_base, row_base + kRows) to their original positions with 16-byte stores. Threads
// tid = 0 .. kThreads - 1.
template <class Math, int kThreads = Math::kThreads, int kRows = Math::kBlockQ>
__device__ __forceinline__ void sm90_scatter_output(const unsigned char* stage,
                                                    const int* query_pos, uint16_t* out_rows,
                                                    int64_t out_stride_s, int tid,
                                                    int row_base = 0) {
  constexpr int kPass = kThreads / Math::kChunksPerRow;
  static_assert(kRows % kPass == 0, "whole passes");
  const int chunk = tid % Math::kChunksPerRow;
  const int row0 = row_base + tid / Math::kChunksPerRow;
#pragma unroll
  for (int i = 0; i < kRows / kPass; ++i) {
    const int row = row0 + i * kPass;
    const int pos = query_pos[row];
    if (pos >= 0)
      *reinterpret_cast<uint4*>(out_rows + pos * out_stride_s + chunk * 8) =
          *reinterpret_cast<const uint4*>(stage + swizzled_chunk_offset(Math::kBlockQ, row, chunk));
  }
}

template <class Element>
struct WgmmaFor;
template <>
struct WgmmaFor<Bfloat16> {
  using type = WgmmaBf16;
};
template <>
struct WgmmaFor<Float16> {
  using type = WgmmaF16;
};

// ---- Main-loop pieces of the kernel below (sm_90a device code only) ----------------------------
// They take the fragments by reference and are force-inlined: after inlining the arrays are
// registers again, as if the code were written in the kernel body.
#if defined(MMI_SM90_WGMMA_AVAILABLE)

// Pins O and P across this point (wgmma reads / writes them asynchronously).
template <class Traits>
__device__ __forceinline__ void sm90_fence_pv_operands(float (&o)[Traits::kOutRegs],
                                                       uint32_t (&pa)[Traits::kPvSteps][4]) {
#pragma unroll
  for (int i = 0; i < Traits::kOutRegs; ++i) fence_operand(o[i]);
#pragma unroll
  for (int kk = 0; kk < Traits::kPvSteps; ++kk)
#pragma unroll
    for (int e = 0; e < 4; ++e) fence_operand(pa[kk][e]);
}

// S[64x64] = Q K^T for warpgroup wg (Q rows 64 wg .. 64 wg + 63), one commit group.
template <class Traits, class Wgmma>
__device__ __forceinline__ void sm90_issue_s(float (&s)[Traits::kScoreRegs], uint32_t q_tile,
                                             uint32_t k_tile, int wg) {
#pragma unroll
  for (int ks = 0; ks < Traits::kKSteps; ++ks)
    Wgmma::ss_n64(s, k_major_descriptor(q_tile, Traits::kBlockQ, wg * 64, ks),
                  k_major_descriptor(k_tile, Traits::kBlockK, 0, ks), ks > 0 ? 1 : 0);
  wgmma_commit();
}

// O[64xD] += P V (P in registers, V the [key][d] tile at v_tile), one commit group.
template <class Traits, class Wgmma>
__device__ __forceinline__ void sm90_issue_pv(float (&o)[Traits::kOutRegs],
                                              uint32_t (&pa)[Traits::kPvSteps][4],
                                              uint32_t v_tile) {
#pragma unroll
  for (int kk = 0; kk < Traits::kPvSteps; ++kk) {
    const uint64_t v_desc = mn_major_descriptor(v_tile, Traits::kBlockK, kk);
    if constexpr (Traits::kHeadDim == 128)
      Wgmma::rs_n128_tb(o, pa[kk], v_desc, 1);
    else
      Wgmma::rs_n64_tb(o, pa[kk], v_desc, 1);
  }
  wgmma_commit();
}

// After tile i's softmax: O *= correction for the rows whose max moved, and P(i) = S(i) as wgmma
// A fragments (k16 step kk covers keys 16 kk .. 16 kk + 15 = n8 tiles 2 kk, 2 kk + 1).
template <class Math, class Element>
__device__ __forceinline__ void sm90_rescale_and_pack(float (&o)[Math::kOutRegs],
                                                      const float (&s)[Math::kScoreRegs],
                                                      const float (&correction)[2],
                                                      const bool (&rescale)[2],
                                                      uint32_t (&pa)[Math::kPvSteps][4]) {
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    if (rescale[hf]) {
#pragma unroll
      for (int j = 0; j < Math::kHeadDim / 8; ++j) {
        o[4 * j + 2 * hf] *= correction[hf];
        o[4 * j + 2 * hf + 1] *= correction[hf];
      }
    }
  }
#pragma unroll
  for (int kk = 0; kk < Math::kPvSteps; ++kk) {
    pa[kk][0] = Element::pack(s[8 * kk + 0], s[8 * kk + 1]);  // row g,     keys 2t, 2t+1
    pa[kk][1] = Element::pack(s[8 * kk + 2], s[8 * kk + 3]);  // row g + 8
    pa[kk][2] = Element::pack(s[8 * kk + 4], s[8 * kk + 5]);  // row g,     keys 2t+8, 2t+9
    pa[kk][3] = Element::pack(s[8 * kk + 6], s[8 * kk + 7]);  // row g + 8
  }
}

// O += P V on its own (a tile the warpgroup skips, or the last tile), waited for.
template <class Math, class Wgmma>
__device__ __forceinline__ void sm90_run_pv(float (&o)[Math::kOutRegs],
                                            uint32_t (&pa)[Math::kPvSteps][4], uint32_t v_tile) {
  sm90_fence_pv_operands<Math>(o, pa);
  wgmma_fence();
  sm90_issue_pv<Math, Wgmma>(o, pa, v_tile);
  wgmma_wait<0>();
  sm90_fence_pv_operands<Math>(o, pa);
}

// Mask: score -> -inf where the key position exceeds the row's limit.
// s[4 j + 2 hf + e]: row g + 8 hf of the warp's 16, key 8 j + 2 t + e of the tile.
template <class Traits>
__device__ __forceinline__ void sm90_mask_scores(float (&s)[Traits::kScoreRegs],
                                                 const int* key_pos, int t,
                                                 const int (&row_limit)[2]) {
#pragma unroll
  for (int j = 0; j < Traits::kBlockK / 8; ++j) {
    const int2 kp = *reinterpret_cast<const int2*>(key_pos + j * 8 + 2 * t);
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      if (kp.x > row_limit[hf]) s[4 * j + 2 * hf] = -INFINITY;
      if (kp.y > row_limit[hf]) s[4 * j + 2 * hf + 1] = -INFINITY;
    }
  }
}

// A row's reference maximum (the max the exponentials are taken against) moves only when a tile's
// max exceeds it by more than 2^kLazyRescaleLog2 in probability: after the first tiles it rarely
// moves, so O is rarely rescaled (an O rescale is 64 multiplies per thread at D = 128, half as
// many instructions as the tile's exponentials). Probabilities then stay below 2^8 before
// normalisation: exact in bf16 / fp16 up to rounding, and the float32 sums cannot overflow.
// MMI_SM90_EAGER_RESCALE restores the exact running max (for A/B timing).
constexpr float kLazyRescaleLog2 = 8.f;

// Online softmax update (log2 domain) of this thread's two rows with the (masked) scores s:
// s becomes the unnormalised probabilities, row_max / row_sum advance, correction[hf] is the
// factor O's row must be scaled by, rescale[hf] whether any row of the warp's half hf changed its
// reference max (warp-uniform).
template <class Traits>
__device__ __forceinline__ void sm90_softmax_update(float (&s)[Traits::kScoreRegs],
                                                    float (&row_max)[2], float (&row_sum)[2],
                                                    float (&correction)[2], bool (&rescale)[2],
                                                    float scale_log2) {
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < Traits::kBlockK / 8; ++j)
      tile_max = fmaxf(tile_max, fmaxf(s[4 * j + 2 * hf], s[4 * j + 2 * hf + 1]));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
    const float old_max = row_max[hf];
#if defined(MMI_SM90_EAGER_RESCALE)
    const float new_max = fmaxf(old_max, tile_max);
#else
    // old_max = -inf and a finite tile max: +inf > threshold, the max moves. Both -inf: NaN
    // compares false and fmaxf keeps -inf.
    const float new_max =
        (tile_max - old_max) * scale_log2 > kLazyRescaleLog2 ? tile_max : old_max;
#endif
    const float ref = new_max == -INFINITY ? 0.f : new_max * scale_log2;
    correction[hf] = fast_exp2(old_max * scale_log2 - ref);  // 0 when old = -inf
    row_max[hf] = new_max;
    float tile_sum = 0.f;
#pragma unroll
    for (int j = 0; j < Traits::kBlockK / 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float prob = fast_exp2(fmaf(s[4 * j + 2 * hf + e], scale_log2, -ref));
        s[4 * j + 2 * hf + e] = prob;
        tile_sum += prob;
      }
    row_sum[hf] = row_sum[hf] * correction[hf] + tile_sum;
    rescale[hf] = __any_sync(0xffffffffu, new_max != old_max);
  }
}
// Tile i's mask (only when the tile's max key position exceeds the warpgroup's min row limit) and
// online softmax on s, pinned in place: without the operand fences the compiler sinks the
// softmax below the next wgmma wait (asm volatile orders only against other asm volatile),
// losing its overlap with the in-flight P(i-1) V(i-1).
template <class Math>
__device__ __forceinline__ void sm90_tile_softmax(float (&s)[Math::kScoreRegs], bool mask,
                                                  const int* key_pos, int t,
                                                  const int (&row_limit)[2], float (&row_max)[2],
                                                  float (&row_sum)[2], float (&correction)[2],
                                                  bool (&rescale)[2], float scale_log2) {
#pragma unroll
  for (int r = 0; r < Math::kScoreRegs; ++r) fence_operand(s[r]);
  if (mask) sm90_mask_scores<Math>(s, key_pos, t, row_limit);
  sm90_softmax_update<Math>(s, row_max, row_sum, correction, rescale, scale_log2);
#pragma unroll
  for (int r = 0; r < Math::kScoreRegs; ++r) fence_operand(s[r]);
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    fence_operand(correction[hf]);
    fence_operand(row_sum[hf]);
    fence_operand(row_max[hf]);
  }
}
#endif  // MMI_SM90_WGMMA_AVAILABLE

template <class Traits, class Element>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocksPerSm)
    sm90_attention_fwd_kernel(const mmi_attention_problem p) {
#if defined(MMI_SM90_WGMMA_AVAILABLE)
  using Storage = Sm90Shared<Traits>;
  using Wgmma = typename WgmmaFor<Element>::type;
  extern __shared__ __align__(128) unsigned char sm90_smem_raw[];
  const uint32_t raw_address = shared_address(sm90_smem_raw);
  unsigned char* smem_base =
      sm90_smem_raw + ((kSwizzleAtomBytes - (raw_address & (kSwizzleAtomBytes - 1))) &
                       (kSwizzleAtomBytes - 1));
  Storage& smem = *reinterpret_cast<Storage*>(smem_base);

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int wg = warp >> 2;
  const int t = lane & 3;

  const CtaWork work = cta_work(p);
  const int b = work.b, h = work.h, qb = work.qb, kv_h = work.kv_h;
  const int q_heads = static_cast<int>(p.q_heads);
  const int seq_q = static_cast<int>(p.seq_q);
  const int seq_k = static_cast<int>(p.seq_k);

  // Prologue (as the mma.sync kernel): tile 0 located and validated, tile 1 located.
  if (warp == 0) {
    if (lane == 0) key_walk_init(p, b, h, qb, smem.source, smem.cursor);
    __syncwarp();
    key_tile_issue(smem.source, smem.cursor, smem.staged_pos[0], smem.tile_meta[0], seq_k, lane);
    cp_async_commit();
    cp_async_wait<0>();
    __syncwarp();
    key_tile_finalize(smem.staged_pos[0], smem.key_pos[0], smem.tile_meta[0], seq_k, lane);
    if (smem.tile_meta[0].x != 0)
      key_tile_issue(smem.source, smem.cursor, smem.staged_pos[1], smem.tile_meta[1], seq_k, lane);
  }
  load_query_positions(p, work, Traits::kBlockQ, smem.query_pos, tid, Traits::kThreads);
  if (tid < Traits::kChunksPerRow) {
    smem.key_columns[tid] = static_cast<const char*>(p.k) +
                            (b * p.k_stride_b + kv_h * p.k_stride_h) * 2 + tid * 16;
    smem.value_columns[tid] = static_cast<const char*>(p.v) +
                              (b * p.v_stride_b + kv_h * p.v_stride_h) * 2 + tid * 16;
  }
  __syncthreads();

  const uint32_t q_tile = shared_address(smem.q);
  const uint32_t k_tile0 = shared_address(smem.k[0]);
  const uint32_t v_tile0 = shared_address(smem.v[0]);
  constexpr uint32_t kBufferBytes = sizeof(smem.k[0]);
  const uint32_t k_stride_bytes = static_cast<uint32_t>(p.k_stride_s * 2);
  const uint32_t v_stride_bytes = static_cast<uint32_t>(p.v_stride_s * 2);

  sm90_gather_rows<Traits, Traits::kBlockQ>(
      q_tile, static_cast<const char*>(p.q) + (b * p.q_stride_b + h * p.q_stride_h) * 2,
      static_cast<uint32_t>(p.q_stride_s * 2), smem.query_pos, seq_q, tid);
  bool have_tile = smem.tile_meta[0].x != 0;
  if (have_tile)
    sm90_gather_key_tile<Traits>(k_tile0, v_tile0, smem.key_columns, k_stride_bytes,
                                 smem.value_columns, v_stride_bytes, smem.key_pos[0], seq_k, tid);
  cp_async_commit();

  const float scale_log2 = positive_scale_log2(p.scale);  // q.k * scale in the exp2 domain
  if (p.scale < 0.f) {
    cp_async_wait<0>();
    sm90_negate_rows<Traits, Traits::kBlockQ>(reinterpret_cast<unsigned char*>(smem.q), tid);
    // published to the async proxy by the fence + barrier at the top of the key loop
  }

  // Row limits of this thread's two rows, and per warp the min / max limit (skip / mask tests).
  const int causal_offset = seq_k - seq_q;
  const bool causal = p.causal != 0;
  int row_limit[2];
  sm90_row_limits(smem.query_pos, warp, lane, causal_offset, causal, row_limit, smem.warp_limits);
  __syncthreads();
  const int2 wg_limits = sm90_warpgroup_limits(smem.warp_limits, wg);
  const int wg_limit_min = wg_limits.x;
  const int wg_limit_max = wg_limits.y;

  float o[Traits::kOutRegs];
#pragma unroll
  for (int i = 0; i < Traits::kOutRegs; ++i) o[i] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};  // raw-score units
  float row_sum[2] = {0.f, 0.f};              // this thread's part (4 threads per row)

  // FA3-style intra-warpgroup overlap. Iteration i (tile i in buffer buf, its K and V landed):
  //   issue S(i) = Q K(i)^T, then O += P(i-1) V(i-1) (V(i-1) still in buffer buf - 1), two commit
  //   groups; wait for S(i) only and run the mask + online softmax of tile i while the tensor
  //   cores do P(i-1) V(i-1); then wait for it, rescale O by tile i's correction and convert S(i)
  //   to P(i), whose P V is issued in iteration i + 1 (or after the loop).
  // The copies of tile i + 1 go to buffer buf + 1 = buf - 2 (mod 3), last read by P(i-2) V(i-2),
  // which completed (wait_group 0) before this iteration's barrier.
  // A tile the warpgroup skips issues only the pending P V. pending is warpgroup-uniform.
  int ring = 0;
  uint32_t buf = 0;
  uint32_t pa[Traits::kPvSteps][4];
#pragma unroll
  for (int kk = 0; kk < Traits::kPvSteps; ++kk)
#pragma unroll
    for (int e = 0; e < 4; ++e) pa[kk][e] = 0u;
  bool pending = false;
  uint32_t pending_v = v_tile0;
#pragma unroll 1
  while (have_tile) {
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();
    const int ring_next = ring == 2 ? 0 : ring + 1;
    const int ring_after = ring_next == 2 ? 0 : ring_next + 1;
    const uint32_t buf_next = buf + 1 == Traits::kStages ? 0u : buf + 1;
    const bool have_next = smem.tile_meta[ring_next].x != 0;
    if (have_next) {
      sm90_gather_key_tile<Traits>(k_tile0 + buf_next * kBufferBytes,
                                   v_tile0 + buf_next * kBufferBytes, smem.key_columns,
                                   k_stride_bytes, smem.value_columns, v_stride_bytes,
                                   smem.staged_pos[ring_next], seq_k, tid);
      if (warp == 0) {
        key_tile_finalize(smem.staged_pos[ring_next], smem.key_pos[ring_next],
                          smem.tile_meta[ring_next], seq_k, lane);
        key_tile_issue(smem.source, smem.cursor, smem.staged_pos[ring_after],
                       smem.tile_meta[ring_after], seq_k, lane);
      }
    }
    cp_async_commit();

    const KeyTileMeta meta = smem.tile_meta[ring];
    // Skip: no key of the tile is allowed for any row of the warpgroup (warpgroup-uniform).
    const bool compute = meta.y <= wg_limit_max;
    const uint32_t k_tile = k_tile0 + buf * kBufferBytes;
    const uint32_t v_tile = v_tile0 + buf * kBufferBytes;

    // Each case issues its wgmmas in straight-line code right after its own wgmma.fence (a
    // branch join between two wgmma issues makes ptxas serialise them, C7520).
    float s[Traits::kScoreRegs];
    float correction[2] = {1.f, 1.f};
    bool rescale[2] = {false, false};
    // Mask + online softmax of tile i on s (O untouched: P(i-1) V(i-1) may be in flight).
    auto softmax = [&]() {
      sm90_tile_softmax<Traits>(s, meta.z > wg_limit_min, smem.key_pos[ring], t, row_limit,
                                row_max, row_sum, correction, rescale, scale_log2);
    };

    if (compute) {
      if (pending) {
        sm90_fence_pv_operands<Traits>(o, pa);
        wgmma_fence();
        sm90_issue_s<Traits, Wgmma>(s, q_tile, k_tile, wg);
        sm90_issue_pv<Traits, Wgmma>(o, pa, pending_v);
        wgmma_wait<1>();  // S(i) done; P(i-1) V(i-1) may still run
        softmax();
        wgmma_wait<0>();
        sm90_fence_pv_operands<Traits>(o, pa);
      } else {
        sm90_fence_pv_operands<Traits>(o, pa);
        wgmma_fence();
        sm90_issue_s<Traits, Wgmma>(s, q_tile, k_tile, wg);
        wgmma_wait<0>();
        softmax();
      }
      sm90_rescale_and_pack<Traits, Element>(o, s, correction, rescale, pa);
      pending_v = v_tile;
    } else if (pending) {
      sm90_run_pv<Traits, Wgmma>(o, pa, pending_v);
    }
    pending = compute;

    ring = ring_next;
    buf = buf_next;
    have_tile = have_next;
  }
  // The last computed tile's P V (its V buffer is not overwritten: no copies were issued after it).
  if (pending) {
    sm90_run_pv<Traits, Wgmma>(o, pa, pending_v);
  }

  // Epilogue. Every copy into the Q tile has landed and every wgmma reading it has completed.
  cp_async_wait<0>();
  __syncthreads();
  unsigned char* stage = reinterpret_cast<unsigned char*>(smem.q);
  float* lse_rows =
      p.lse != nullptr ? p.lse + (static_cast<int64_t>(b) * q_heads + h) * seq_q : nullptr;
  sm90_stage_output<Traits, Element>(o, row_sum, row_max, scale_log2, stage, smem.query_pos,
                                     lse_rows, warp, lane);
  __syncthreads();
  sm90_scatter_output<Traits>(stage, smem.query_pos,
                              static_cast<uint16_t*>(p.out) + b * p.out_stride_b + h * p.out_stride_h,
                              p.out_stride_s, tid);
#else
  // Built without sm_90a features: the host never launches this (sm90_kernel_available).
  __trap();
#endif
}

#endif  // __CUDACC__

}  // namespace sm90
}  // namespace mmi_cuda
