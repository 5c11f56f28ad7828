// What one CTA of the attention forwards (mma.sync, sm90, sm90 warp-specialised) works on, and the
// per-CTA set-up they share: the (batch, head, query block) of the CTA, the original positions of
// its query rows, and the softmax scale in the exp2 domain.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "mmi_attention.h"

namespace mmi_cuda {

struct CtaWork {
  int b, h, qb;  // batch, query head, query block
  int kv_h;      // kv head of h (GQA)
};

#if defined(__CUDACC__)

// Work item -> (b, h, query block). Query blocks run last-first (in causal patterns the later
// blocks have the most keys, so the long items start early), all heads of a block together (GQA
// heads sharing K/V run side by side). Items are numbered 0 .. batch * q_heads * num_q_blocks - 1:
// one per CTA (cta_work), or several per persistent CTA in steps of gridDim.x.
__device__ __forceinline__ CtaWork cta_work_item(const mmi_attention_problem& p, int item) {
  const int q_heads = static_cast<int>(p.q_heads);
  const int heads_total = static_cast<int>(p.batch) * q_heads;
  const int wave = item / heads_total;
  const int bh = item - wave * heads_total;
  CtaWork w;
  w.qb = static_cast<int>(p.index.num_q_blocks) - 1 - wave;
  w.b = bh / q_heads;
  w.h = bh - w.b * q_heads;
  w.kv_h = w.h / (q_heads / static_cast<int>(p.kv_heads));
  return w;
}

// The persistent kernel's order. Its CTAs take items from a shared counter, so the heaviest
// items must come early, not last. Without a query permutation that is cta_work_item's order
// (causal rows grow heavier towards the back). A permutation may put heavy rows anywhere, e.g.
// the grid index's line queries (they attend every earlier key) at the front: then the waves
// alternate between the last and the first query blocks (last, first, last - 1, first + 1, ...),
// so heavy blocks at either end start within the first waves. (Alternating always cost the
// A-shape 2% on an H100: consecutive waves no longer share their local windows in L2.)
__device__ __forceinline__ CtaWork cta_work_item_heavy_first(const mmi_attention_problem& p,
                                                             int item) {
#if defined(MMI_SM90_STATIC_SCHEDULE)  // A/B timing against the static last-first schedule
  return cta_work_item(p, item);
#else
  if (p.index.q_perm == nullptr) return cta_work_item(p, item);
  const int heads_total = static_cast<int>(p.batch) * static_cast<int>(p.q_heads);
  const int wave = item / heads_total;
  const int last_first = (wave & 1) == 0 ? wave >> 1 : static_cast<int>(p.index.num_q_blocks) - 1 -
                                                           (wave >> 1);
  // cta_work_item's wave w runs query block num_q_blocks - 1 - w.
  return cta_work_item(p, (last_first * heads_total) + (item - wave * heads_total));
#endif
}

__device__ __forceinline__ CtaWork cta_work(const mmi_attention_problem& p) {
  return cta_work_item(p, static_cast<int>(blockIdx.x));
}

// query_pos[r] = original position of query slot qb * block_q + r (r < block_q), or -1 past the
// sequence end or for a q_perm entry outside [0, seq_q). Threads tid = 0 .. threads - 1.
__device__ __forceinline__ void load_query_positions(const mmi_attention_problem& p,
                                                     const CtaWork& w, int block_q,
                                                     int* query_pos, int tid, int threads) {
  const int seq_q = static_cast<int>(p.seq_q);
  const int32_t* q_perm = p.index.q_perm;
  if (q_perm != nullptr) q_perm += w.b * p.index.q_perm_stride_b + w.h * p.index.q_perm_stride_h;
  for (int r = tid; r < block_q; r += threads) {
    const int slot = w.qb * block_q + r;
    int pos = -1;
    if (slot < seq_q) {
      pos = q_perm != nullptr ? __ldg(q_perm + slot) : slot;
      if (static_cast<unsigned>(pos) >= static_cast<unsigned>(seq_q)) pos = -1;
    }
    query_pos[r] = pos;
  }
}

// exp2 runs on q.k * scale_log2 with a positive scale_log2: a negative scale is folded into q
// (sign flip, exact) and a zero scale becomes the smallest normal one (same weights).
__device__ __forceinline__ float positive_scale_log2(float scale) {
  const float scale_log2 = fabsf(scale) * 1.4426950408889634f;
  return scale_log2 >= FLT_MIN ? scale_log2 : FLT_MIN;
}

#endif  // __CUDACC__

}  // namespace mmi_cuda
