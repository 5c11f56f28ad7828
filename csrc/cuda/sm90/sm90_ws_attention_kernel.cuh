// Warp-specialised Hopper (sm_90a) variant of the block-sparse attention forward: same semantics,
// index walk, tile math and robustness rules as sm90_attention_kernel.cuh, with the loads taken
// off the math warps and Q held in registers.
//
// CTA = one (batch, query head, 128-row query block), 384 threads = 3 warpgroups:
//   producer  warpgroup 0 (56 registers per thread after setmaxnreg). Warp 0 walks the index
//             (key_tile_cursor.cuh) one tile ahead; all 128 threads gather the K and V rows of
//             each 64-slot key tile with 16-byte cp.async into a ring of kStages swizzled stages.
//             A stage's "full" mbarrier completes when warp 0 has published the tile's positions
//             and statistics (a plain arrive per lane) and every producer thread's copies have
//             landed (cp.async.mbarrier.arrive.noinc per thread). The producer waits on the
//             stage's "empty" mbarrier before refilling it.
//   consumers warpgroups 1 and 2 (224 registers) own query rows [0, 64) and [64, 128). Q is
//             loaded once into wgmma A fragments (ldmatrix), so S = Q K^T reads only K from
//             shared memory. Per tile: wait "full", fence.proxy.async (the copies are
//             generic-proxy writes, wgmma reads through the async proxy), issue S(i) = Q K(i)^T
//             together with the deferred O += P(i-1) V(i-1), mask + online softmax of S(i) while
//             P V runs, then release the stage of tile i-1.
// Empty stage: every consumer thread arrives once per tile, when it no longer reads the tile
// (after its P V, or at once when its warpgroup skips the tile).
// Measured on an H200 (harness --bench, S = 32K causal, D = 128, 2026-11-28): 438-447 TFLOP/s
// against 389 for the non-specialised kernel. Tried and dropped, each within 1% of this or
// slower: Q read from shared memory (432); FlashAttention-3-style ping-pong between the two math
// warpgroups through named barriers (447; racecheck also cannot follow its bar.arrive pairs);
// 128-key tiles from two stages with P V undeferred (446); 5 stages (438 vs 438); without the
// consumers' proxy fence (diagnostic only: 436 vs 437). ncu (16K
// causal): tensor pipe 46% active, issue slots 38% busy -- the math warps' softmax and wgmma
// waits are the limit, not loads.
#pragma once

#include "sm90/barriers.cuh"
#include "sm90/sm90_attention_kernel.cuh"

namespace mmi_cuda {
namespace sm90 {

template <int kHeadDim_>
struct Sm90WsTraits {
  static constexpr int kHeadDim = kHeadDim_;
  // Registers per thread (setmaxnreg): 168 each at launch -> 56 producer / 224 consumer, so the
  // consumers can hold Q as wgmma A fragments.
  static constexpr int kProducerRegisters = 56;
  static constexpr int kConsumerRegisters = 224;
  static constexpr int kStages = 4;  // 5 measured the same
  static constexpr int kBlockQ = 128;
  static constexpr int kBlockK = kKeyTile;
  static constexpr int kProducerThreads = 128;
  static constexpr int kConsumerThreads = 256;
  static constexpr int kThreads = kProducerThreads + kConsumerThreads;
  // full: 32 position-warp arrivals + one cp.async arrival per producer thread.
  static constexpr int kFullArrivals = 32 + kProducerThreads;
  // Named barrier ids (0 is __syncthreads).
  static constexpr int kProducerBarrier = 1;
  static constexpr int kEpilogueBarrier = 2;
  using Math = Sm90Traits<kHeadDim>;  // tile math and Q / output row mapping of 256 threads
  // K / V gathers by the producer warpgroup.
  struct Gather {
    static constexpr int kBlockK = kKeyTile;
    static constexpr int kChunksPerRow = kHeadDim / 8;
    static constexpr int kRowsPerPass = kProducerThreads / kChunksPerRow;
    static_assert(kRowsPerPass % 8 == 0, "a thread's rows keep their swizzle phase");
  };
  static_assert(kHeadDim == 64 || kHeadDim == 128, "swizzled tiles of 64-element blocks");
  static_assert(kProducerThreads * kProducerRegisters + kConsumerThreads * kConsumerRegisters <=
                    65536,
                "register file");
};

template <class Traits>
struct Sm90WsShared {
  static constexpr int kTileQ = Traits::kBlockQ * Traits::kHeadDim;
  static constexpr int kTileK = Traits::kBlockK * Traits::kHeadDim;

  // Swizzled tiles first (1024-byte aligned structure, tile sizes multiples of 1024 bytes).
  uint16_t q[kTileQ];  // [128 rows, D]; reused as the output staging tile
  uint16_t k[Traits::kStages][kTileK];
  uint16_t v[Traits::kStages][kTileK];
  uint64_t full[Traits::kStages];
  uint64_t empty[Traits::kStages];
  KeyTileMeta meta[Traits::kStages];    // per stage: slots, min / max position (x = 0: end)
  int key_pos[Traits::kStages][kKeyTile];
  KeyTileMeta staged_meta[2];           // position warp: tiles located, positions in flight
  int staged_pos[2][kKeyTile];
  int query_pos[Traits::kBlockQ];
  int2 warp_limits[Traits::kConsumerThreads / 32];
  KeySource source;
  KeyCursor cursor;
  const char* key_columns[Traits::kHeadDim / 8];
  const char* value_columns[Traits::kHeadDim / 8];
};

template <class Traits>
constexpr int sm90_ws_shared_bytes() {
  return static_cast<int>(sizeof(Sm90WsShared<Traits>)) + kSwizzleAtomBytes;
}

#if defined(__CUDACC__)

template <class Traits, class Element>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    sm90_ws_attention_fwd_kernel(const mmi_attention_problem p) {
#if defined(MMI_SM90_WGMMA_AVAILABLE)
  using Math = typename Traits::Math;
  using Storage = Sm90WsShared<Traits>;
  using Wgmma = typename WgmmaFor<Element>::type;
  constexpr int kD = Traits::kHeadDim;
  constexpr int kStages = Traits::kStages;
  constexpr int kConsumers = Traits::kConsumerThreads;
  extern __shared__ __align__(128) unsigned char sm90_ws_smem_raw[];
  const uint32_t raw_address = shared_address(sm90_ws_smem_raw);
  unsigned char* smem_base =
      sm90_ws_smem_raw + ((kSwizzleAtomBytes - (raw_address & (kSwizzleAtomBytes - 1))) &
                          (kSwizzleAtomBytes - 1));
  Storage& smem = *reinterpret_cast<Storage*>(smem_base);

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const bool producer = tid < Traits::kProducerThreads;
  const int ctid = tid - Traits::kProducerThreads;  // consumer thread index
  const int warp = ctid >> 5;                        // consumer warp 0..7
  const int wg = warp >> 2;                          // consumer warpgroup 0..1
  const int t = lane & 3;

  const CtaWork work = cta_work(p);
  const int b = work.b, h = work.h, qb = work.qb, kv_h = work.kv_h;
  const int q_heads = static_cast<int>(p.q_heads);
  const int seq_q = static_cast<int>(p.seq_q);
  const int seq_k = static_cast<int>(p.seq_k);

  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&smem.full[s], Traits::kFullArrivals);
      mbarrier_init(&smem.empty[s], kConsumers);
    }
  }
  load_query_positions(p, work, Traits::kBlockQ, smem.query_pos, tid, Traits::kThreads);
  if (tid < kD / 8) {
    smem.key_columns[tid] = static_cast<const char*>(p.k) +
                            (b * p.k_stride_b + kv_h * p.k_stride_h) * 2 + tid * 16;
    smem.value_columns[tid] = static_cast<const char*>(p.v) +
                              (b * p.v_stride_b + kv_h * p.v_stride_h) * 2 + tid * 16;
  }
  __syncthreads();  // barriers initialised, query positions and column bases published

  const float scale_log2 = positive_scale_log2(p.scale);  // q.k * scale in the exp2 domain
  const int causal_offset = seq_k - seq_q;
  const bool causal = p.causal != 0;
  const uint32_t q_tile = shared_address(smem.q);
  int row_limit[2] = {-1, -1};
  if (!producer) {
    sm90_gather_rows<Math, Traits::kBlockQ>(
        q_tile, static_cast<const char*>(p.q) + (b * p.q_stride_b + h * p.q_stride_h) * 2,
        static_cast<uint32_t>(p.q_stride_s * 2), smem.query_pos, seq_q, ctid);
    cp_async_commit();
    cp_async_wait<0>();
    if (p.scale < 0.f)
      sm90_negate_rows<Math, Traits::kBlockQ>(reinterpret_cast<unsigned char*>(smem.q), ctid);
    fence_proxy_async();  // this thread's Q chunks -> async proxy, published by the barrier below

    sm90_row_limits(smem.query_pos, warp, lane, causal_offset, causal, row_limit,
                    smem.warp_limits);
  }
  __syncthreads();

  const uint32_t k_tile0 = shared_address(smem.k[0]);
  const uint32_t v_tile0 = shared_address(smem.v[0]);
  constexpr uint32_t kBufferBytes = sizeof(smem.k[0]);

  if (producer) {
    // ---- producer warpgroup ---------------------------------------------------------------------
    setmaxnreg_dec<Traits::kProducerRegisters>();
    const int pwarp = tid >> 5;
    const uint32_t k_stride_bytes = static_cast<uint32_t>(p.k_stride_s * 2);
    const uint32_t v_stride_bytes = static_cast<uint32_t>(p.v_stride_s * 2);
    if (pwarp == 0) {
      if (lane == 0) key_walk_init(p, b, h, qb, smem.source, smem.cursor);
      __syncwarp();
      key_tile_issue(smem.source, smem.cursor, smem.staged_pos[0], smem.staged_meta[0], seq_k,
                     lane);
      cp_async_commit();
      cp_async_wait<0>();
      __syncwarp();
    }
#pragma unroll 1
    for (int i = 0;; ++i) {
      const int s = i % kStages;
      if (pwarp == 0) {
        // Tile i's positions landed (previous wait); the stage is free once the consumers let go
        // of tile i - kStages.
        mbarrier_wait(&smem.empty[s], ((i / kStages) & 1) ^ 1);
        const int sb = i & 1;
        key_tile_finalize(smem.staged_pos[sb], smem.key_pos[s], smem.staged_meta[sb], seq_k,
                          lane);
        const KeyTileMeta m = smem.staged_meta[sb];
        if (lane == 0) smem.meta[s] = m;
        if (m.x != 0)
          key_tile_issue(smem.source, smem.cursor, smem.staged_pos[sb ^ 1], smem.staged_meta[sb ^ 1],
                         seq_k, lane);
        cp_async_commit();
        __syncwarp();
        mbarrier_arrive(&smem.full[s]);  // publishes key_pos[s] and meta[s] to the consumers
      }
      named_barrier_sync(Traits::kProducerBarrier, Traits::kProducerThreads);
      if (smem.meta[s].x == 0) {
        // The walk is over: complete the stage's phase without copies so the consumers see it.
        mbarrier_arrive(&smem.full[s]);
        break;
      }
      sm90_gather_key_tile<typename Traits::Gather>(
          k_tile0 + s * kBufferBytes, v_tile0 + s * kBufferBytes, smem.key_columns, k_stride_bytes,
          smem.value_columns, v_stride_bytes, smem.key_pos[s], seq_k, tid);
      cp_async_mbarrier_arrive(&smem.full[s]);
      cp_async_commit();
      if (pwarp == 0) {
        cp_async_wait<1>();  // positions of tile i + 1 (older group); tile i's K / V may fly on
        __syncwarp();
      }
    }
    cp_async_wait<0>();  // no copy outlives its thread
    return;
  }

  // ---- consumer warpgroups ------------------------------------------------------------------------
  setmaxnreg_inc<Traits::kConsumerRegisters>();
  // Q fragments of this warp's 16 rows, k16 step ks: ldmatrix matrices (rows 0-7 | 8-15) x
  // (k 0-7 | 8-15) in the A-fragment register order.
  uint32_t qa[Math::kKSteps][4];
  {
    const int row = warp * 16 + (lane & 15);
#pragma unroll
    for (int ks = 0; ks < Math::kKSteps; ++ks) {
      ldmatrix_x4(qa[ks],
                  q_tile + swizzled_element_offset(Traits::kBlockQ, row, 16 * ks + 8 * (lane >> 4)));
#pragma unroll
      for (int e = 0; e < 4; ++e) fence_operand(qa[ks][e]);
    }
  }
  // S[64x64] = Q K^T for this warpgroup's rows, one commit group.
  auto issue_s = [&](float (&sc)[Math::kScoreRegs], uint32_t k_tile) {
#pragma unroll
    for (int ks = 0; ks < Math::kKSteps; ++ks)
      Wgmma::rs_n64(sc, qa[ks], k_major_descriptor(k_tile, Math::kBlockK, 0, ks), ks > 0 ? 1 : 0);
    wgmma_commit();
  };
  const int2 wg_limits = sm90_warpgroup_limits(smem.warp_limits, wg);
  const int wg_limit_min = wg_limits.x;
  const int wg_limit_max = wg_limits.y;

  float o[Math::kOutRegs];
#pragma unroll
  for (int i = 0; i < Math::kOutRegs; ++i) o[i] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};  // raw-score units
  float row_sum[2] = {0.f, 0.f};              // this thread's part (4 threads per row)
  uint32_t pa[Math::kPvSteps][4];
#pragma unroll
  for (int kk = 0; kk < Math::kPvSteps; ++kk)
#pragma unroll
    for (int e = 0; e < 4; ++e) pa[kk][e] = 0u;
  bool pending = false;  // P(i-1) V(i-1) not issued yet (warpgroup-uniform)
  uint32_t pending_v = v_tile0;
  int pending_stage = 0;

#pragma unroll 1
  for (int i = 0;; ++i) {
    const int s = i % kStages;
    mbarrier_wait(&smem.full[s], (i / kStages) & 1);
    const KeyTileMeta meta = smem.meta[s];
    if (meta.x == 0) break;
    fence_proxy_async();  // the stage's cp.async writes -> async proxy (wgmma operands)
    // Skip: no key of the tile is allowed for any row of the warpgroup (warpgroup-uniform).
    const bool compute = meta.y <= wg_limit_max;
    const uint32_t k_tile = k_tile0 + s * kBufferBytes;
    const uint32_t v_tile = v_tile0 + s * kBufferBytes;
    const int* key_pos = smem.key_pos[s];

    float sc[Math::kScoreRegs];
    float correction[2] = {1.f, 1.f};
    bool rescale[2] = {false, false};
    auto softmax = [&]() {
      sm90_tile_softmax<Math>(sc, meta.z > wg_limit_min, key_pos, t, row_limit, row_max, row_sum,
                              correction, rescale, scale_log2);
    };

    // Each case issues its wgmmas in straight-line code right after its own wgmma.fence (a
    // branch join between two wgmma issues makes ptxas serialise them, C7520).
    if (compute) {
      if (pending) {
        sm90_fence_pv_operands<Math>(o, pa);
        wgmma_fence();
        issue_s(sc, k_tile);
        sm90_issue_pv<Math, Wgmma>(o, pa, pending_v);
        wgmma_wait<1>();  // S(i) done; P(i-1) V(i-1) may still run
        softmax();
        wgmma_wait<0>();
        sm90_fence_pv_operands<Math>(o, pa);
        mbarrier_arrive(&smem.empty[pending_stage]);
      } else {
        sm90_fence_pv_operands<Math>(o, pa);
        wgmma_fence();
        issue_s(sc, k_tile);
        wgmma_wait<0>();
        softmax();
      }
      sm90_rescale_and_pack<Math, Element>(o, sc, correction, rescale, pa);
      pending_v = v_tile;
      pending_stage = s;
    } else {
      if (pending) {
        sm90_run_pv<Math, Wgmma>(o, pa, pending_v);
        mbarrier_arrive(&smem.empty[pending_stage]);
      }
      mbarrier_arrive(&smem.empty[s]);  // this warpgroup never reads tile i
    }
    pending = compute;
  }
  // The last computed tile's P V. Its stage is not released: the walk is over.
  if (pending) {
    sm90_run_pv<Math, Wgmma>(o, pa, pending_v);
  }
  // Epilogue (consumers only): the output is staged in the Q tile, whose last readers were the
  // ldmatrix loads above.
  named_barrier_sync(Traits::kEpilogueBarrier, kConsumers);
  unsigned char* stage = reinterpret_cast<unsigned char*>(smem.q);
  float* lse_rows =
      p.lse != nullptr ? p.lse + (static_cast<int64_t>(b) * q_heads + h) * seq_q : nullptr;
  sm90_stage_output<Math, Element>(o, row_sum, row_max, scale_log2, stage, smem.query_pos,
                                   lse_rows, warp, lane);
  named_barrier_sync(Traits::kEpilogueBarrier, kConsumers);
  sm90_scatter_output<Math>(stage, smem.query_pos,
                            static_cast<uint16_t*>(p.out) + b * p.out_stride_b + h * p.out_stride_h,
                            p.out_stride_s, ctid);
#else
  // Built without sm_90a features: the host never launches this (sm90_kernel_available).
  __trap();
#endif
}

#endif  // __CUDACC__

}  // namespace sm90
}  // namespace mmi_cuda
