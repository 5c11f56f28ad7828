#include <stddef.h>

#include "mmi_index_builders.h"
#include "mmi_internal.h"

/* The line set of one head: positions first + m * stride for m >= 0, below span_end. */
typedef struct grid_lines {
  int64_t first;
  int64_t stride;
  int64_t span_end;
  int64_t count;
} grid_lines;

/* Number of line positions < x. */
static int64_t lines_below(const grid_lines *g, int64_t x) {
  if (x <= g->first) return 0;
  return mmi__min64(mmi__ceil_div(x - g->first, g->stride), g->count);
}

/* Number of non-line positions < x (x clipped to [0, seq]). */
static int64_t others_below(const grid_lines *g, int64_t x, int64_t seq) {
  x = mmi__max64(0, mmi__min64(x, seq));
  return x - lines_below(g, x);
}

int mmi_grid_check_options(const mmi_grid_options *o, mmi_error *err) {
  mmi_error_clear(err);
  if (o == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "options is NULL");
  if (o->seq < 1 || !mmi__fits_int32(o->seq))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "seq must be in [1, 2^31), got %lld",
                         (long long)o->seq);
  int status = mmi__check_block_sizes(o->block_q, o->block_k, err);
  if (status != MMI_OK) return status;
  if (o->span_start < 0 || o->span_end > o->seq || o->span_start >= o->span_end)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "span [span_start, span_end) = [%lld, %lld) must be a non-empty part of "
                         "[0, %lld)",
                         (long long)o->span_start, (long long)o->span_end, (long long)o->seq);
  if (o->sink < 0)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "sink must be >= 0, got %lld",
                         (long long)o->sink);
  if (o->local < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "local must be >= 1, got %lld",
                         (long long)o->local);
  return MMI_OK;
}

int mmi_build_grid_index(int64_t batch, int64_t heads, const mmi_grid_options *options,
                         const int32_t *stride, const int32_t *phase, int32_t *q_perm,
                         int32_t *k_perm, int32_t *kv_ranges, int32_t *kv_range_count,
                         mmi_error *err) {
  mmi_error_clear(err);
  int status = mmi_grid_check_options(options, err);
  if (status != MMI_OK) return status;
  if (stride == NULL || phase == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "stride or phase is NULL");
  if (q_perm == NULL || k_perm == NULL || kv_ranges == NULL || kv_range_count == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "an output buffer is NULL");
  if (batch < 1 || heads < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "batch and heads must be >= 1, got %lld, %lld",
                         (long long)batch, (long long)heads);

  const int64_t seq = options->seq;
  const int64_t span = options->span_end - options->span_start;
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    if (stride[bh] < 1 || stride[bh] > span)
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "stride[%lld, %lld] = %d must be in [1, span length %lld]",
                           (long long)(bh / heads), (long long)(bh % heads), stride[bh],
                           (long long)span);
    if (phase[bh] < 0 || phase[bh] >= stride[bh])
      return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                           "phase[%lld, %lld] = %d must be in [0, stride = %d)",
                           (long long)(bh / heads), (long long)(bh % heads), phase[bh], stride[bh]);
  }

  const int64_t num_blocks = mmi_num_q_blocks(seq, options->block_q);
  for (int64_t bh = 0; bh < batch * heads; ++bh) {
    grid_lines g;
    g.first = options->span_start + phase[bh];
    g.stride = stride[bh];
    g.span_end = options->span_end;
    g.count = g.first < g.span_end ? mmi__ceil_div(g.span_end - g.first, g.stride) : 0;
    const int64_t n = g.count;

    int32_t *qp = q_perm + bh * seq;
    int32_t *kp = k_perm + bh * seq;
    int64_t line_slot = 0, other_slot = n;
    for (int64_t p = 0; p < seq; ++p) {
      const int is_line = p >= g.first && p < g.span_end && (p - g.first) % g.stride == 0;
      const int64_t slot = is_line ? line_slot++ : other_slot++;
      qp[slot] = (int32_t)p;
      kp[slot] = (int32_t)p;
    }

    for (int64_t qb = 0; qb < num_blocks; ++qb) {
      const int64_t a = qb * options->block_q;
      const int64_t b = mmi__min64(a + options->block_q, seq);
      /* Slots are ascending within each part, so the extreme positions sit at part boundaries. */
      int64_t pmin = qp[a], pmax = qp[b - 1];
      if (a < n && b > n) {
        pmin = mmi__min64(qp[a], qp[n]);
        pmax = mmi__max64(qp[n - 1], qp[b - 1]);
      }
      const int64_t end = pmax + 1;
      mmi__range ranges[MMI_GRID_MAX_RANGES * 2];
      int64_t count = 0;
      if (options->use_hlines && a < n) {
        ranges[count++] = mmi__align_range(0, lines_below(&g, end), options->block_k, seq);
        ranges[count++] = mmi__align_range(n, n + others_below(&g, end, seq), options->block_k, seq);
      } else {
        const int64_t lo = pmin - options->local + 1;
        if (options->use_vlines)
          ranges[count++] = mmi__align_range(0, lines_below(&g, end), options->block_k, seq);
        ranges[count++] = mmi__align_range(0, lines_below(&g, mmi__min64(options->sink, end)),
                                           options->block_k, seq);
        ranges[count++] = mmi__align_range(
            n, n + others_below(&g, mmi__min64(options->sink, end), seq), options->block_k, seq);
        ranges[count++] =
            mmi__align_range(lines_below(&g, lo), lines_below(&g, end), options->block_k, seq);
        ranges[count++] = mmi__align_range(n + others_below(&g, lo, seq),
                                           n + others_below(&g, end, seq), options->block_k, seq);
      }
      count = mmi__normalize_ranges(ranges, count);
      if (count > MMI_GRID_MAX_RANGES)
        return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                             "internal: grid block produced %lld ranges (> %d)", (long long)count,
                             MMI_GRID_MAX_RANGES);
      const int64_t cell = bh * num_blocks + qb;
      int32_t *out = kv_ranges + cell * MMI_GRID_MAX_RANGES * 2;
      for (int64_t r = 0; r < MMI_GRID_MAX_RANGES; ++r) {
        out[2 * r] = r < count ? (int32_t)ranges[r].start : 0;
        out[2 * r + 1] = r < count ? (int32_t)ranges[r].end : 0;
      }
      kv_range_count[cell] = (int32_t)count;
    }
  }
  return MMI_OK;
}
