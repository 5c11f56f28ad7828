#include <stdlib.h>
#include <string.h>

#include "mmi_attention.h"
#include "mmi_internal.h"

int mmi_head_dim_supported(int64_t head_dim) {
  return head_dim == 64 || head_dim == 80 || head_dim == 96 || head_dim == 128;
}

static int check_problem_shape(const mmi_attention_problem *p, mmi_error *err) {
  if (p->dtype != MMI_DTYPE_FLOAT32 && p->dtype != MMI_DTYPE_FLOAT16 &&
      p->dtype != MMI_DTYPE_BFLOAT16)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED, "dtype %d is not float32/float16/bfloat16",
                         (int)p->dtype);
  if (p->batch < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "q: batch must be >= 1, got %lld",
                         (long long)p->batch);
  if (p->q_heads < 1 || p->kv_heads < 1 || p->q_heads % p->kv_heads != 0)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "k: query heads (%lld) must be a positive multiple of key/value heads "
                         "(%lld)",
                         (long long)p->q_heads, (long long)p->kv_heads);
  if (p->seq_q < 1 || !mmi__fits_int32(p->seq_q))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "q: sequence length must be in [1, 2^31), got %lld", (long long)p->seq_q);
  if (p->seq_k < 1 || !mmi__fits_int32(p->seq_k))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "k: sequence length must be in [1, 2^31), got %lld", (long long)p->seq_k);
  if (p->causal && p->seq_k < p->seq_q)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "k: causal attention needs seq_k >= seq_q, got %lld < %lld",
                         (long long)p->seq_k, (long long)p->seq_q);
  if (!mmi_head_dim_supported(p->head_dim))
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "q: head_dim %lld is not supported (supported: 64, 80, 96, 128)",
                         (long long)p->head_dim);
  if (p->q == NULL || p->k == NULL || p->v == NULL || p->out == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "q, k, v and out must be non-NULL");
  return MMI_OK;
}

static int check_index_shape(const mmi_attention_problem *p, mmi_error *err) {
  const mmi_sparse_index *ix = &p->index;
  if (ix->block_q < 1 || ix->block_q > 4096)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "block_q must be in [1, 4096], got %lld",
                         (long long)ix->block_q);
  const int64_t nqb = mmi__ceil_div(p->seq_q, ix->block_q);
  if (ix->num_q_blocks != nqb)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "kv_ranges: %lld query blocks, but ceil(seq_q %lld / block_q %lld) = %lld",
                         (long long)ix->num_q_blocks, (long long)p->seq_q, (long long)ix->block_q,
                         (long long)nqb);
  if (ix->max_ranges < 0 || ix->max_columns < 0)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "kv_ranges/kv_columns capacities must be >= 0");
  if (ix->kv_ranges == NULL && ix->max_ranges > 0)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "kv_ranges is NULL");
  if (ix->kv_range_count == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "kv_range_count is NULL");
  if (ix->max_columns > 0 && (ix->kv_columns == NULL || ix->kv_column_count == NULL))
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "kv_columns or kv_column_count is NULL");
  return MMI_OK;
}

/* Checks that perm[0:n] is a permutation of 0..n-1, using `seen` (n bytes) as scratch. */
static int check_permutation(const int32_t *perm, int64_t n, unsigned char *seen, const char *name,
                             int64_t b, int64_t h, mmi_error *err) {
  memset(seen, 0, (size_t)n);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t v = perm[i];
    if (v < 0 || v >= n)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "%s[%lld, %lld, %lld] = %d is outside [0, %lld)", name, (long long)b,
                           (long long)h, (long long)i, v, (long long)n);
    if (seen[v])
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "%s[%lld, %lld, :] is not a permutation: %d appears twice", name,
                           (long long)b, (long long)h, v);
    seen[v] = 1;
  }
  return MMI_OK;
}

/* Entries addressed through a zero stride repeat an earlier (b, h): checking them again is waste. */
static int is_broadcast_repeat(int64_t b, int64_t h, int64_t stride_b, int64_t stride_h) {
  return (b > 0 && stride_b == 0) || (h > 0 && stride_h == 0);
}

static int check_block(const mmi_attention_problem *p, int64_t b, int64_t h, int64_t qb,
                       mmi_error *err) {
  const mmi_sparse_index *ix = &p->index;
  const int32_t n_ranges =
      ix->kv_range_count[b * ix->kv_range_count_stride_b + h * ix->kv_range_count_stride_h + qb];
  if (n_ranges < 0 || n_ranges > ix->max_ranges)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "kv_range_count[%lld, %lld, %lld] = %d is outside [0, %lld]",
                         (long long)b, (long long)h, (long long)qb, n_ranges,
                         (long long)ix->max_ranges);
  /* kv_ranges may be NULL when R == 0: no pointer arithmetic on it then. */
  const int32_t *ranges = ix->max_ranges > 0 ? ix->kv_ranges + b * ix->kv_ranges_stride_b +
                                                   h * ix->kv_ranges_stride_h + qb * ix->max_ranges * 2
                                             : NULL;
  for (int32_t r = 0; r < n_ranges; ++r) {
    const int32_t start = ranges[2 * r], end = ranges[2 * r + 1];
    if (start < 0 || end > p->seq_k || start > end)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "kv_ranges[%lld, %lld, %lld, %d] = [%d, %d) is not inside [0, seq_k = "
                           "%lld)",
                           (long long)b, (long long)h, (long long)qb, r, start, end,
                           (long long)p->seq_k);
    if (r > 0 && start < ranges[2 * r - 1])
      return mmi_error_set(err, MMI_ERR_UNSORTED,
                           "kv_ranges[%lld, %lld, %lld, :] must be sorted and disjoint, but range "
                           "%d starts at %d before the previous end %d",
                           (long long)b, (long long)h, (long long)qb, r, start, ranges[2 * r - 1]);
  }
  if (ix->max_columns == 0) return MMI_OK;
  const int32_t n_columns = ix->kv_column_count[b * ix->kv_column_count_stride_b +
                                                h * ix->kv_column_count_stride_h + qb];
  if (n_columns < 0 || n_columns > ix->max_columns)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "kv_column_count[%lld, %lld, %lld] = %d is outside [0, %lld]",
                         (long long)b, (long long)h, (long long)qb, n_columns,
                         (long long)ix->max_columns);
  const int32_t *columns = ix->kv_columns + b * ix->kv_columns_stride_b +
                           h * ix->kv_columns_stride_h + qb * ix->max_columns;
  int32_t r = 0;
  for (int32_t c = 0; c < n_columns; ++c) {
    const int32_t col = columns[c];
    if (col < 0 || col >= p->seq_k)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "kv_columns[%lld, %lld, %lld, %d] = %d is outside [0, seq_k = %lld)",
                           (long long)b, (long long)h, (long long)qb, c, col, (long long)p->seq_k);
    if (c > 0 && col <= columns[c - 1])
      return mmi_error_set(err, MMI_ERR_UNSORTED,
                           "kv_columns[%lld, %lld, %lld, :] must be strictly increasing, but entry "
                           "%d (%d) follows %d",
                           (long long)b, (long long)h, (long long)qb, c, col, columns[c - 1]);
    while (r < n_ranges && ranges[2 * r + 1] <= col) ++r;
    if (r < n_ranges && ranges[2 * r] <= col)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "kv_columns[%lld, %lld, %lld, %d] = %d lies inside kv_ranges entry "
                           "[%d, %d): a key would be counted twice",
                           (long long)b, (long long)h, (long long)qb, c, col, ranges[2 * r],
                           ranges[2 * r + 1]);
  }
  return MMI_OK;
}

int mmi_sparse_attention_check_shapes(const mmi_attention_problem *p, mmi_error *err) {
  mmi_error_clear(err);
  if (p == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "problem is NULL");
  const int status = check_problem_shape(p, err);
  return status != MMI_OK ? status : check_index_shape(p, err);
}

int mmi_sparse_attention_check(const mmi_attention_problem *p, mmi_error *err) {
  int status = mmi_sparse_attention_check_shapes(p, err);
  if (status != MMI_OK) return status;

  const mmi_sparse_index *ix = &p->index;
  for (int64_t b = 0; b < p->batch; ++b)
    for (int64_t h = 0; h < p->q_heads; ++h)
      for (int64_t qb = 0; qb < ix->num_q_blocks; ++qb) {
        /* (b, h) repeats an earlier pair only if every block array broadcasts over the same dim:
         * arrays broadcast over different dims combine into pairs that were never checked. */
        const int all_b_broadcast = ix->kv_ranges_stride_b == 0 && ix->kv_range_count_stride_b == 0 &&
                                    ix->kv_columns_stride_b == 0 && ix->kv_column_count_stride_b == 0;
        const int all_h_broadcast = ix->kv_ranges_stride_h == 0 && ix->kv_range_count_stride_h == 0 &&
                                    ix->kv_columns_stride_h == 0 && ix->kv_column_count_stride_h == 0;
        if ((b > 0 && all_b_broadcast) || (h > 0 && all_h_broadcast)) continue;
        status = check_block(p, b, h, qb, err);
        if (status != MMI_OK) return status;
      }

  if (ix->q_perm == NULL && ix->k_perm == NULL) return MMI_OK;
  unsigned char *seen = (unsigned char *)malloc((size_t)mmi__max64(p->seq_q, p->seq_k));
  if (seen == NULL)
    return mmi_error_set(err, MMI_ERR_OUT_OF_MEMORY, "cannot allocate permutation check scratch");
  for (int64_t b = 0; b < p->batch && status == MMI_OK; ++b)
    for (int64_t h = 0; h < p->q_heads && status == MMI_OK; ++h) {
      if (ix->q_perm != NULL && !is_broadcast_repeat(b, h, ix->q_perm_stride_b, ix->q_perm_stride_h))
        status = check_permutation(ix->q_perm + b * ix->q_perm_stride_b + h * ix->q_perm_stride_h,
                                   p->seq_q, seen, "q_perm", b, h, err);
      if (status == MMI_OK && ix->k_perm != NULL &&
          !is_broadcast_repeat(b, h, ix->k_perm_stride_b, ix->k_perm_stride_h))
        status = check_permutation(ix->k_perm + b * ix->k_perm_stride_b + h * ix->k_perm_stride_h,
                                   p->seq_k, seen, "k_perm", b, h, err);
    }
  free(seen);
  return status;
}
