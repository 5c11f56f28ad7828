#include <stdlib.h>

#include "mmi_index_builders.h"
#include "mmi_internal.h"

static int check_strictly_increasing(const int32_t *list, int64_t n, int64_t upper,
                                     const char *name, int64_t b, int64_t h, mmi_error *err) {
  for (int64_t i = 0; i < n; ++i) {
    if (list[i] < 0 || list[i] >= upper)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "%s[%lld, %lld, %lld] = %d is outside [0, %lld)", name, (long long)b,
                           (long long)h, (long long)i, list[i], (long long)upper);
    if (i > 0 && list[i] <= list[i - 1])
      return mmi_error_set(err, MMI_ERR_UNSORTED,
                           "%s[%lld, %lld, :] must be strictly increasing, but entry %lld (%d) "
                           "follows %d",
                           name, (long long)b, (long long)h, (long long)i, list[i], list[i - 1]);
  }
  return MMI_OK;
}

int mmi_vertical_slash_check_args(int64_t batch, int64_t heads, int64_t seq_q, int64_t seq_k,
                                  int64_t block_q, int64_t block_k, int64_t num_vertical,
                                  int64_t num_slash, int64_t max_ranges, mmi_error *err) {
  mmi_error_clear(err);
  if (batch < 1 || heads < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "batch and heads must be >= 1, got %lld, %lld",
                         (long long)batch, (long long)heads);
  if (seq_q < 1 || !mmi__fits_int32(seq_q))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "seq_q must be in [1, 2^31), got %lld",
                         (long long)seq_q);
  if (seq_k < seq_q || !mmi__fits_int32(seq_k))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "seq_k must be in [seq_q, 2^31) for causal prefill, got %lld (seq_q %lld)",
                         (long long)seq_k, (long long)seq_q);
  const int status = mmi__check_block_sizes(block_q, block_k, err);
  if (status != MMI_OK) return status;
  if (num_vertical < 0 || num_slash < 0)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "num_vertical and num_slash must be >= 0, got %lld, %lld",
                         (long long)num_vertical, (long long)num_slash);
  if (max_ranges < 0 || (num_slash > 0 && max_ranges < 1))
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "max_ranges must be >= 1 when slashes are given, got %lld",
                         (long long)max_ranges);
  return MMI_OK;
}

int mmi_build_vertical_slash_index(int64_t batch, int64_t heads, int64_t seq_q, int64_t seq_k,
                                   int64_t block_q, int64_t block_k, const int32_t *vertical,
                                   int64_t num_vertical, const int32_t *slash, int64_t num_slash,
                                   int64_t max_ranges, int32_t *kv_ranges, int32_t *kv_range_count,
                                   int32_t *kv_columns, int32_t *kv_column_count, mmi_error *err) {
  mmi_error_clear(err);
  int status = mmi_vertical_slash_check_args(batch, heads, seq_q, seq_k, block_q, block_k,
                                             num_vertical, num_slash, max_ranges, err);
  if (status != MMI_OK) return status;
  if (num_vertical > 0 && vertical == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "vertical is NULL");
  if (num_slash > 0 && slash == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "slash is NULL");
  if (kv_range_count == NULL || kv_column_count == NULL ||
      (max_ranges > 0 && kv_ranges == NULL) || (num_vertical > 0 && kv_columns == NULL))
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "an output buffer is NULL");

  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t bh = b * heads + h;
      status = num_vertical == 0 ? MMI_OK
                                 : check_strictly_increasing(vertical + bh * num_vertical,
                                                             num_vertical, seq_k, "vertical", b, h,
                                                             err);
      if (status != MMI_OK) return status;
      status = num_slash == 0 ? MMI_OK
                              : check_strictly_increasing(slash + bh * num_slash, num_slash, seq_k,
                                                          "slash", b, h, err);
      if (status != MMI_OK) return status;
    }
  }

  mmi__range *ranges = (mmi__range *)malloc((size_t)(num_slash > 0 ? num_slash : 1) *
                                            sizeof(mmi__range));
  if (ranges == NULL)
    return mmi_error_set(err, MMI_ERR_OUT_OF_MEMORY, "cannot allocate %lld slash ranges",
                         (long long)num_slash);

  const int64_t offset = seq_k - seq_q;
  const int64_t num_blocks = mmi_num_q_blocks(seq_q, block_q);
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    /* Empty lists may come as NULL (empty tensors): no pointer arithmetic on them. */
    const int32_t *v_list = num_vertical > 0 ? vertical + bh * num_vertical : NULL;
    const int32_t *s_list = num_slash > 0 ? slash + bh * num_slash : NULL;
    for (int64_t qb = 0; qb < num_blocks; ++qb) {
      const int64_t a_lo = qb * block_q + offset;
      const int64_t limit = mmi__min64((qb + 1) * block_q, seq_q) + offset;
      const int64_t a_hi = limit - 1;
      /* Largest distance first gives ascending starts, so normalising sorts in linear time. */
      for (int64_t s = 0; s < num_slash; ++s) {
        const int64_t d = s_list[num_slash - 1 - s];
        ranges[s] = mmi__align_range(a_lo - d, a_hi - d + 1, block_k, limit);
      }
      int64_t n_ranges = mmi__normalize_ranges(ranges, num_slash);
      if (n_ranges > max_ranges) {
        /* Over capacity: the last kept range absorbs every later one (a superset of the keys). */
        ranges[max_ranges - 1].end = ranges[n_ranges - 1].end;
        n_ranges = max_ranges;
      }
      const int64_t cell = bh * num_blocks + qb;
      int32_t *out_ranges = kv_ranges != NULL ? kv_ranges + cell * max_ranges * 2 : NULL;
      for (int64_t r = 0; r < max_ranges; ++r) {
        out_ranges[2 * r] = r < n_ranges ? (int32_t)ranges[r].start : 0;
        out_ranges[2 * r + 1] = r < n_ranges ? (int32_t)ranges[r].end : 0;
      }
      kv_range_count[cell] = (int32_t)n_ranges;

      /* Both lists are sorted: one merge-walk decides which verticals fall inside a range. */
      int32_t *out_columns = kv_columns != NULL ? kv_columns + cell * num_vertical : NULL;
      int64_t n_columns = 0, r = 0;
      for (int64_t i = 0; i < num_vertical && v_list[i] <= a_hi; ++i) {
        while (r < n_ranges && ranges[r].end <= v_list[i]) ++r;
        if (r < n_ranges && ranges[r].start <= v_list[i]) continue;
        out_columns[n_columns++] = v_list[i];
      }
      for (int64_t c = n_columns; c < num_vertical; ++c) out_columns[c] = 0;
      kv_column_count[cell] = (int32_t)n_columns;
    }
  }
  free(ranges);
  return MMI_OK;
}
