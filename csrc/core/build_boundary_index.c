/* Modality-boundary index builder; the rules are documented in mmi_boundary_index.h. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "mmi_boundary_index.h"
#include "mmi_index_builders.h"
#include "mmi_internal.h"

enum { MAX_M = MMI_BOUNDARY_MAX_MODALITIES, MAX_CLASSES = 2 * MMI_BOUNDARY_MAX_MODALITIES };

/* ---------------------------------------------------------------------------------------------- */
/* Validation                                                                                      */

/* Extent of an input's leading dim: 1 when broadcast (stride 0), else the full size. */
static int64_t own_extent(int64_t stride, int64_t full) { return stride == 0 ? 1 : full; }

static int check_sizes(const mmi_boundary_problem *p, const mmi_boundary_output *o,
                       mmi_error *err) {
  if (p->batch < 1 || p->heads < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "batch and heads must be >= 1, got %lld, %lld",
                         (long long)p->batch, (long long)p->heads);
  if (p->seq < 1 || !mmi__fits_int32(p->seq))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "seq must be in [1, 2^31), got %lld",
                         (long long)p->seq);
  if (p->num_modalities < 1 || p->num_modalities > MMI_BOUNDARY_MAX_MODALITIES)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "num_modalities must be in [1, %d], got %lld",
                         MMI_BOUNDARY_MAX_MODALITIES, (long long)p->num_modalities);
  int status = mmi__check_block_sizes(p->block_q, p->block_k, err);
  if (status != MMI_OK) return status;
  const int count_mode = o->kv_ranges == NULL && o->kv_columns == NULL;
  if (!count_mode && (p->max_ranges < 1 || !mmi__fits_int32(p->max_ranges)))
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "max_ranges must be in [1, 2^31), got %lld",
                         (long long)p->max_ranges);
  if (!count_mode && !mmi__fits_int32(p->max_columns))
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "max_columns must be in [0, 2^31), got %lld",
                         (long long)p->max_columns);
  if (!mmi__fits_int32(p->num_vertical) || !mmi__fits_int32(p->num_slash))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "num_vertical and num_slash must be in [0, 2^31), got %lld, %lld",
                         (long long)p->num_vertical, (long long)p->num_slash);
  if (p->modality == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "modality is NULL");
  if (p->grid_stride == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "grid_stride is NULL");
  if (p->grid_phase == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "grid_phase is NULL");
  if (p->pair_pattern == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "pair_pattern is NULL");
  if (p->num_vertical > 0 && p->vertical == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "vertical is NULL");
  if (p->num_slash > 0 && p->slash == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "slash is NULL");
  if (o->q_perm == NULL || o->kv_range_count == NULL || o->kv_column_count == NULL ||
      o->class_offsets == NULL ||
      (!count_mode && (o->kv_ranges == NULL || (p->max_columns > 0 && o->kv_columns == NULL))))
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "an output buffer is NULL");
  return MMI_OK;
}

static int check_modality(const mmi_boundary_problem *p, mmi_error *err) {
  for (int64_t b = 0; b < p->batch; ++b) {
    const int32_t *mod = p->modality + b * p->seq;
    for (int64_t i = 0; i < p->seq; ++i) {
      if (mod[i] < 0 || mod[i] >= p->num_modalities)
        return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                             "modality[%lld, %lld] = %d is outside [0, num_modalities = %lld)",
                             (long long)b, (long long)i, mod[i], (long long)p->num_modalities);
    }
  }
  return MMI_OK;
}

static int check_grid(const mmi_boundary_problem *p, mmi_error *err) {
  /* Every (b, h) pairs a stride entry with a phase entry; errors name each array's own indices
   * (0 along a broadcast dim). */
  for (int64_t b = 0; b < p->batch; ++b) {
    for (int64_t h = 0; h < p->heads; ++h) {
      const int32_t *st = p->grid_stride + b * p->grid_stride_stride_b + h * p->grid_stride_stride_h;
      const int32_t *ph = p->grid_phase + b * p->grid_phase_stride_b + h * p->grid_phase_stride_h;
      const long long sb = p->grid_stride_stride_b == 0 ? 0 : (long long)b;
      const long long sh = p->grid_stride_stride_h == 0 ? 0 : (long long)h;
      const long long pb = p->grid_phase_stride_b == 0 ? 0 : (long long)b;
      const long long phh = p->grid_phase_stride_h == 0 ? 0 : (long long)h;
      for (int64_t m = 0; m < p->num_modalities; ++m) {
        if (st[m] < 0)
          return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                               "grid_stride[%lld, %lld, %lld] = %d must be >= 0 (0: no grid)", sb,
                               sh, (long long)m, st[m]);
        if (st[m] == 0 && ph[m] != 0)
          return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                               "grid_phase[%lld, %lld, %lld] = %d must be 0 where grid_stride is 0 "
                               "(no grid)",
                               pb, phh, (long long)m, ph[m]);
        if (st[m] > 0 && (ph[m] < 0 || ph[m] >= st[m]))
          return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                               "grid_phase[%lld, %lld, %lld] = %d must be in [0, grid_stride = %d)",
                               pb, phh, (long long)m, ph[m], st[m]);
      }
    }
  }
  return MMI_OK;
}

static int check_pattern(const mmi_boundary_problem *p, mmi_error *err) {
  const int64_t M = p->num_modalities;
  for (int64_t b = 0; b < own_extent(p->pair_pattern_stride_b, p->batch); ++b) {
    for (int64_t h = 0; h < own_extent(p->pair_pattern_stride_h, p->heads); ++h) {
      const int32_t *table =
          p->pair_pattern + b * p->pair_pattern_stride_b + h * p->pair_pattern_stride_h;
      for (int64_t mq = 0; mq < M; ++mq) {
        for (int64_t mk = 0; mk < M; ++mk) {
          const int32_t *e = table + (mq * M + mk) * MMI_PAIR_PATTERN_FIELDS;
          const long long lb = (long long)b, lh = (long long)h, lq = (long long)mq,
                          lk = (long long)mk;
          switch (e[0]) {
            case MMI_PAIR_NONE:
            case MMI_PAIR_DENSE:
            case MMI_PAIR_VERTICAL_SLASH:
              break;
            case MMI_PAIR_A_SHAPE:
              if (e[1] < 0)
                return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                                     "pair_pattern[%lld, %lld, %lld, %lld] (A_SHAPE): sink = %d "
                                     "must be >= 0",
                                     lb, lh, lq, lk, e[1]);
              if (e[2] < 0)
                return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                                     "pair_pattern[%lld, %lld, %lld, %lld] (A_SHAPE): local = %d "
                                     "must be >= 0",
                                     lb, lh, lq, lk, e[2]);
              break;
            case MMI_PAIR_LINES:
              if ((e[1] != 0 && e[1] != 1) || (e[2] != 0 && e[2] != 1))
                return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                                     "pair_pattern[%lld, %lld, %lld, %lld] (LINES): use_hlines = "
                                     "%d and use_vlines = %d must be 0 or 1",
                                     lb, lh, lq, lk, e[1], e[2]);
              if (e[3] < 0)
                return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                                     "pair_pattern[%lld, %lld, %lld, %lld] (LINES): local = %d "
                                     "must be >= 0",
                                     lb, lh, lq, lk, e[3]);
              break;
            default:
              return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                                   "pair_pattern[%lld, %lld, %lld, %lld]: kind = %d is unknown "
                                   "(0 NONE, 1 DENSE, 2 A_SHAPE, 3 LINES, 4 VERTICAL_SLASH)",
                                   lb, lh, lq, lk, e[0]);
          }
        }
      }
    }
  }
  return MMI_OK;
}

/* Valid entries in [0, seq), strictly increasing, then only -1 padding. */
static int check_padded_lists(const int32_t *data, int64_t n, int64_t stride_b, int64_t stride_h,
                              const mmi_boundary_problem *p, const char *name, mmi_error *err) {
  if (n == 0) return MMI_OK;
  for (int64_t b = 0; b < own_extent(stride_b, p->batch); ++b) {
    for (int64_t h = 0; h < own_extent(stride_h, p->heads); ++h) {
      for (int64_t m = 0; m < p->num_modalities; ++m) {
        const int32_t *row = data + b * stride_b + h * stride_h + m * n;
        int padding = 0;
        for (int64_t i = 0; i < n; ++i) {
          const int32_t v = row[i];
          if (v == -1) {
            padding = 1;
            continue;
          }
          if (v < 0 || v >= p->seq)
            return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                                 "%s[%lld, %lld, %lld, %lld] = %d is outside [0, seq = %lld) "
                                 "(-1 is padding)",
                                 name, (long long)b, (long long)h, (long long)m, (long long)i, v,
                                 (long long)p->seq);
          if (padding)
            return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                                 "%s[%lld, %lld, %lld, %lld] = %d follows -1 padding (padding "
                                 "must come last)",
                                 name, (long long)b, (long long)h, (long long)m, (long long)i, v);
          if (i > 0 && v <= row[i - 1])
            return mmi_error_set(err, MMI_ERR_UNSORTED,
                                 "%s[%lld, %lld, %lld, :] must be strictly increasing, but entry "
                                 "%lld (%d) follows %d",
                                 name, (long long)b, (long long)h, (long long)m, (long long)i, v,
                                 row[i - 1]);
        }
      }
    }
  }
  return MMI_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Per-head state and counting                                                                     */

typedef struct head_ctx {
  int64_t seq, num_modalities, block_k;
  const int32_t *mod;       /* [S] */
  const int32_t *prefix;    /* [M, S + 1]: modality-m positions < x */
  int64_t stride[MAX_M];
  int64_t phase[MAX_M];
  int64_t off[MAX_CLASSES + 1];
  const int32_t *pattern;   /* [M, M, 4] */
  const int32_t *vertical;  /* [M, NV] or NULL */
  const int32_t *slash;     /* [M, NS] or NULL */
  int64_t num_vertical, num_slash;
  int64_t valid_vertical[MAX_M];
  int64_t valid_slash[MAX_M];
} head_ctx;

/* Lines among modality ranks [0, r). */
static int64_t lines_in(int64_t r, int64_t stride, int64_t phase) {
  if (stride == 0 || r <= phase) return 0;
  return (r - phase - 1) / stride + 1;
}

/* cnt_c(x): positions < x of class c. */
static int64_t count_below(const head_ctx *h, int64_t c, int64_t x) {
  x = mmi__max64(0, mmi__min64(x, h->seq));
  const int64_t m = c / 2;
  const int64_t r = h->prefix[m * (h->seq + 1) + x];
  const int64_t lines = lines_in(r, h->stride[m], h->phase[m]);
  return c % 2 == 0 ? lines : r - lines;
}

/* Key slot of position v. */
static int64_t slot_of(const head_ctx *h, int64_t v) {
  const int64_t m = h->mod[v];
  const int64_t r = h->prefix[m * (h->seq + 1) + v];
  const int64_t lines = lines_in(r, h->stride[m], h->phase[m]);
  const int is_line = h->stride[m] > 0 && r % h->stride[m] == h->phase[m];
  return is_line ? h->off[2 * m] + lines : h->off[2 * m + 1] + (r - lines);
}

typedef struct range_list {
  mmi__range *items;
  int64_t count;
} range_list;

/* slots_c(lo, hi) with lo < hi <= e, aligned outward to block_k: the start not below the class
 * start off[c], the end not past the class's causal slot limit off[c] + cnt_c(e). Empty ones are
 * not added. */
static void add_class_range(const head_ctx *h, int64_t c, int64_t lo, int64_t hi, int64_t e,
                            range_list *out) {
  const int64_t s = h->off[c] + count_below(h, c, lo);
  const int64_t t = h->off[c] + count_below(h, c, hi);
  if (s >= t) return;
  const int64_t bk = h->block_k;
  const int64_t limit = hi == e ? t : h->off[c] + count_below(h, c, e);
  mmi__range *r = &out->items[out->count++];
  r->start = mmi__max64((s / bk) * bk, h->off[c]);
  r->end = mmi__min64(mmi__ceil_div(t, bk) * bk, limit);
}

/* Position interval [lo, hi) clipped to [0, e), on key modality mk (line class only or both). */
static void add_interval(const head_ctx *h, int64_t mk, int64_t lo, int64_t hi, int64_t e,
                         int lines_only, range_list *out) {
  lo = mmi__max64(lo, 0);
  hi = mmi__min64(hi, e);
  if (lo >= hi) return;
  add_class_range(h, 2 * mk, lo, hi, e, out);
  if (!lines_only) add_class_range(h, 2 * mk + 1, lo, hi, e, out);
}

static int compare_ranges(const void *a, const void *b) {
  const mmi__range *x = (const mmi__range *)a, *y = (const mmi__range *)b;
  if (x->start != y->start) return x->start < y->start ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

static int compare_int64(const void *a, const void *b) {
  const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* Scratch of one worker: capacities for the worst block (see scratch_alloc). */
typedef struct block_scratch {
  mmi__range *ranges;
  int64_t *columns;
} block_scratch;

static int scratch_alloc(block_scratch *s, const mmi_boundary_problem *p) {
  const int64_t M = p->num_modalities;
  const int64_t classes = mmi__min64(2 * M, p->block_q);
  /* per (query class, key modality): DENSE 2, A_SHAPE 4, LINES 5, VERTICAL_SLASH 2 NS */
  const int64_t per_pair = mmi__max64(5, 2 * mmi__min64(p->num_slash, p->seq));
  const size_t n_ranges = (size_t)(classes * M * per_pair);
  const size_t n_columns = (size_t)(classes * p->num_vertical + 1);
  s->ranges = (mmi__range *)malloc(n_ranges * sizeof(mmi__range));
  s->columns = (int64_t *)malloc(n_columns * sizeof(int64_t));
  return s->ranges != NULL && s->columns != NULL;
}

static void scratch_free(block_scratch *s) {
  free(s->ranges);
  free(s->columns);
}

/* ---------------------------------------------------------------------------------------------- */
/* One (b, h)                                                                                      */


/* Distinct candidate slots (sorted) outside every range (sorted, disjoint): the uncapped column
 * count of a block. */
static int64_t count_columns(const int64_t *slots, int64_t n, const mmi__range *ranges,
                             int64_t n_ranges) {
  int64_t count = 0, r = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0 && slots[i] == slots[i - 1]) continue;
    while (r < n_ranges && ranges[r].end <= slots[i]) ++r;
    if (r < n_ranges && ranges[r].start <= slots[i]) continue;
    ++count;
  }
  return count;
}

static void build_head(const mmi_boundary_problem *p, const mmi_boundary_output *o,
                       const int32_t *prefix_all, int64_t b, int64_t h, block_scratch *s) {
  const int64_t S = p->seq, M = p->num_modalities, NC = 2 * M;
  const int64_t bh = b * p->heads + h;
  head_ctx ctx;
  ctx.seq = S;
  ctx.num_modalities = M;
  ctx.block_k = p->block_k;
  ctx.mod = p->modality + b * S;
  ctx.prefix = prefix_all + b * M * (S + 1);
  const int32_t *st = p->grid_stride + b * p->grid_stride_stride_b + h * p->grid_stride_stride_h;
  const int32_t *ph = p->grid_phase + b * p->grid_phase_stride_b + h * p->grid_phase_stride_h;
  ctx.pattern = p->pair_pattern + b * p->pair_pattern_stride_b + h * p->pair_pattern_stride_h;
  ctx.num_vertical = p->num_vertical;
  ctx.num_slash = p->num_slash;
  ctx.vertical = p->num_vertical > 0
                     ? p->vertical + b * p->vertical_stride_b + h * p->vertical_stride_h
                     : NULL;
  ctx.slash = p->num_slash > 0 ? p->slash + b * p->slash_stride_b + h * p->slash_stride_h : NULL;
  for (int64_t m = 0; m < M; ++m) {
    ctx.stride[m] = st[m];
    ctx.phase[m] = ph[m];
    int64_t nv = 0, ns = 0;
    while (nv < p->num_vertical && ctx.vertical[m * p->num_vertical + nv] >= 0) ++nv;
    while (ns < p->num_slash && ctx.slash[m * p->num_slash + ns] >= 0) ++ns;
    ctx.valid_vertical[m] = nv;
    ctx.valid_slash[m] = ns;
  }

  /* Class offsets and the permutation (a stable counting sort by class). */
  ctx.off[0] = 0;
  for (int64_t c = 0; c < NC; ++c) ctx.off[c + 1] = ctx.off[c] + count_below(&ctx, c, S);
  int32_t *offsets_out = o->class_offsets + bh * (NC + 1);
  for (int64_t c = 0; c <= NC; ++c) offsets_out[c] = (int32_t)ctx.off[c];
  int32_t *perm = o->q_perm + bh * S;
  {
    int64_t cursor[MAX_CLASSES];
    int64_t rank[MAX_M];
    for (int64_t c = 0; c < NC; ++c) cursor[c] = ctx.off[c];
    for (int64_t m = 0; m < M; ++m) rank[m] = 0;
    for (int64_t x = 0; x < S; ++x) {
      const int64_t m = ctx.mod[x];
      const int64_t r = rank[m]++;
      const int is_line = ctx.stride[m] > 0 && r % ctx.stride[m] == ctx.phase[m];
      perm[cursor[2 * m + (is_line ? 0 : 1)]++] = (int32_t)x;
    }
  }
  if (o->k_perm != NULL) memcpy(o->k_perm + bh * S, perm, (size_t)S * sizeof(int32_t));

  const int64_t R = p->max_ranges, C = p->max_columns;
  const int count_mode = o->kv_ranges == NULL && o->kv_columns == NULL;  /* see mmi_boundary_index.h */
  const int64_t num_blocks = mmi_num_q_blocks(S, p->block_q);
  for (int64_t qb = 0; qb < num_blocks; ++qb) {
    const int64_t a = qb * p->block_q;
    const int64_t z = mmi__min64(a + p->block_q, S);
    range_list list = {s->ranges, 0};
    int64_t n_cand = 0;
    for (int64_t cq = 0; cq < NC; ++cq) {
      const int64_t s0 = mmi__max64(a, ctx.off[cq]), s1 = mmi__min64(z, ctx.off[cq + 1]);
      if (s0 >= s1) continue;
      const int64_t pmin = perm[s0], pmax = perm[s1 - 1], e = pmax + 1;
      const int64_t mq = cq / 2;
      const int rows_are_lines = cq % 2 == 0;
      int any_vs = 0;
      for (int64_t mk = 0; mk < M; ++mk) {
        const int32_t *pat = ctx.pattern + (mq * M + mk) * MMI_PAIR_PATTERN_FIELDS;
        switch (pat[0]) {
          case MMI_PAIR_DENSE:
            add_interval(&ctx, mk, 0, e, e, 0, &list);
            break;
          case MMI_PAIR_A_SHAPE:
            add_interval(&ctx, mk, 0, mmi__min64(pat[1], e), e, 0, &list);
            if (pat[2] >= 1) add_interval(&ctx, mk, pmin - pat[2] + 1, e, e, 0, &list);
            break;
          case MMI_PAIR_LINES:
            if (pat[2]) add_interval(&ctx, mk, 0, e, e, 1, &list);
            if (pat[1] && rows_are_lines) add_interval(&ctx, mk, 0, e, e, 0, &list);
            if (pat[3] >= 1) add_interval(&ctx, mk, pmin - pat[3] + 1, e, e, 0, &list);
            break;
          case MMI_PAIR_VERTICAL_SLASH: {
            any_vs = 1;
            const int32_t *sl = ctx.slash != NULL ? ctx.slash + mq * ctx.num_slash : NULL;
            for (int64_t i = 0; i < ctx.valid_slash[mq]; ++i)
              add_interval(&ctx, mk, pmin - sl[i], pmax - sl[i] + 1, e, 0, &list);
            break;
          }
          default: /* MMI_PAIR_NONE */
            break;
        }
      }
      if (any_vs) {
        const int32_t *vl = ctx.vertical != NULL ? ctx.vertical + mq * ctx.num_vertical : NULL;
        for (int64_t i = 0; i < ctx.valid_vertical[mq] && vl[i] <= pmax; ++i) {
          const int64_t mk = ctx.mod[vl[i]];
          if (ctx.pattern[(mq * M + mk) * MMI_PAIR_PATTERN_FIELDS] == MMI_PAIR_VERTICAL_SLASH)
            s->columns[n_cand++] = slot_of(&ctx, vl[i]);
        }
      }
    }

    qsort(list.items, (size_t)list.count, sizeof(mmi__range), compare_ranges);
    int64_t n_ranges = mmi__normalize_ranges(list.items, list.count);
    const int64_t cell = bh * num_blocks + qb;
    qsort(s->columns, (size_t)n_cand, sizeof(int64_t), compare_int64);
    if (count_mode) {
      o->kv_range_count[cell] = (int32_t)n_ranges;
      o->kv_column_count[cell] = (int32_t)count_columns(s->columns, n_cand, list.items, n_ranges);
      continue;
    }
    if (n_ranges > R) {
      /* Over capacity: the last kept range absorbs every later one (a superset of the keys). */
      list.items[R - 1].end = list.items[n_ranges - 1].end;
      n_ranges = R;
    }
    int32_t *out_ranges = o->kv_ranges + cell * R * 2;
    for (int64_t r = 0; r < R; ++r) {
      out_ranges[2 * r] = r < n_ranges ? (int32_t)list.items[r].start : 0;
      out_ranges[2 * r + 1] = r < n_ranges ? (int32_t)list.items[r].end : 0;
    }
    o->kv_range_count[cell] = (int32_t)n_ranges;

    /* Columns: sorted, deduplicated, outside every range (one merge walk), capped. */
    int32_t *out_columns = C > 0 ? o->kv_columns + cell * C : NULL;
    int64_t n_columns = 0, r = 0;
    for (int64_t i = 0; i < n_cand && n_columns < C; ++i) {
      const int64_t slot = s->columns[i];
      if (i > 0 && slot == s->columns[i - 1]) continue;
      while (r < n_ranges && list.items[r].end <= slot) ++r;
      if (r < n_ranges && list.items[r].start <= slot) continue;
      out_columns[n_columns++] = (int32_t)slot;
    }
    for (int64_t c = n_columns; c < C; ++c) out_columns[c] = 0;
    o->kv_column_count[cell] = (int32_t)n_columns;
  }
}

/* ---------------------------------------------------------------------------------------------- */

int mmi_build_boundary_index(const mmi_boundary_problem *p, const mmi_boundary_output *o,
                             int num_threads, mmi_error *err) {
  mmi_error_clear(err);
  if (p == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "problem is NULL");
  if (o == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "out is NULL");
  int status = check_sizes(p, o, err);
  if (status == MMI_OK) status = check_modality(p, err);
  if (status == MMI_OK) status = check_grid(p, err);
  if (status == MMI_OK) status = check_pattern(p, err);
  if (status == MMI_OK)
    status = check_padded_lists(p->vertical, p->num_vertical, p->vertical_stride_b,
                                p->vertical_stride_h, p, "vertical", err);
  if (status == MMI_OK)
    status = check_padded_lists(p->slash, p->num_slash, p->slash_stride_b, p->slash_stride_h, p,
                                "slash", err);
  if (status != MMI_OK) return status;

  const int64_t S = p->seq, M = p->num_modalities;
  /* Per-batch modality prefix counts, shared by the heads of a batch element. */
  const size_t prefix_elems = (size_t)p->batch * (size_t)M * (size_t)(S + 1);
  if (prefix_elems / (size_t)p->batch / (size_t)M != (size_t)(S + 1) ||
      prefix_elems > SIZE_MAX / sizeof(int32_t))
    return mmi_error_set(err, MMI_ERR_OUT_OF_MEMORY, "prefix counts of batch %lld x seq %lld overflow",
                         (long long)p->batch, (long long)S);
  int32_t *prefix = (int32_t *)malloc(prefix_elems * sizeof(int32_t));
  if (prefix == NULL)
    return mmi_error_set(err, MMI_ERR_OUT_OF_MEMORY,
                         "cannot allocate modality prefix counts (%lld int32)",
                         (long long)prefix_elems);
  for (int64_t b = 0; b < p->batch; ++b) {
    const int32_t *mod = p->modality + b * S;
    for (int64_t m = 0; m < M; ++m) {
      int32_t *row = prefix + (b * M + m) * (S + 1);
      int32_t run = 0;
      row[0] = 0;
      for (int64_t x = 0; x < S; ++x) {
        run += mod[x] == m;
        row[x + 1] = run;
      }
    }
  }

  const int64_t num_tasks = p->batch * p->heads;
  int alloc_failed = 0;
#ifdef _OPENMP
  if (num_threads <= 0) num_threads = omp_get_max_threads();
  if (num_threads > num_tasks) num_threads = (int)num_tasks;
#pragma omp parallel num_threads(num_threads) reduction(| : alloc_failed)
#else
  (void)num_threads;
#endif
  {
    block_scratch s;
    const int ok = scratch_alloc(&s, p);
    if (!ok) alloc_failed = 1;
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t task = 0; task < num_tasks; ++task) {
      if (ok) build_head(p, o, prefix, task / p->heads, task % p->heads, &s);
    }
    scratch_free(&s);
  }
  free(prefix);
  if (alloc_failed)
    return mmi_error_set(err, MMI_ERR_OUT_OF_MEMORY,
                         "cannot allocate block scratch (num_slash %lld, num_vertical %lld)",
                         (long long)p->num_slash, (long long)p->num_vertical);
  return MMI_OK;
}
