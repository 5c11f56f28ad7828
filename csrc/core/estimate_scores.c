#include <math.h>
#include <stdlib.h>

#include "dtype_convert.h"
#include "mmi_estimate.h"
#include "mmi_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int mmi_estimate_check(const mmi_estimate_problem *p, mmi_error *err) {
  mmi_error_clear(err);
  if (p == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "problem is NULL");
  if (p->dtype != MMI_DTYPE_FLOAT32 && p->dtype != MMI_DTYPE_FLOAT16 &&
      p->dtype != MMI_DTYPE_BFLOAT16)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED, "q: dtype %d is not float32/float16/bfloat16",
                         (int)p->dtype);
  if (p->batch < 1 || p->q_heads < 1 || p->kv_heads < 1 || p->q_heads % p->kv_heads != 0)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "k: batch (%lld) must be >= 1 and query heads (%lld) a positive multiple "
                         "of key/value heads (%lld)",
                         (long long)p->batch, (long long)p->q_heads, (long long)p->kv_heads);
  if (p->seq_q < 1 || p->seq_k < p->seq_q || !mmi__fits_int32(p->seq_k))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "q/k: need 1 <= seq_q <= seq_k < 2^31, got seq_q %lld, seq_k %lld",
                         (long long)p->seq_q, (long long)p->seq_k);
  if (p->head_dim < 1 || p->head_dim > 256)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED, "q: head_dim %lld is outside [1, 256]",
                         (long long)p->head_dim);
  if (p->query_end < 1 || p->query_end > p->seq_q)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "query_end must be in [1, seq_q = %lld], got %lld",
                         (long long)p->seq_q, (long long)p->query_end);
  if (p->last < 1 || p->last > p->query_end)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "last must be in [1, query_end = %lld], got %lld",
                         (long long)p->query_end, (long long)p->last);
  return MMI_OK;
}

static float load_element(const void *base, int64_t offset, mmi_dtype dtype) {
  if (dtype == MMI_DTYPE_FLOAT32) return ((const float *)base)[offset];
  const uint16_t bits = ((const uint16_t *)base)[offset];
  return dtype == MMI_DTYPE_BFLOAT16 ? mmi__bf16_to_float(bits) : mmi__f16_to_float(bits);
}

/* One (b, h): scores of each estimation query, reduced into the score vectors (the slash one
 * only when slash_score is non-NULL). */
static void estimate_head(const mmi_estimate_problem *p, int64_t b, int64_t h, float *q_row,
                          float *scores) {
  const int64_t dim = p->head_dim;
  const int64_t kv_h = h / (p->q_heads / p->kv_heads);
  const int64_t offset = p->seq_k - p->seq_q;
  float *vertical = p->vertical_score + (b * p->q_heads + h) * p->seq_k;
  float *slash = p->slash_score != NULL ? p->slash_score + (b * p->q_heads + h) * p->seq_k : NULL;
  for (int64_t j = 0; j < p->seq_k; ++j) vertical[j] = 0.0f;
  if (slash != NULL)
    for (int64_t j = 0; j < p->seq_k; ++j) slash[j] = 0.0f;
  for (int64_t r = 0; r < p->last; ++r) {
    const int64_t row = p->query_end - p->last + r;
    const int64_t abs_pos = row + offset;
    for (int64_t d = 0; d < dim; ++d)
      q_row[d] = load_element(p->q, b * p->q_stride_b + h * p->q_stride_h + row * p->q_stride_s + d,
                              p->dtype) * p->scale;
    float max_score = -INFINITY;
    for (int64_t j = 0; j <= abs_pos; ++j) {
      const int64_t base = b * p->k_stride_b + kv_h * p->k_stride_h + j * p->k_stride_s;
      float s = 0.0f;
      for (int64_t d = 0; d < dim; ++d) s += q_row[d] * load_element(p->k, base + d, p->dtype);
      scores[j] = s;
      max_score = s > max_score ? s : max_score;
    }
    double sum = 0.0;
    for (int64_t j = 0; j <= abs_pos; ++j) {
      scores[j] = expf(scores[j] - max_score);
      sum += scores[j];
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j <= abs_pos; ++j) vertical[j] += scores[j] * inv;
    if (slash != NULL)
      for (int64_t j = 0; j <= abs_pos; ++j) slash[abs_pos - j] += scores[j] * inv;
  }
}

int mmi_estimate_vertical_slash_scores_cpu(const mmi_estimate_problem *p, int num_threads,
                                           mmi_error *err) {
  int status = mmi_estimate_check(p, err);
  if (status != MMI_OK) return status;
  if (p->q == NULL || p->k == NULL || p->vertical_score == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER,
                         "q, k and vertical_score must be non-NULL (slash_score may be NULL)");
  const int64_t tasks = p->batch * p->q_heads;
  int alloc_failed = 0;
#ifdef _OPENMP
  if (num_threads <= 0) num_threads = omp_get_max_threads();
#pragma omp parallel num_threads(num_threads) reduction(| : alloc_failed)
#else
  (void)num_threads;
#endif
  {
    float *q_row = (float *)malloc(sizeof(float) * (size_t)p->head_dim);
    float *scores = (float *)malloc(sizeof(float) * (size_t)p->seq_k);
    if (q_row == NULL || scores == NULL) alloc_failed = 1;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t task = 0; task < tasks; ++task)
      if (!alloc_failed) estimate_head(p, task / p->q_heads, task % p->q_heads, q_row, scores);
    free(q_row);
    free(scores);
  }
  if (alloc_failed)
    return mmi_error_set(err, MMI_ERR_OUT_OF_MEMORY, "cannot allocate estimation scratch (seq_k %lld)",
                         (long long)p->seq_k);
  return MMI_OK;
}
