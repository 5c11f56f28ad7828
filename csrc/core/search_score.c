/* Candidate scoring of the pattern search: semantics in mmi_search.h. */
#include <stdlib.h>
#include <string.h>

#include "mmi_internal.h"
#include "mmi_search.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int mmi_search_check(const mmi_search_problem *p, mmi_error *err) {
  mmi_error_clear(err);
  if (p == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "problem is NULL");
  if (p->heads < 1 || p->kv_heads < 1 || p->heads % p->kv_heads != 0)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "probs: heads (%lld) must be a positive multiple of value heads (%lld)",
                         (long long)p->heads, (long long)p->kv_heads);
  if (p->rows < 0)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "row_pos: rows must be >= 0, got %lld",
                         (long long)p->rows);
  if (p->seq < 1 || !mmi__fits_int32(p->seq))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "modality: seq must be in [1, 2^31), got %lld",
                         (long long)p->seq);
  if (p->num_modalities < 1 || p->num_modalities > MMI_SEARCH_MAX_MODALITIES)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "num_modalities must be in [1, %d], got %lld",
                         MMI_SEARCH_MAX_MODALITIES, (long long)p->num_modalities);
  if (p->block_k < 1 || p->block_k > 4096)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "block_k must be in [1, 4096], got %lld",
                         (long long)p->block_k);
  const mmi_sparse_index *ix = &p->index;
  if (ix->block_q < 1 || ix->block_q > 4096)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "block_q must be in [1, 4096], got %lld",
                         (long long)ix->block_q);
  if (ix->num_q_blocks != mmi__ceil_div(p->seq, ix->block_q))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "kv_ranges: %lld query blocks, but ceil(seq %lld / block_q %lld) = %lld",
                         (long long)ix->num_q_blocks, (long long)p->seq, (long long)ix->block_q,
                         (long long)mmi__ceil_div(p->seq, ix->block_q));
  if (ix->max_ranges < 0 || ix->max_columns < 0)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "kv_ranges/kv_columns capacities must be >= 0");
  if (ix->kv_range_count == NULL || (ix->max_ranges > 0 && ix->kv_ranges == NULL))
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "kv_ranges or kv_range_count is NULL");
  if (ix->max_columns > 0 && (ix->kv_columns == NULL || ix->kv_column_count == NULL))
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "kv_columns or kv_column_count is NULL");
  if (p->modality == NULL || p->block_tiles == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "modality and block_tiles must be non-NULL");
  if (p->rows > 0 && (p->probs == NULL || p->row_pos == NULL || p->kept_mass == NULL))
    return mmi_error_set(err, MMI_ERR_NULL_POINTER,
                         "probs, row_pos and kept_mass must be non-NULL when rows > 0");
  if ((p->value == NULL) != (p->kept_out == NULL))
    return mmi_error_set(err, MMI_ERR_NULL_POINTER,
                         "value and kept_out must both be NULL or both be non-NULL");
  if (p->value != NULL && (p->head_dim < 1 || p->head_dim > 1024))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "value: head_dim must be in [1, 1024], got %lld",
                         (long long)p->head_dim);
  return MMI_OK;
}

/* perm[0:n] must be a permutation of 0..n-1; `seen` is n bytes of scratch. */
static int check_permutation(const int32_t *perm, int64_t n, unsigned char *seen, const char *name,
                             int64_t h, mmi_error *err) {
  memset(seen, 0, (size_t)n);
  for (int64_t s = 0; s < n; ++s) {
    const int32_t v = perm[s];
    if (v < 0 || v >= n)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "%s[0, %lld, %lld] = %d is outside [0, %lld)",
                           name, (long long)h, (long long)s, v, (long long)n);
    if (seen[v])
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "%s[0, %lld, :] is not a permutation: %d appears twice", name,
                           (long long)h, v);
    seen[v] = 1;
  }
  return MMI_OK;
}

static const int32_t *block_ranges(const mmi_sparse_index *ix, int64_t h, int64_t qb) {
  return ix->max_ranges > 0 ? ix->kv_ranges + h * ix->kv_ranges_stride_h + qb * ix->max_ranges * 2
                            : NULL;
}

static int32_t block_range_count(const mmi_sparse_index *ix, int64_t h, int64_t qb) {
  return ix->kv_range_count[h * ix->kv_range_count_stride_h + qb];
}

static const int32_t *block_columns(const mmi_sparse_index *ix, int64_t h, int64_t qb) {
  return ix->max_columns > 0
             ? ix->kv_columns + h * ix->kv_columns_stride_h + qb * ix->max_columns
             : NULL;
}

static int32_t block_column_count(const mmi_sparse_index *ix, int64_t h, int64_t qb) {
  return ix->max_columns > 0 ? ix->kv_column_count[h * ix->kv_column_count_stride_h + qb] : 0;
}

static int check_block(const mmi_search_problem *p, int64_t h, int64_t qb, mmi_error *err) {
  const mmi_sparse_index *ix = &p->index;
  const int32_t nr = block_range_count(ix, h, qb);
  if (nr < 0 || nr > ix->max_ranges)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "kv_range_count[0, %lld, %lld] = %d is outside [0, %lld]", (long long)h,
                         (long long)qb, nr, (long long)ix->max_ranges);
  const int32_t *ranges = block_ranges(ix, h, qb);
  for (int32_t r = 0; r < nr; ++r) {
    const int32_t start = ranges[2 * r], end = ranges[2 * r + 1];
    if (start < 0 || end > p->seq || start > end)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "kv_ranges[0, %lld, %lld, %d] = [%d, %d) is not inside [0, seq = %lld]",
                           (long long)h, (long long)qb, r, start, end, (long long)p->seq);
    if (r > 0 && start < ranges[2 * r - 1])
      return mmi_error_set(err, MMI_ERR_UNSORTED,
                           "kv_ranges[0, %lld, %lld, :] must be sorted and disjoint (range %d "
                           "starts at %d before %d)",
                           (long long)h, (long long)qb, r, start, ranges[2 * r - 1]);
  }
  const int32_t nc = block_column_count(ix, h, qb);
  if (nc < 0 || nc > ix->max_columns)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "kv_column_count[0, %lld, %lld] = %d is outside [0, %lld]", (long long)h,
                         (long long)qb, nc, (long long)ix->max_columns);
  const int32_t *columns = block_columns(ix, h, qb);
  int32_t r = 0;
  for (int32_t c = 0; c < nc; ++c) {
    const int32_t col = columns[c];
    if (col < 0 || col >= p->seq || (c > 0 && col <= columns[c - 1]))
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "kv_columns[0, %lld, %lld, %d] = %d must be in [0, seq = %lld) and "
                           "strictly increasing",
                           (long long)h, (long long)qb, c, col, (long long)p->seq);
    while (r < nr && ranges[2 * r + 1] <= col) ++r;
    if (r < nr && ranges[2 * r] <= col)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "kv_columns[0, %lld, %lld, %d] = %d lies inside a range: a key would "
                           "be counted twice",
                           (long long)h, (long long)qb, c, col);
  }
  return MMI_OK;
}

int mmi_search_check_values(const mmi_search_problem *p, mmi_error *err) {
  int status = mmi_search_check(p, err);
  if (status != MMI_OK) return status;
  for (int64_t r = 0; r < p->rows; ++r)
    if (p->row_pos[r] < 0 || p->row_pos[r] >= p->seq)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "row_pos[%lld] = %d is outside [0, seq = %lld)",
                           (long long)r, p->row_pos[r], (long long)p->seq);
  for (int64_t j = 0; j < p->seq; ++j)
    if (p->modality[j] < 0 || p->modality[j] >= p->num_modalities)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "modality[%lld] = %d is outside [0, num_modalities = %lld)",
                           (long long)j, p->modality[j], (long long)p->num_modalities);
  const mmi_sparse_index *ix = &p->index;
  for (int64_t h = 0; h < p->heads; ++h) {
    const int block_arrays_repeat = ix->kv_ranges_stride_h == 0 && ix->kv_range_count_stride_h == 0 &&
                                    ix->kv_columns_stride_h == 0 && ix->kv_column_count_stride_h == 0;
    if (h > 0 && block_arrays_repeat) break;
    for (int64_t qb = 0; qb < ix->num_q_blocks; ++qb) {
      status = check_block(p, h, qb, err);
      if (status != MMI_OK) return status;
    }
  }
  if (ix->q_perm == NULL && ix->k_perm == NULL) return MMI_OK;
  unsigned char *seen = (unsigned char *)malloc((size_t)p->seq);
  if (seen == NULL)
    return mmi_error_set(err, MMI_ERR_OUT_OF_MEMORY, "cannot allocate permutation check scratch");
  for (int64_t h = 0; h < p->heads && status == MMI_OK; ++h) {
    if (ix->q_perm != NULL && (h == 0 || ix->q_perm_stride_h != 0))
      status = check_permutation(ix->q_perm + h * ix->q_perm_stride_h, p->seq, seen, "q_perm", h, err);
    if (status == MMI_OK && ix->k_perm != NULL && (h == 0 || ix->k_perm_stride_h != 0))
      status = check_permutation(ix->k_perm + h * ix->k_perm_stride_h, p->seq, seen, "k_perm", h, err);
  }
  free(seen);
  return status;
}

/* Per-thread accumulators of one row: mass per key modality and (with value) the output. */
typedef struct row_accumulator {
  double mass[MMI_SEARCH_MAX_MODALITIES];
  double *out; /* [D] or NULL */
} row_accumulator;

static void add_key(const mmi_search_problem *p, const float *prob_row, const float *value_head,
                    int64_t pos, int64_t key, row_accumulator *acc) {
  if (key > pos) return; /* causal, on original positions */
  const double w = prob_row[key];
  acc->mass[p->modality[key]] += w;
  if (acc->out != NULL && w != 0.0) {
    const float *v = value_head + key * p->head_dim;
    for (int64_t d = 0; d < p->head_dim; ++d) acc->out[d] += w * v[d];
  }
}

/* Scores head h; `q_inv` is S int32 of scratch (the inverse query permutation). */
static void score_head(const mmi_search_problem *p, int64_t h, int32_t *q_inv, double *out_acc) {
  const mmi_sparse_index *ix = &p->index;
  const int32_t *q_perm = ix->q_perm != NULL ? ix->q_perm + h * ix->q_perm_stride_h : NULL;
  const int32_t *k_perm = ix->k_perm != NULL ? ix->k_perm + h * ix->k_perm_stride_h : NULL;
  for (int64_t qb = 0; qb < ix->num_q_blocks; ++qb) {
    const int32_t nr = block_range_count(ix, h, qb), nc = block_column_count(ix, h, qb);
    const int32_t *ranges = block_ranges(ix, h, qb);
    int64_t tiles = mmi__ceil_div(nc, p->block_k);
    for (int32_t r = 0; r < nr; ++r) tiles += mmi__ceil_div(ranges[2 * r + 1] - ranges[2 * r], p->block_k);
    p->block_tiles[h * ix->num_q_blocks + qb] = (int32_t)mmi__min64(tiles, INT32_MAX);
  }
  if (p->rows == 0) return;
  if (q_perm != NULL)
    for (int64_t s = 0; s < p->seq; ++s) q_inv[q_perm[s]] = (int32_t)s;
  const int64_t M = p->num_modalities, D = p->head_dim;
  const float *value_head =
      p->value != NULL ? p->value + (h / (p->heads / p->kv_heads)) * p->seq * D : NULL;
  for (int64_t r = 0; r < p->rows; ++r) {
    const int64_t pos = p->row_pos[r];
    const int64_t slot = q_perm != NULL ? q_inv[pos] : pos;
    const int64_t qb = slot / ix->block_q;
    const float *prob_row = p->probs + (h * p->rows + r) * p->seq;
    row_accumulator acc;
    for (int64_t m = 0; m < M; ++m) acc.mass[m] = 0.0;
    acc.out = p->value != NULL ? out_acc : NULL;
    if (acc.out != NULL)
      for (int64_t d = 0; d < D; ++d) acc.out[d] = 0.0;
    const int32_t nr = block_range_count(ix, h, qb), nc = block_column_count(ix, h, qb);
    const int32_t *ranges = block_ranges(ix, h, qb);
    const int32_t *columns = block_columns(ix, h, qb);
    for (int32_t i = 0; i < nr; ++i)
      for (int64_t s = ranges[2 * i]; s < ranges[2 * i + 1]; ++s)
        add_key(p, prob_row, value_head, pos, k_perm != NULL ? k_perm[s] : s, &acc);
    for (int32_t c = 0; c < nc; ++c)
      add_key(p, prob_row, value_head, pos, k_perm != NULL ? k_perm[columns[c]] : columns[c], &acc);
    for (int64_t m = 0; m < M; ++m) p->kept_mass[(h * p->rows + r) * M + m] = (float)acc.mass[m];
    if (acc.out != NULL)
      for (int64_t d = 0; d < D; ++d) p->kept_out[(h * p->rows + r) * D + d] = (float)acc.out[d];
  }
}

int mmi_search_score_cpu(const mmi_search_problem *p, int num_threads, mmi_error *err) {
  const int status = mmi_search_check_values(p, err);
  if (status != MMI_OK) return status;
  int alloc_failed = 0;
#ifdef _OPENMP
  if (num_threads <= 0) num_threads = omp_get_max_threads();
#pragma omp parallel num_threads(num_threads) reduction(| : alloc_failed)
#else
  (void)num_threads;
#endif
  {
    int32_t *q_inv = (int32_t *)malloc(sizeof(int32_t) * (size_t)p->seq);
    double *out_acc = (double *)malloc(sizeof(double) * (size_t)(p->value != NULL ? p->head_dim : 1));
    if (q_inv == NULL || out_acc == NULL) alloc_failed = 1;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t h = 0; h < p->heads; ++h)
      if (!alloc_failed) score_head(p, h, q_inv, out_acc);
    free(q_inv);
    free(out_acc);
  }
  if (alloc_failed)
    return mmi_error_set(err, MMI_ERR_OUT_OF_MEMORY, "cannot allocate search scratch (seq %lld)",
                         (long long)p->seq);
  return MMI_OK;
}
