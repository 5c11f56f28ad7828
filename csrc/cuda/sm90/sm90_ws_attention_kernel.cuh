// Warp-specialised, persistent Hopper (sm_90a) variant of the block-sparse attention forward:
// same semantics, index walk, tile math and robustness rules as sm90_attention_kernel.cuh, with
// the loads taken off the math warps, Q held in registers, and one CTA per SM looping over work
// items, so the next item's Q and first key tiles load while the math warps finish the current
// one. The CTAs take items from a counter shared by the launch (first item blockIdx.x, then
// gridDim.x + atomicAdd), in cta_work_item_heavy_first's order, so that a few heavy items (a grid
// index's line queries attend every earlier key) cannot all land on a few CTAs at the end.
//
// CTA = 384 threads = 3 warpgroups; a work item = one (batch, query head, 128-row query block):
//   producer  warpgroup 0 (56 registers per thread after setmaxnreg). Per item: the query
//             positions and a cp.async gather of Q into one of two Q buffers ("q_full" mbarrier:
//             one plain arrival per producer thread for the positions, one cp.async arrival for
//             its copies); then warp 0 walks the index (key_tile_cursor.cuh) one tile ahead and the
//             key tiles go into a ring of kStages swizzled stages. A tile whose 64 slots are 64
//             consecutive key positions (any full tile of a contiguous range) is loaded by thread
//             0 with TMA (tma.cuh: K and V, 32 KB, completing a transaction count on the stage's
//             "full" mbarrier); any other tile (columns, permuted keys, a range's partial last
//             tile) is gathered by all 128 threads with 16-byte cp.async. "full" completes when
//             warp 0 has published the tile's positions and statistics (lane 0 arrives after a
//             __syncwarp), the copies have arrived (every producer thread's
//             cp.async.mbarrier.arrive.noinc after its gathers, or thread 0 for all of them on a
//             TMA tile) and the TMA bytes, if any, have landed. An item's
//             walk ends with a stage whose tile has no slots (meta.x == 0). The ring runs on
//             across items: the producer waits on a stage's "empty" mbarrier before refilling it,
//             and on "q_empty" before reusing a Q buffer (released after the epilogue of the item
//             two back).
//   consumers warpgroups 1 and 2 (224 registers) own query rows [0, 64) and [64, 128). Per item,
//             Q is read once into wgmma A fragments (ldmatrix), so S = Q K^T reads only K from
//             shared memory. Per tile: wait "full", fence.proxy.async (cp.async copies are
//             generic-proxy writes, wgmma reads through the async proxy), issue S(i) = Q K(i)^T
//             together with the deferred O += P(i-1) V(i-1), mask + online softmax of S(i) while
//             P V runs, then release the stage of tile i-1. The epilogue stages the output in the
//             item's Q buffer (its Q is in registers by then) and scatters it to global memory.
//             The two warpgroups meet only on the stage barriers: item start and epilogue
//             synchronise each warpgroup on its own, so one can finish an item while the other
//             computes.
// Empty stage: every consumer warp arrives once per stage use (lane 0, after a __syncwarp), when
// it no longer reads the tile (after its P V, at once when its warpgroup skips the tile, or on
// the end-of-walk stage).
//
// Measured on an H200 (csrc/cuda/tests harness --bench, Hq 28 / Hkv 4, D = 128, bf16,
// 2026-11-28), TFLOP/s at S = 32K causal / A-shape at 128K (sink 1024 + local 4096):
//   one CTA per item, every tile gathered with cp.async      440 / 420
//   persistent (this structure), cp.async                      437 / 425
//   persistent + TMA for contiguous tiles (this kernel)        485 / 472
// The loads were the limit, not the math: with the gathers removed (stale data) the same kernel
// ran 539 / 523, with the math removed 739 / 725 -- each alone fast, together slower than either
// (the producer's 2048 cp.async per tile competed with the math warps). Tried and dropped: only
// producer warps 1-3 gathering while warp 0 walks (421 / 408); for the non-persistent cp.async
// kernel, Q read from shared memory (432 vs 447), FlashAttention-3-style ping-pong between the
// math warpgroups (447; racecheck cannot follow its bar.arrive pairs), 128-key tiles from two
// stages with P V undeferred (446), 5 stages (438 vs 438). On this kernel (H100, harness --bench,
// 2026-12-07, ms at A-shape 128K / grid 128K, two rounds): ping-pong issue turns between the
// consumer warpgroups 20.69, 20.67 / 7.90, 8.07 against 20.69, 20.66 / 7.85, 7.91 without --
// dropped; the lazy softmax reference max (sm90_softmax_update) 20.43, 20.20 / 7.77, 7.78 -- kept.
#pragma once

#include "sm90/barriers.cuh"
#include "sm90/sm90_attention_kernel.cuh"
#include "sm90/tma.cuh"

namespace mmi_cuda {
namespace sm90 {

template <int kHeadDim_>
struct Sm90WsTraits {
  static constexpr int kHeadDim = kHeadDim_;
  // Registers per thread (setmaxnreg): 168 each at launch -> 56 producer / 224 consumer, so the
  // consumers can hold Q as wgmma A fragments.
  static constexpr int kProducerRegisters = 56;
  static constexpr int kConsumerRegisters = 224;
  static constexpr int kStages = 4;  // the non-persistent cp.async kernel ran the same with 5
  static constexpr int kBlockQ = 128;
  static constexpr int kBlockK = kKeyTile;
  static constexpr int kProducerThreads = 128;
  static constexpr int kConsumerThreads = 256;
  static constexpr int kThreads = kProducerThreads + kConsumerThreads;
  // full: the position warp's lane 0 (after __syncwarp: the warp's position stores are ordered
  // before its release) + kProducerThreads arrivals for the copies: one cp.async arrival per
  // producer thread on a gathered tile; on a TMA tile thread 0's arrive.expect_tx and an arrival
  // of count kProducerThreads - 1 (the copies' bytes then complete the phase); on the end-of-walk
  // stage one arrival of count kProducerThreads.
  // empty: one arrival per consumer warp (lane 0 after __syncwarp, once every lane is done with
  // the stage). One arrival per thread for both instead (MMI_SM90_THREAD_ARRIVALS, for A/B) makes
  // 416 mbarrier arrivals per tile instead of 11 (TMA tile) or 137 (gathered).
#if defined(MMI_SM90_THREAD_ARRIVALS)
  static constexpr bool kPerThreadArrivals = true;
#else
  static constexpr bool kPerThreadArrivals = false;
#endif
  static constexpr int kPositionArrivals = kPerThreadArrivals ? 32 : 1;
  static constexpr int kEmptyArrivals = kPerThreadArrivals ? kConsumerThreads : kConsumerThreads / 32;
  static constexpr int kFullArrivals = kPositionArrivals + kProducerThreads;
  // Item start and epilogue synchronise each consumer warpgroup on its own (each reads and
  // writes only its own query rows), so one can finish an item while the other computes; both
  // together with MMI_SM90_CTA_EPILOGUE (for A/B).
#if defined(MMI_SM90_CTA_EPILOGUE)
  static constexpr bool kCtaEpilogue = true;
#else
  static constexpr bool kCtaEpilogue = false;
#endif
  static constexpr int kEpilogueThreads = kCtaEpilogue ? kConsumerThreads : kConsumerThreads / 2;
  static_assert((kEpilogueThreads & (kEpilogueThreads - 1)) == 0, "thread index by mask");
  // q_full: a plain arrival (query positions) and a cp.async arrival (Q rows) per producer thread.
  static constexpr int kQueryArrivals = 2 * kProducerThreads;
  // Named barrier ids (0 is __syncthreads).
  static constexpr int kProducerBarrier = 1;
  static constexpr int kConsumerBarrier = 2;  // and 3: one per consumer warpgroup
  using Math = Sm90Traits<kHeadDim>;  // tile math and Q / output row mapping of 256 threads
  // Q, K and V gathers by the producer warpgroup.
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
  uint16_t q[2][kTileQ];  // per item parity: [128 rows, D]; reused as the output staging tile
  uint16_t k[Traits::kStages][kTileK];
  uint16_t v[Traits::kStages][kTileK];
  uint64_t full[Traits::kStages];
  uint64_t empty[Traits::kStages];
  uint64_t q_full[2];   // Q buffer + query positions of an item landed
  uint64_t q_empty[2];  // consumers done with them (after the item's epilogue)
  int item[2];          // per Q buffer: its work item, or >= the item count at the end
  KeyTileMeta meta[Traits::kStages];    // per stage: slots, min / max position (x = 0: end)
  int key_pos[Traits::kStages][kKeyTile];
  KeyTileMeta staged_meta[2];           // position warp: tiles located, positions in flight
  int staged_pos[2][kKeyTile];
  int query_pos[2][Traits::kBlockQ];
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
static_assert(sm90_ws_shared_bytes<Sm90WsTraits<128>>() <= 232448,
              "one CTA per SM: at most 227 KB of dynamic shared memory on sm_90");

#if defined(__CUDACC__)

// The work item after `item` of this CTA: from the launch's shared counter (zeroed before the
// launch; items 0 .. gridDim.x - 1 are the CTAs' first), or statically item + gridDim.x without
// one. Thread 0 fetches one item ahead, also in the iteration that finds the end, so returned
// values reach items + 2 gridDim.x - 1 (the host keeps items 2^20 below INT32_MAX). A CTA
// claims up to two items ahead of its consumers (the fetch-ahead and the second Q buffer).
__device__ __forceinline__ int next_work_item(int* work_counter, int item) {
  if (work_counter == nullptr) return item + static_cast<int>(gridDim.x);
  return static_cast<int>(gridDim.x) + atomicAdd(work_counter, 1);
}

template <class Traits, class Element>
__global__ void __launch_bounds__(Traits::kThreads, 1)
    sm90_ws_attention_fwd_kernel(const mmi_attention_problem p,
                                 const __grid_constant__ KvTensorMaps maps,
                                 int* const work_counter) {
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

  const int q_heads = static_cast<int>(p.q_heads);
  const int seq_q = static_cast<int>(p.seq_q);
  const int seq_k = static_cast<int>(p.seq_k);
  const int64_t num_items = p.batch * p.q_heads * p.index.num_q_blocks;  // < 2^31 (host check)

  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&smem.full[s], Traits::kFullArrivals);
      mbarrier_init(&smem.empty[s], Traits::kEmptyArrivals);
    }
#pragma unroll
    for (int buffer = 0; buffer < 2; ++buffer) {
      mbarrier_init(&smem.q_full[buffer], Traits::kQueryArrivals);
      mbarrier_init(&smem.q_empty[buffer], kConsumers);
    }
  }
  __syncthreads();  // barriers initialised

  const uint32_t q_tile0 = shared_address(smem.q[0]);
  const uint32_t k_tile0 = shared_address(smem.k[0]);
  const uint32_t v_tile0 = shared_address(smem.v[0]);
  constexpr uint32_t kQBufferBytes = sizeof(smem.q[0]);
  constexpr uint32_t kBufferBytes = sizeof(smem.k[0]);

  if (producer) {
    // ---- producer warpgroup ---------------------------------------------------------------------
    setmaxnreg_dec<Traits::kProducerRegisters>();
    const int pwarp = tid >> 5;
    const uint32_t q_stride_bytes = static_cast<uint32_t>(p.q_stride_s * 2);
    const uint32_t k_stride_bytes = static_cast<uint32_t>(p.k_stride_s * 2);
    const uint32_t v_stride_bytes = static_cast<uint32_t>(p.v_stride_s * 2);
    uint32_t tile = 0;  // stage uses so far, over all items: stage tile % kStages
    // Thread 0: the CTA's next item, fetched one item ahead so the atomic's latency hides behind
    // the current item's loads.
    int next_item = static_cast<int>(blockIdx.x);
#pragma unroll 1
    for (int j = 0;; ++j) {  // j: items so far, Q buffer j & 1
      const int qbuf = j & 1;
      mbarrier_wait(&smem.q_empty[qbuf], ((j >> 1) & 1) ^ 1);
      if (tid == 0) {
        smem.item[qbuf] = next_item;
        next_item = next_work_item(work_counter, next_item);
      }
      named_barrier_sync(Traits::kProducerBarrier, Traits::kProducerThreads);
      const int item = smem.item[qbuf];
      if (item >= num_items) {
        // Past the last item: complete the Q buffer's phase (both arrivals of every producer
        // thread) so the consumers read the end marker and leave.
        mbarrier_arrive(&smem.q_full[qbuf]);
        cp_async_mbarrier_arrive(&smem.q_full[qbuf]);
        break;
      }
      const CtaWork w = cta_work_item_heavy_first(p, item);
      load_query_positions(p, w, Traits::kBlockQ, smem.query_pos[qbuf], tid,
                           Traits::kProducerThreads);
      if (tid < kD / 8) {
        smem.key_columns[tid] = static_cast<const char*>(p.k) +
                                (w.b * p.k_stride_b + w.kv_h * p.k_stride_h) * 2 + tid * 16;
        smem.value_columns[tid] = static_cast<const char*>(p.v) +
                                  (w.b * p.v_stride_b + w.kv_h * p.v_stride_h) * 2 + tid * 16;
      }
      // Positions and column bases visible to every producer thread; also: no producer thread
      // still reads the previous item's column bases (its last gather preceded this point).
      named_barrier_sync(Traits::kProducerBarrier, Traits::kProducerThreads);
      sm90_gather_rows<typename Traits::Gather, Traits::kBlockQ>(
          q_tile0 + qbuf * kQBufferBytes,
          static_cast<const char*>(p.q) + (w.b * p.q_stride_b + w.h * p.q_stride_h) * 2,
          q_stride_bytes, smem.query_pos[qbuf], seq_q, tid);
      mbarrier_arrive(&smem.q_full[qbuf]);  // releases this thread's query_pos stores
      cp_async_mbarrier_arrive(&smem.q_full[qbuf]);
      cp_async_commit();
      if (pwarp == 0) {
        if (lane == 0) key_walk_init(p, w.b, w.h, w.qb, smem.source, smem.cursor);
        __syncwarp();
        key_tile_issue(smem.source, smem.cursor, smem.staged_pos[0], smem.staged_meta[0], seq_k,
                       lane);
        cp_async_commit();
        cp_async_wait<0>();
        __syncwarp();
      }
#pragma unroll 1
      for (int i = 0;; ++i, ++tile) {
        const int s = tile % kStages;
        if (pwarp == 0) {
          // Tile i's positions landed (previous wait); the stage is free once the consumers let
          // go of its previous use.
          mbarrier_wait(&smem.empty[s], ((tile / kStages) & 1) ^ 1);
          const int sb = i & 1;
          key_tile_finalize(smem.staged_pos[sb], smem.key_pos[s], smem.staged_meta[sb], seq_k,
                            lane);
          KeyTileMeta m = smem.staged_meta[sb];
          // meta.w = 1: the tile's slots hold 64 consecutive positions (TMA-loadable).
          if (maps.enabled && m.x == kKeyTile && m.z - m.y == kKeyTile - 1)
            m.w = __all_sync(0xffffffffu, smem.key_pos[s][lane] == m.y + lane &&
                                              smem.key_pos[s][lane + 32] == m.y + lane + 32);
          if (lane == 0) smem.meta[s] = m;
          if (m.x != 0)
            key_tile_issue(smem.source, smem.cursor, smem.staged_pos[sb ^ 1],
                           smem.staged_meta[sb ^ 1], seq_k, lane);
          cp_async_commit();
          __syncwarp();
          // Publishes key_pos[s] and meta[s] to the consumers.
          if (Traits::kPerThreadArrivals || lane == 0) mbarrier_arrive(&smem.full[s]);
        }
        named_barrier_sync(Traits::kProducerBarrier, Traits::kProducerThreads);
        const KeyTileMeta m = smem.meta[s];
        if (m.x == 0) {
          // The item's walk is over: complete the stage's phase without copies.
          if constexpr (Traits::kPerThreadArrivals)
            mbarrier_arrive(&smem.full[s]);
          else if (tid == 0)
            mbarrier_arrive_count(&smem.full[s], Traits::kProducerThreads);
          ++tile;
          break;
        }
        if (m.w != 0) {
          // Contiguous tile: one thread's TMA copies; everyone else arrives plainly.
          if (tid == 0) {
            // The stage's previous contents may have come through cp.async (generic proxy).
            fence_proxy_async();
            mbarrier_arrive_expect_tx(&smem.full[s], 2 * kBufferBytes);
            tma_load_rows<kD>(k_tile0 + s * kBufferBytes, &maps.k, maps, m.y, w.kv_h, w.b,
                              &smem.full[s]);
            tma_load_rows<kD>(v_tile0 + s * kBufferBytes, &maps.v, maps, m.y, w.kv_h, w.b,
                              &smem.full[s]);
            if constexpr (!Traits::kPerThreadArrivals)
              mbarrier_arrive_count(&smem.full[s], Traits::kProducerThreads - 1);
          } else if constexpr (Traits::kPerThreadArrivals) {
            mbarrier_arrive(&smem.full[s]);
          }
        } else {
          sm90_gather_key_tile<typename Traits::Gather>(
              k_tile0 + s * kBufferBytes, v_tile0 + s * kBufferBytes, smem.key_columns,
              k_stride_bytes, smem.value_columns, v_stride_bytes, smem.key_pos[s], seq_k, tid);
          cp_async_mbarrier_arrive(&smem.full[s]);
        }
        // One group per tile on both paths (empty after TMA), so that the wait below leaves
        // exactly this tile's copies in flight.
        cp_async_commit();
        if (pwarp == 0) {
          cp_async_wait<1>();  // positions of tile i + 1 (older group); tile i's K / V fly on
          __syncwarp();
        }
      }
    }
    cp_async_wait<0>();  // no copy outlives its thread
    return;
  }

  // ---- consumer warpgroups ------------------------------------------------------------------------
  setmaxnreg_inc<Traits::kConsumerRegisters>();
  const float scale_log2 = positive_scale_log2(p.scale);  // q.k * scale in the exp2 domain
  const uint32_t q_sign = p.scale < 0.f ? 0x80008000u : 0u;  // negative scale folded into Q
  const int causal_offset = seq_k - seq_q;
  const bool causal = p.causal != 0;
  uint32_t tile = 0;
  // Item start and epilogue (see Sm90WsTraits::kCtaEpilogue): the consumer warpgroup, or both.
  const int epilogue_group = Traits::kCtaEpilogue ? 0 : wg;
  auto item_barrier = [&]() {
    named_barrier_sync(Traits::kConsumerBarrier + epilogue_group, Traits::kEpilogueThreads);
  };
  // The consumers' side of a stage's "empty" barrier (see Sm90WsTraits::kEmptyArrivals).
  auto release_stage = [&](int stage) {
    if constexpr (!Traits::kPerThreadArrivals) __syncwarp();
    if (Traits::kPerThreadArrivals || lane == 0) mbarrier_arrive(&smem.empty[stage]);
  };
#pragma unroll 1
  for (int j = 0;; ++j) {
    const int qbuf = j & 1;
    const uint32_t q_tile = q_tile0 + qbuf * kQBufferBytes;
    const int* query_pos = smem.query_pos[qbuf];
    mbarrier_wait(&smem.q_full[qbuf], (j >> 1) & 1);
    const int item = smem.item[qbuf];  // written before the producer's q_full arrivals
    if (item >= num_items) break;
    const CtaWork w = cta_work_item_heavy_first(p, item);
    int row_limit[2];
    sm90_row_limits(query_pos, warp, lane, causal_offset, causal, row_limit, smem.warp_limits);
    // Q fragments of this warp's 16 rows, k16 step ks: ldmatrix matrices (rows 0-7 | 8-15) x
    // (k 0-7 | 8-15) in the A-fragment register order.
    uint32_t qa[Math::kKSteps][4];
    {
      const int row = warp * 16 + (lane & 15);
#pragma unroll
      for (int ks = 0; ks < Math::kKSteps; ++ks) {
        ldmatrix_x4(qa[ks], q_tile + swizzled_element_offset(Traits::kBlockQ, row,
                                                             16 * ks + 8 * (lane >> 4)));
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          qa[ks][e] ^= q_sign;
          fence_operand(qa[ks][e]);
        }
      }
    }
    item_barrier();  // warp_limits published
    // S[64x64] = Q K^T for this warpgroup's rows, one commit group.
    auto issue_s = [&](float (&sc)[Math::kScoreRegs], uint32_t k_tile) {
#pragma unroll
      for (int ks = 0; ks < Math::kKSteps; ++ks)
        Wgmma::rs_n64(sc, qa[ks], k_major_descriptor(k_tile, Math::kBlockK, 0, ks),
                      ks > 0 ? 1 : 0);
      wgmma_commit();
    };
    const int2 wg_limits = sm90_warpgroup_limits(smem.warp_limits, wg);
    const int wg_limit_min = wg_limits.x;
    const int wg_limit_max = wg_limits.y;

    float o[Math::kOutRegs];
#pragma unroll
    for (int r = 0; r < Math::kOutRegs; ++r) o[r] = 0.f;
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
    for (;; ++tile) {
      const int s = tile % kStages;
      mbarrier_wait(&smem.full[s], (tile / kStages) & 1);
      const KeyTileMeta meta = smem.meta[s];
      if (meta.x == 0) {
        release_stage(s);  // the end-of-walk stage carries no data
        ++tile;
        break;
      }
      // A gathered stage's cp.async writes -> async proxy (wgmma operands); TMA writes are
      // already in the async proxy.
      if (meta.w == 0) fence_proxy_async();
      // Skip: no key of the tile is allowed for any row of the warpgroup (warpgroup-uniform).
      const bool compute = meta.y <= wg_limit_max;
      const uint32_t k_tile = k_tile0 + s * kBufferBytes;
      const uint32_t v_tile = v_tile0 + s * kBufferBytes;
      const int* key_pos = smem.key_pos[s];

      float sc[Math::kScoreRegs];
      float correction[2] = {1.f, 1.f};
      bool rescale[2] = {false, false};
      auto softmax = [&]() {
        sm90_tile_softmax<Math>(sc, meta.z > wg_limit_min, key_pos, t, row_limit, row_max,
                                row_sum, correction, rescale, scale_log2);
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
          release_stage(pending_stage);
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
          release_stage(pending_stage);
        }
        release_stage(s);  // this warpgroup never reads tile i
      }
      pending = compute;
    }
    if (pending) {  // the last computed tile's P V
      sm90_run_pv<Math, Wgmma>(o, pa, pending_v);
      release_stage(pending_stage);
    }
    // Epilogue: each warp stages its output rows in the item's Q buffer over its own Q rows
    // (read into registers at the item's start); the buffer and query positions go back to the
    // producer once both warpgroups have scattered their rows.
    unsigned char* stage = reinterpret_cast<unsigned char*>(smem.q[qbuf]);
    uint16_t* out_rows = static_cast<uint16_t*>(p.out) + w.b * p.out_stride_b + w.h * p.out_stride_h;
    float* lse_rows =
        p.lse != nullptr ? p.lse + (static_cast<int64_t>(w.b) * q_heads + w.h) * seq_q : nullptr;
    if constexpr (Traits::kCtaEpilogue) item_barrier();  // the old order: both warpgroups first
    sm90_stage_output<Math, Element>(o, row_sum, row_max, scale_log2, stage, query_pos, lse_rows,
                                     warp, lane);
    item_barrier();
    constexpr int kScatterRows = Traits::kBlockQ * Traits::kEpilogueThreads / kConsumers;
    sm90_scatter_output<Math, Traits::kEpilogueThreads, kScatterRows>(
        stage, query_pos, out_rows, p.out_stride_s, ctid & (Traits::kEpilogueThreads - 1),
        epilogue_group * kScatterRows);
    mbarrier_arrive(&smem.q_empty[qbuf]);
  }
#else
  // Built without sm_90a features: the host never launches this (sm90_kernel_available).
  __trap();
#endif
}

#endif  // __CUDACC__

}  // namespace sm90
}  // namespace mmi_cuda
