/* The one sparse-index representation every mminference pattern compiles to.
 *
 * Notation
 *   B   batch, Hq query heads, Sq query length, Sk key length.
 *   BQ  query block (tile) height: 64 or 128 on the GPU (Hopper uses 128-row tiles), any >= 1 on CPU.
 *   NQB = ceil(Sq / BQ) query blocks.
 *   R   range capacity per query block, C column capacity per query block.
 *
 * Slots and positions
 *   A *slot* is an index into the (possibly permuted) order in which the kernel walks tokens; a
 *   *position* is the token's index in the original sequence. Without permutations they coincide.
 *     q_perm[b, h, slot] = original query position held by query slot `slot`    (NULL: identity)
 *     k_perm[b, h, slot] = original key position held by key slot `slot`        (NULL: identity)
 *   Query block `qb` holds query slots [qb*BQ, min((qb+1)*BQ, Sq)). The kernel gathers Q/K/V rows
 *   through the permutations and scatters the output back to original positions, so permutations
 *   never require a physical copy of the tensors.
 *
 * Per (b, h, qb), the keys a query block attends are the union of
 *   kv_ranges[b, h, qb, r, 0:2] = [start, end) half-open key-slot ranges, r < kv_range_count[b, h, qb]
 *   kv_columns[b, h, qb, c]     = single key slots,                      c < kv_column_count[b, h, qb]
 *   Ranges are sorted by start and pairwise disjoint (start[r] >= end[r-1]); columns are strictly
 *   increasing and lie outside every range of the same block, so no key is counted twice.
 *   All rows of a block share its key set: a pattern's mask is defined at query-block granularity.
 *
 * Causality is judged in original positions: with `causal`, query position i may attend key
 * position j only if j <= i + (Sk - Sq) (the offset covers chunked prefill against a longer cache).
 *
 * A query row with no allowed key (empty key set, or every key in it masked by causality) produces
 * an output row of zeros and a log-sum-exp of -infinity; never NaN.
 *
 * Broadcasting: each index array is addressed through its own batch and head strides (in elements);
 * a stride of 0 shares the entry across that dimension (e.g. one A-shape index for all heads). The
 * trailing dimensions of each array are contiguous. `h` is always the *query* head index; for GQA,
 * key/value head = h / (Hq / Hkv).
 *
 * All index values are int32: sequences up to 2^31 - 1 tokens. */
#ifndef MMI_SPARSE_INDEX_H
#define MMI_SPARSE_INDEX_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mmi_sparse_index {
  int64_t block_q;        /* BQ */
  int64_t num_q_blocks;   /* NQB, must equal ceil(Sq / BQ) */
  int64_t max_ranges;     /* R (may be 0) */
  int64_t max_columns;    /* C (may be 0) */

  const int32_t *kv_ranges;      /* [B, Hq, NQB, R, 2]; trailing [NQB, R, 2] contiguous */
  int64_t kv_ranges_stride_b, kv_ranges_stride_h;
  const int32_t *kv_range_count; /* [B, Hq, NQB]; trailing [NQB] contiguous */
  int64_t kv_range_count_stride_b, kv_range_count_stride_h;

  const int32_t *kv_columns;      /* [B, Hq, NQB, C]; NULL allowed when C == 0 */
  int64_t kv_columns_stride_b, kv_columns_stride_h;
  const int32_t *kv_column_count; /* [B, Hq, NQB]; NULL allowed when C == 0 */
  int64_t kv_column_count_stride_b, kv_column_count_stride_h;

  const int32_t *q_perm; /* NULL or [B, Hq, Sq], a permutation of 0..Sq-1 per (b, h) */
  int64_t q_perm_stride_b, q_perm_stride_h;
  const int32_t *k_perm; /* NULL or [B, Hq, Sk], a permutation of 0..Sk-1 per (b, h) */
  int64_t k_perm_stride_b, k_perm_stride_h;
} mmi_sparse_index;

#ifdef __cplusplus
}
#endif

#endif /* MMI_SPARSE_INDEX_H */
