#include <stddef.h>

#include "mmi_index_builders.h"
#include "mmi_internal.h"

int mmi_build_a_shape_index(int64_t seq_q, int64_t seq_k, int64_t block_q, int64_t block_k,
                            int64_t sink, int64_t local, int32_t *kv_ranges,
                            int32_t *kv_range_count, mmi_error *err) {
  mmi_error_clear(err);
  if (kv_ranges == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "kv_ranges is NULL");
  if (kv_range_count == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "kv_range_count is NULL");
  if (seq_q < 1 || !mmi__fits_int32(seq_q))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "seq_q must be in [1, 2^31), got %lld",
                         (long long)seq_q);
  if (seq_k < seq_q || !mmi__fits_int32(seq_k))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "seq_k must be in [seq_q, 2^31) for causal prefill, got %lld (seq_q %lld)",
                         (long long)seq_k, (long long)seq_q);
  int status = mmi__check_block_sizes(block_q, block_k, err);
  if (status != MMI_OK) return status;
  if (sink < 0)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "sink must be >= 0, got %lld", (long long)sink);
  if (local < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "local must be >= 1, got %lld",
                         (long long)local);

  const int64_t offset = seq_k - seq_q;
  const int64_t num_blocks = mmi_num_q_blocks(seq_q, block_q);
  for (int64_t qb = 0; qb < num_blocks; ++qb) {
    const int64_t first = qb * block_q + offset;                         /* first absolute query */
    const int64_t limit = mmi__min64((qb + 1) * block_q, seq_q) + offset; /* causal key limit */
    mmi__range ranges[MMI_A_SHAPE_MAX_RANGES];
    ranges[0] = mmi__align_range(0, sink, block_k, limit);
    ranges[1] = mmi__align_range(first - local + 1, limit, block_k, limit);
    const int64_t count = mmi__normalize_ranges(ranges, MMI_A_SHAPE_MAX_RANGES);
    int32_t *out = kv_ranges + qb * MMI_A_SHAPE_MAX_RANGES * 2;
    for (int64_t r = 0; r < MMI_A_SHAPE_MAX_RANGES; ++r) {
      out[2 * r] = r < count ? (int32_t)ranges[r].start : 0;
      out[2 * r + 1] = r < count ? (int32_t)ranges[r].end : 0;
    }
    kv_range_count[qb] = (int32_t)count;
  }
  return MMI_OK;
}
