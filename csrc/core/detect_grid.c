/* CPU reference of grid stride / phase detection and of the grid lift (rules: mmi_grid_detect.h).
 * Medians are exact order statistics: a sorted copy for at most SMALL_SELECT values, otherwise a
 * radix select over the strided values in place (4 passes of 8 bits, O(count), no scratch). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mmi_grid_detect.h"
#include "mmi_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

enum { SMALL_SELECT = 64 };

static const float kMinMean = 1e-30f; /* the clamp of a zero (or negative) mean mass */

/* Unsigned keys in the order of the floats (negative values reversed below positive ones). */
static uint32_t order_key(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static float key_value(uint32_t key) {
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* The value of 0-based rank k among base[i * step], i < count (1 <= count, 0 <= k < count). */
static float select_strided(const float *base, int64_t count, int64_t step, int64_t k) {
  if (count <= SMALL_SELECT) {
    float sorted[SMALL_SELECT];
    for (int64_t i = 0; i < count; ++i) {
      const float v = base[i * step];
      int64_t j = i;
      for (; j > 0 && sorted[j - 1] > v; --j) sorted[j] = sorted[j - 1];
      sorted[j] = v;
    }
    return sorted[k];
  }
  uint32_t prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    int64_t histogram[256] = {0};
    for (int64_t i = 0; i < count; ++i) {
      const uint32_t key = order_key(base[i * step]);
      if ((key & mask) == prefix) ++histogram[(key >> shift) & 0xffu];
    }
    uint32_t digit = 0;
    while (histogram[digit] <= k) k -= histogram[digit++]; /* the digit holding rank k */
    prefix |= digit << shift;
    mask |= 0xffu << shift;
  }
  return key_value(prefix);
}

static float lower_median_strided(const float *base, int64_t count, int64_t step) {
  return select_strided(base, count, step, (count - 1) / 2);
}

static float lift_of(float line_mass, float mean) {
  return line_mass / (mean > kMinMean ? mean : kMinMean);
}

int mmi_grid_scores_check(const mmi_grid_scores *s, mmi_error *err) {
  mmi_error_clear(err);
  if (s == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "scores is NULL");
  if (s->batch < 1 || s->heads < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "vertical_score: batch and heads must be >= 1, got %lld, %lld",
                         (long long)s->batch, (long long)s->heads);
  if (s->seq_k < 1 || !mmi__fits_int32(s->seq_k))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "vertical_score: key length must be in [1, 2^31), got %lld",
                         (long long)s->seq_k);
  if (s->score_stride_b < 0 || s->score_stride_h < 0)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "vertical_score: strides must be >= 0, got %lld, %lld",
                         (long long)s->score_stride_b, (long long)s->score_stride_h);
  if (s->span_start < 0 || s->span_end > s->seq_k || s->span_start >= s->span_end)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "span [span_start, span_end) = [%lld, %lld) must be a non-empty part of "
                         "[0, %lld]",
                         (long long)s->span_start, (long long)s->span_end, (long long)s->seq_k);
  return MMI_OK;
}

int mmi_detect_grid_check(const mmi_grid_detect_problem *p, mmi_error *err) {
  mmi_error_clear(err);
  if (p == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "problem is NULL");
  int status = mmi_grid_scores_check(&p->scores, err);
  if (status != MMI_OK) return status;
  if (!(p->tolerance > 0.0f && p->tolerance <= 1.0f))
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "tolerance must be in (0, 1], got %g",
                         (double)p->tolerance);
  if (p->max_lines < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "max_lines must be >= 1, got %lld",
                         (long long)p->max_lines);
  if (p->num_candidates < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "candidate_strides: need at least one candidate, got %lld",
                         (long long)p->num_candidates);
  if (p->candidate_strides == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "candidate_strides is NULL");
  const int64_t n = p->scores.span_end - p->scores.span_start;
  int64_t usable = 0;
  for (int64_t c = 0; c < p->num_candidates; ++c) {
    const int32_t s = p->candidate_strides[c];
    if (s < 1)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "candidate_strides[%lld] = %d must be >= 1",
                           (long long)c, s);
    usable += s <= n / 2;
  }
  if (usable == 0)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "candidate_strides: no candidate stride leaves 2 or more lines in a span "
                         "of %lld tokens",
                         (long long)n);
  return MMI_OK;
}

int mmi_grid_lift_entry_error(int64_t bh, int64_t heads, int64_t span, int32_t stride,
                              int32_t phase, mmi_error *err) {
  if (stride < 1 || stride > span)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "stride[%lld, %lld] = %d must be in [1, span length %lld]",
                         (long long)(bh / heads), (long long)(bh % heads), stride,
                         (long long)span);
  if (phase < 0 || phase >= stride)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "phase[%lld, %lld] = %d must be in [0, stride = %d)",
                         (long long)(bh / heads), (long long)(bh % heads), phase, stride);
  return MMI_OK;
}

/* x_s of head bh: the row's span. */
static const float *span_row(const mmi_grid_scores *s, int64_t bh) {
  const int64_t b = bh / s->heads, h = bh % s->heads;
  return s->vertical_score + b * s->score_stride_b + h * s->score_stride_h + s->span_start;
}

/* Grid lift of (stride, phase) over a span of n keys starting at x. */
static float span_lift(const float *x, int64_t n, int64_t stride, int64_t phase) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const float mean = (float)(sum / (double)n);
  return lift_of(lower_median_strided(x + phase, n / stride, stride), mean);
}

/* Detection lift of candidate s (n / s >= 2) and its phase. */
static float candidate_lift(const float *x, int64_t n, int64_t s, int64_t max_lines,
                            int32_t *phase) {
  const int64_t lines = n / s;
  const int64_t used = mmi__min64(lines, max_lines);
  const float *window = x + (lines - used) * s; /* [used, s] */
  double sum = 0.0;
  for (int64_t i = 0; i < used * s; ++i) sum += window[i];
  float best = lower_median_strided(window, used, s);
  int64_t best_phase = 0;
  for (int64_t p = 1; p < s; ++p) {
    const float m = lower_median_strided(window + p, used, s);
    if (m > best) { /* ties keep the first phase */
      best = m;
      best_phase = p;
    }
  }
  *phase = (int32_t)best_phase;
  return lift_of(best, (float)(sum / (double)(used * s)));
}

static void detect_head(const mmi_grid_detect_problem *p, int64_t bh, float *lifts,
                        int32_t *phases, int32_t *stride_out, int32_t *phase_out,
                        float *lift_out) {
  const float *x = span_row(&p->scores, bh);
  const int64_t n = p->scores.span_end - p->scores.span_start;
  float max_lift = -INFINITY;
  for (int64_t c = 0; c < p->num_candidates; ++c) {
    const int64_t s = p->candidate_strides[c];
    if (s > n / 2) continue;
    lifts[c] = candidate_lift(x, n, s, p->max_lines, &phases[c]);
    if (lifts[c] > max_lift) max_lift = lifts[c];
  }
  const float threshold = p->tolerance * max_lift;
  int64_t chosen = -1;
  for (int64_t c = 0; c < p->num_candidates; ++c) {
    const int64_t s = p->candidate_strides[c];
    if (s > n / 2 || !(lifts[c] >= threshold)) continue;
    if (chosen < 0 || s < p->candidate_strides[chosen]) chosen = c;
  }
  if (chosen < 0) /* NaN lifts, or every lift < 0 (negative scores): the first usable candidate */
    for (chosen = 0; p->candidate_strides[chosen] > n / 2; ++chosen) {
    }
  stride_out[bh] = p->candidate_strides[chosen];
  phase_out[bh] = phases[chosen];
  lift_out[bh] = span_lift(x, n, stride_out[bh], phase_out[bh]);
}

int mmi_detect_grid(const mmi_grid_detect_problem *p, int32_t *stride, int32_t *phase,
                    float *lift, int num_threads, mmi_error *err) {
  int status = mmi_detect_grid_check(p, err);
  if (status != MMI_OK) return status;
  if (p->scores.vertical_score == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "vertical_score is NULL");
  if (stride == NULL || phase == NULL || lift == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "stride, phase and lift must be non-NULL");
  const int64_t heads_total = p->scores.batch * p->scores.heads;
  int alloc_failed = 0;
#ifdef _OPENMP
  if (num_threads <= 0) num_threads = omp_get_max_threads();
#pragma omp parallel num_threads(num_threads) reduction(| : alloc_failed)
#else
  (void)num_threads;
#endif
  {
    /* Per candidate lift and phase of the head in progress. */
    float *lifts = (float *)malloc(sizeof(float) * (size_t)p->num_candidates);
    int32_t *phases = (int32_t *)malloc(sizeof(int32_t) * (size_t)p->num_candidates);
    if (lifts == NULL || phases == NULL) alloc_failed = 1;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t bh = 0; bh < heads_total; ++bh)
      if (!alloc_failed) detect_head(p, bh, lifts, phases, stride, phase, lift);
    free(lifts);
    free(phases);
  }
  if (alloc_failed)
    return mmi_error_set(err, MMI_ERR_OUT_OF_MEMORY,
                         "cannot allocate detection scratch (%lld candidates)",
                         (long long)p->num_candidates);
  return MMI_OK;
}

int mmi_grid_lift(const mmi_grid_scores *s, const int32_t *stride, const int32_t *phase,
                  float *lift, int num_threads, mmi_error *err) {
  int status = mmi_grid_scores_check(s, err);
  if (status != MMI_OK) return status;
  if (s->vertical_score == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "vertical_score is NULL");
  if (stride == NULL || phase == NULL || lift == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "stride, phase and lift must be non-NULL");
  const int64_t heads_total = s->batch * s->heads;
  const int64_t n = s->span_end - s->span_start;
  for (int64_t bh = 0; bh < heads_total; ++bh) {
    status = mmi_grid_lift_entry_error(bh, s->heads, n, stride[bh], phase[bh], err);
    if (status != MMI_OK) return status;
  }
#ifdef _OPENMP
  if (num_threads <= 0) num_threads = omp_get_max_threads();
#pragma omp parallel for num_threads(num_threads) schedule(dynamic, 1)
#else
  (void)num_threads;
#endif
  for (int64_t bh = 0; bh < heads_total; ++bh)
    lift[bh] = span_lift(span_row(s, bh), n, stride[bh], phase[bh]);
  return MMI_OK;
}
