// Per-warp math of the forward kernel: S = Q K^T on tensor cores, masking, the float32 online
// softmax in the log2 domain, O += P V, and the final normalisation and store.
//
// Fragment layout (m16n8k16, g = lane / 4, t = lane % 4): an accumulator tile c[16x8] gives this
// thread rows g and g + 8 ("halves" 0 and 1), columns 2t and 2t + 1. A warp owns kMTiles slices
// of 16 query rows; a key tile is kKeyTiles8 n8 tiles of 8 keys.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernel_traits.cuh"
#include "ptx_primitives.cuh"

namespace mmi_cuda {

// Row of the query tile held by this thread in 16-row slice `mt`, half `hf`.
template <class Traits>
__device__ __forceinline__ int warp_row(int warp, int lane, int mt, int hf) {
  return warp * Traits::kRowsPerWarp + mt * 16 + hf * 8 + (lane >> 2);
}

// Key position j is allowed for a query row iff j <= its limit: q_pos + (Sk - Sq) when causal,
// every real key otherwise, none for a row without a query (q_pos = -1).
struct RowLimits {
  int causal_offset;  // Sk - Sq
  bool causal;

  __device__ __forceinline__ int of(int query_pos) const {
    return query_pos < 0 ? -1 : (causal ? query_pos + causal_offset : kNoKey - 1);
  }
};

// Running state of one thread's query rows. The output and the running max live in registers;
// the running sums live in shared memory (one word per thread and row, conflict-free), which
// keeps the largest configuration (block_q 128, D 128: 128 output registers per thread) clear of
// local-memory spills for the cost of a few shared accesses per key tile.
template <class Traits>
struct WarpAccumulator {
  float o[Traits::kMTiles][Traits::kDTiles][4];  // unnormalised output rows
  float row_max[Traits::kMTiles][2];  // max raw score q.k so far, -inf before any key
  float* row_sum;  // [kMTiles * 2] at stride kThreads: this thread's part of
                   // sum exp2((s - max) * scale_log2)

  __device__ __forceinline__ float& sum(int mt, int hf) const {
    return row_sum[(mt * 2 + hf) * Traits::kThreads];
  }

  __device__ __forceinline__ void init(float* row_sum_smem, int tid) {
    row_sum = row_sum_smem + tid;
#pragma unroll
    for (int mt = 0; mt < Traits::kMTiles; ++mt) {
#pragma unroll
      for (int dt = 0; dt < Traits::kDTiles; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[mt][dt][e] = 0.f;
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        row_max[mt][hf] = -INFINITY;
        sum(mt, hf) = 0.f;
      }
    }
  }
};

template <class Traits>
using ScoreTile = float[Traits::kMTiles][Traits::kKeyTiles8][4];

// Q fragments kept in registers: [k16 step][16-row slice][A fragment].
template <class Traits>
using QueryFragments = uint32_t[Traits::kQInRegs ? Traits::kKSteps : 1][Traits::kMTiles][4];

// Byte offsets, inside a [rows, kSmemStride] tile, of this lane's ldmatrix row address.
template <class Traits>
struct LaneOffsets {
  // Q as the A operand: lanes 0-15 rows 0-15 at column 0, lanes 16-31 the same rows at column 8,
  // i.e. matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15)
  // = a0..a3.
  __device__ __forceinline__ static uint32_t query(int warp, int lane) {
    return ((warp * Traits::kRowsPerWarp + (lane & 15)) * Traits::kSmemStride + (lane >> 4) * 8) *
           2;
  }
  // K as the B operand (col-major K^T): matrices (keys 0-7, d 0-7), (keys 0-7, d 8-15),
  // (keys 8-15, d 0-7), (keys 8-15, d 8-15) = b0, b1 of key n-tile 0, then b0, b1 of n-tile 1.
  __device__ __forceinline__ static uint32_t key(int lane) {
    return (((lane & 7) + ((lane >> 4) << 3)) * Traits::kSmemStride + ((lane >> 3) & 1) * 8) * 2;
  }
  // V as the B operand, transposed load: matrices (keys 0-7, d 0-7), (keys 8-15, d 0-7),
  // (keys 0-7, d 8-15), (keys 8-15, d 8-15) = b0, b1 of d-tile 0, then b0, b1 of d-tile 1
  // (each MMA's B pair must sit in consecutive registers, hence a mapping of its own).
  __device__ __forceinline__ static uint32_t value(int lane) {
    return (((lane & 7) + (((lane >> 3) & 1) << 3)) * Traits::kSmemStride + (lane >> 4) * 8) * 2;
  }
};

template <class Traits>
__device__ __forceinline__ void load_query_fragments(QueryFragments<Traits>& q_frag,
                                                     uint32_t q_address) {
#pragma unroll
  for (int ks = 0; ks < Traits::kKSteps; ++ks)
#pragma unroll
    for (int mt = 0; mt < Traits::kMTiles; ++mt)
      ldmatrix_x4(q_frag[ks][mt], q_address + (mt * 16 * Traits::kSmemStride + ks * 16) * 2);
}

// s = Q K^T for this warp's rows and the 64 keys of the tile at k_address.
template <class Traits, class Element>
__device__ __forceinline__ void warp_scores(ScoreTile<Traits>& s,
                                            const QueryFragments<Traits>& q_frag,
                                            uint32_t q_address, uint32_t k_address) {
#pragma unroll
  for (int mt = 0; mt < Traits::kMTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < Traits::kKeyTiles8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;

#pragma unroll
  for (int ks = 0; ks < Traits::kKSteps; ++ks) {
    uint32_t a[Traits::kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < Traits::kMTiles; ++mt) {
      if constexpr (Traits::kQInRegs) {
#pragma unroll
        for (int e = 0; e < 4; ++e) a[mt][e] = q_frag[ks][mt][e];
      } else {
        ldmatrix_x4(a[mt], q_address + (mt * 16 * Traits::kSmemStride + ks * 16) * 2);
      }
    }
#pragma unroll
    for (int np = 0; np < Traits::kKeyTiles8 / 2; ++np) {
      uint32_t b[4];
      ldmatrix_x4(b, k_address + (np * 16 * Traits::kSmemStride + ks * 16) * 2);
#pragma unroll
      for (int mt = 0; mt < Traits::kMTiles; ++mt) {
        Element::mma(s[mt][2 * np], a[mt], b[0], b[1]);
        Element::mma(s[mt][2 * np + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// Folds a tile of raw scores s = q.k into the running softmax state and turns it into the
// unnormalised probabilities exp2((s - max) * scale_log2): masks it if needed (key position > row
// limit; empty entries have position kNoKey and are always masked), updates the running max (kept
// in raw-score units, so each probability costs one FFMA + one exp2) and sum, and rescales the
// output rows of a 16-row slice half only when the max of one of them moved (a warp vote; exact,
// the correction of the others being 1).
// Requires scale_log2 > 0 (the kernel flips q for negative scales). A row whose every key so far
// is masked keeps max = -inf and sum = 0 and never produces NaN.
template <class Traits>
__device__ __forceinline__ void warp_online_softmax(ScoreTile<Traits>& s,
                                                    WarpAccumulator<Traits>& acc,
                                                    float scale_log2, bool need_mask,
                                                    const int* key_pos,
                                                    const int* row_limit_source,
                                                    const RowLimits& limits, int warp,
                                                    int lane) {
  if (need_mask) {
    int limit[Traits::kMTiles][2];
#pragma unroll
    for (int mt = 0; mt < Traits::kMTiles; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf)
        limit[mt][hf] = limits.of(row_limit_source[warp_row<Traits>(warp, lane, mt, hf)]);
#pragma unroll
    for (int nt = 0; nt < Traits::kKeyTiles8; ++nt) {
      const int2 kp = *reinterpret_cast<const int2*>(key_pos + nt * 8 + 2 * (lane & 3));
#pragma unroll
      for (int mt = 0; mt < Traits::kMTiles; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          if (kp.x > limit[mt][hf]) s[mt][nt][2 * hf] = -INFINITY;
          if (kp.y > limit[mt][hf]) s[mt][nt][2 * hf + 1] = -INFINITY;
        }
    }
  }

#pragma unroll
  for (int mt = 0; mt < Traits::kMTiles; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < Traits::kKeyTiles8; ++nt)
        tile_max = fmaxf(tile_max, fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
      const float old_max = acc.row_max[mt][hf];
      const float new_max = fmaxf(old_max, tile_max);
      // Subtracting -inf would give NaN; with nothing allowed yet every exp2 below is 0 anyway.
      const float ref = new_max == -INFINITY ? 0.f : new_max * scale_log2;
      const float correction = fast_exp2(old_max * scale_log2 - ref);  // 0 when old_max = -inf
      acc.row_max[mt][hf] = new_max;
      float tile_sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < Traits::kKeyTiles8; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const float prob = fast_exp2(fmaf(s[mt][nt][2 * hf + e], scale_log2, -ref));
          s[mt][nt][2 * hf + e] = prob;
          tile_sum += prob;
        }
      acc.sum(mt, hf) = acc.sum(mt, hf) * correction + tile_sum;
      if (__any_sync(0xffffffffu, new_max != old_max)) {
#pragma unroll
        for (int dt = 0; dt < Traits::kDTiles; ++dt) {
          acc.o[mt][dt][2 * hf] *= correction;
          acc.o[mt][dt][2 * hf + 1] *= correction;
        }
      }
    }
}

// o += P V, P taken from the score tile (its accumulator layout is the A fragment layout of two
// adjacent n8 tiles), V from the tile at v_address (lane offset LaneOffsets::value).
template <class Traits, class Element>
__device__ __forceinline__ void warp_accumulate_pv(const ScoreTile<Traits>& p,
                                                   WarpAccumulator<Traits>& acc,
                                                   uint32_t v_address) {
#pragma unroll
  for (int kk = 0; kk < Traits::kKeyTiles8 / 2; ++kk) {
    uint32_t a[Traits::kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < Traits::kMTiles; ++mt) {
      a[mt][0] = Element::pack(p[mt][2 * kk][0], p[mt][2 * kk][1]);
      a[mt][1] = Element::pack(p[mt][2 * kk][2], p[mt][2 * kk][3]);
      a[mt][2] = Element::pack(p[mt][2 * kk + 1][0], p[mt][2 * kk + 1][1]);
      a[mt][3] = Element::pack(p[mt][2 * kk + 1][2], p[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int dp = 0; dp < Traits::kDTiles / 2; ++dp) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, v_address + (kk * 16 * Traits::kSmemStride + dp * 16) * 2);
#pragma unroll
      for (int mt = 0; mt < Traits::kMTiles; ++mt) {
        Element::mma(acc.o[mt][2 * dp], a[mt], b[0], b[1]);
        Element::mma(acc.o[mt][2 * dp + 1], a[mt], b[2], b[3]);
      }
    }
  }
}

// Normalises this warp's rows, writes lse (natural log) and scatters the rows to their original
// positions: staged through `stage` (this warp's rows of the Q tile) so that global stores are
// whole 16-byte chunks of contiguous rows. Rows without a query (position -1) are not written.
//   out_rows  out + b * out_stride_b + h * out_stride_h
//   lse_rows  lse + (b * Hq + h) * Sq, or nullptr
template <class Traits, class Element>
__device__ __forceinline__ void warp_write_output(const WarpAccumulator<Traits>& acc,
                                                  uint16_t* stage, const int* query_pos,
                                                  uint16_t* out_rows, int64_t out_stride_s,
                                                  float* lse_rows, float scale_log2, int warp,
                                                  int lane) {
  constexpr float kLn2 = 0.6931471805599453f;
  __syncwarp();
#pragma unroll
  for (int mt = 0; mt < Traits::kMTiles; ++mt)
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float sum = acc.sum(mt, hf);
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int row = warp_row<Traits>(warp, lane, mt, hf);
      uint32_t* dst =
          reinterpret_cast<uint32_t*>(stage + row * Traits::kSmemStride + 2 * (lane & 3));
#pragma unroll
      for (int dt = 0; dt < Traits::kDTiles; ++dt)
        dst[dt * 4] = Element::pack(acc.o[mt][dt][2 * hf] * inv, acc.o[mt][dt][2 * hf + 1] * inv);
      if (lse_rows != nullptr && (lane & 3) == 0) {
        const int pos = query_pos[row];
        if (pos >= 0)
          lse_rows[pos] = sum > 0.f
                              ? (acc.row_max[mt][hf] * scale_log2 + fast_log2(sum)) * kLn2
                              : -INFINITY;
      }
    }
  __syncwarp();

  constexpr int kChunks = Traits::kRowsPerWarp * Traits::kChunksPerRow;
#pragma unroll
  for (int i = 0; i < (kChunks + 31) / 32; ++i) {
    const int chunk = lane + i * 32;
    if (kChunks % 32 == 0 || chunk < kChunks) {
      const int row = warp * Traits::kRowsPerWarp + chunk / Traits::kChunksPerRow;
      const int col = (chunk % Traits::kChunksPerRow) * 8;
      const int pos = query_pos[row];
      if (pos >= 0)
        *reinterpret_cast<uint4*>(out_rows + pos * out_stride_s + col) =
            *reinterpret_cast<const uint4*>(stage + row * Traits::kSmemStride + col);
    }
  }
}

}  // namespace mmi_cuda
