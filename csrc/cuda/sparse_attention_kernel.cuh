// The block-sparse attention forward kernel: one CTA per (batch, query head, query block).
//
// Pipeline per CTA, one __syncthreads per key tile:
//   prologue  the position warp (warp 0) locates key tile 0 (waiting for its positions) and
//             starts locating tile 1; query positions -> shared; Q rows and K/V tile 0 are
//             gathered with cp.async.
//   tile i    wait for this thread's copies, barrier; every thread issues the K/V copies of tile
//             i + 1 into the other buffer; warp 0 validates tile i + 1's positions and starts
//             locating tile i + 2 (its index reads are cp.async copies too, so nothing waits on
//             them until the next barrier); every warp computes S = Q K^T, the online softmax and
//             O += P V on tile i, or skips a tile that no row of the warp may attend.
//   epilogue  normalise, write lse, scatter the rows to their original positions.
// A shared ring of three tile descriptors (positions + min/max) carries a tile from the position
// warp (tile i + 2) through the loaders (i + 1) to the math (i).
#pragma once

#include <cfloat>
#include <climits>
#include <cstdint>

#include "cta_work.cuh"
#include "key_tile_cursor.cuh"
#include "kernel_traits.cuh"
#include "mmi_attention.h"
#include "ptx_primitives.cuh"
#include "tile_loaders.cuh"
#include "warp_attention.cuh"

namespace mmi_cuda {

template <class Traits, class Element>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocksPerSm)
    sparse_attention_fwd_kernel(const mmi_attention_problem p) {
  using Storage = SharedStorage<Traits>;
  constexpr int kMTiles = Traits::kMTiles;
  extern __shared__ __align__(128) unsigned char smem_bytes[];
  Storage& smem = *reinterpret_cast<Storage*>(smem_bytes);

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;

  const CtaWork work = cta_work(p);
  const int b = work.b, h = work.h, qb = work.qb, kv_h = work.kv_h;
  const int q_heads = static_cast<int>(p.q_heads);
  const int seq_q = static_cast<int>(p.seq_q);
  const int seq_k = static_cast<int>(p.seq_k);

  // Prologue: key tile 0 located and validated, tile 1 located, by the position warp; query
  // positions (-1: no query in this row).
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
  set_key_columns<Traits>(
      smem.key_columns, smem.value_columns,
      static_cast<const char*>(p.k) + (b * p.k_stride_b + kv_h * p.k_stride_h) * 2,
      static_cast<const char*>(p.v) + (b * p.v_stride_b + kv_h * p.v_stride_h) * 2, tid);
  __syncthreads();

  // Sequence strides in bytes fit in 32 bits (host check): row addresses are one IMAD.WIDE.
  const uint32_t k_stride_bytes = static_cast<uint32_t>(p.k_stride_s * 2);
  const uint32_t v_stride_bytes = static_cast<uint32_t>(p.v_stride_s * 2);
  gather_rows<Traits, Traits::kBlockQ>(
      smem.q, static_cast<const char*>(p.q) + (b * p.q_stride_b + h * p.q_stride_h) * 2,
      static_cast<uint32_t>(p.q_stride_s * 2), smem.query_pos, seq_q, tid);
  bool have_tile = smem.tile_meta[0].x != 0;
  if (have_tile)
    gather_key_tile<Traits>(smem.k[0], smem.v[0], smem.key_columns, k_stride_bytes,
                            smem.value_columns, v_stride_bytes, smem.key_pos[0], seq_k, tid);
  cp_async_commit();

  const float scale_log2 = positive_scale_log2(p.scale);
  if (p.scale < 0.f) {
    cp_async_wait<0>();
    negate_gathered_rows<Traits, Traits::kBlockQ>(smem.q, tid);  // published by the next barrier
  }

  // The warp-wide min / max of its rows' limits decide per tile between skipping the tile, the
  // mask-free path and the masked path; they live in shared memory to spare registers.
  const RowLimits limits{seq_k - seq_q, p.causal != 0};
  {
    int limit_min = INT_MAX;
    int limit_max = -1;
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        const int pos = smem.query_pos[warp_row<Traits>(warp, lane, mt, hf)];
        const int lim = limits.of(pos);
        if (pos >= 0) limit_min = min(limit_min, lim);
        limit_max = max(limit_max, lim);
      }
    limit_min = __reduce_min_sync(0xffffffffu, limit_min);
    limit_max = __reduce_max_sync(0xffffffffu, limit_max);
    if (lane == 0) smem.warp_limits[warp] = make_int2(limit_min, limit_max);
    __syncwarp();
  }

  const uint32_t q_address = shared_address(smem.q) + LaneOffsets<Traits>::query(warp, lane);
  const uint32_t k_address = shared_address(smem.k[0]) + LaneOffsets<Traits>::key(lane);
  const uint32_t v_address = shared_address(smem.v[0]) + LaneOffsets<Traits>::value(lane);
  constexpr uint32_t kBufferBytes = sizeof(smem.k[0]);  // K (and V) buffer 1 - buffer 0

  QueryFragments<Traits> q_frag;
  if constexpr (Traits::kQInRegs) {
    cp_async_wait<0>();
    __syncthreads();
    load_query_fragments<Traits>(q_frag, q_address);
  }

  WarpAccumulator<Traits> acc;
  acc.init(smem.row_sum[0], tid);

  int ring = 0;      // ring entry of the tile being computed
  uint32_t buf = 0;  // K/V buffer of the tile being computed
#pragma unroll 1
  while (have_tile) {
    cp_async_wait<0>();
    __syncthreads();
    const int ring_next = ring == 2 ? 0 : ring + 1;
    const int ring_after = ring_next == 2 ? 0 : ring_next + 1;
    const bool have_next = smem.tile_meta[ring_next].x != 0;
    if (have_next) {
      gather_key_tile<Traits>(smem.k[buf ^ 1], smem.v[buf ^ 1], smem.key_columns,
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
    const int2 warp_limits = smem.warp_limits[warp];
    const bool active = meta.y <= warp_limits.y;  // some key allowed for some row of the warp
    ScoreTile<Traits> s;
    if (active) {
      warp_scores<Traits, Element>(s, q_frag, q_address, k_address + buf * kBufferBytes);
      warp_online_softmax<Traits>(s, acc, scale_log2, meta.z > warp_limits.x, smem.key_pos[ring],
                                  smem.query_pos, limits, warp, lane);
      warp_accumulate_pv<Traits, Element>(s, acc, v_address + buf * kBufferBytes);
    }

    ring = ring_next;
    buf ^= 1;
    have_tile = have_next;
  }

  // Every copy into the Q tile has landed (also when the key set was empty) before it is reused.
  cp_async_wait<0>();
  __syncthreads();
  uint16_t* out_rows = static_cast<uint16_t*>(p.out) + b * p.out_stride_b + h * p.out_stride_h;
  float* lse_rows = p.lse != nullptr ? p.lse + (static_cast<int64_t>(b) * q_heads + h) * seq_q
                                     : nullptr;
  warp_write_output<Traits, Element>(acc, smem.q, smem.query_pos, out_rows, p.out_stride_s,
                                     lse_rows, scale_log2, warp, lane);
}

}  // namespace mmi_cuda
