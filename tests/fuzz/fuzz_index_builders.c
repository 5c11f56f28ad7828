/* libFuzzer target over the C core's index builders, the index checker and the CPU forward.
 * Built and run by tests/fuzz/run_fuzz.sh under AddressSanitizer + UndefinedBehaviorSanitizer.
 *
 * Input decoding
 *   The input is a byte stream read front to back by `take_*` helpers; once it is exhausted every
 *   read yields 0, so any input (the empty one included) decodes to a complete, small case, and
 *   all-zero bytes decode to the smallest *valid* parameters.
 *     byte 0   target: 0 A-shape, 1 vertical-slash, 2 grid, 3 modality permutation,
 *              4 mmi_sparse_attention_check / forward on a raw index, 5 modality-boundary builder
 *              (value mod 6)
 *     byte 1   flags: bit 0 also call the builder with err == NULL (same status expected),
 *              bit 1 pass NULL for one pointer argument (chosen by the next byte),
 *              bit 2 give the forward an lse buffer, bit 3 GQA with one key/value head
 *     rest     the target's parameters, in the order its decoder reads them.
 *   Scalar parameters come from `take_param`: its first byte picks either a valid value (< 232,
 *   then log-biased in the documented range so that 1, 7, 64 and 4096 are all likely) or one of a
 *   list of deliberately invalid values (0, negative, INT64_MIN/MAX, just past a bound...).
 *   Sizes stay small: seq <= 4096, block sizes <= 300 (plus the boundary 4096), batch/heads <= 3,
 *   list lengths <= 64. Lists (verticals, slashes, strides, modalities, raw index arrays) are
 *   generated valid from the bytes and then, when a mode byte says so, corrupted: unsorted,
 *   duplicated, negative, out of range, overlapping, counts past their capacity.
 *
 * Oracles (every violation prints a diagnosis and calls abort())
 *   - every error return carries err.code == status, a known status and a non-empty message;
 *   - output buffers are allocated to exactly the documented sizes, so ASan flags any overflow
 *     (a zero-size allocation when the parameters make the documented size meaningless);
 *   - an index a builder produced must pass mmi_sparse_attention_check, an independent reference
 *     validator of mmi_sparse_index.h, and the builder's own documented invariants (non-empty,
 *     aligned, merged ranges inside the causal limit; vertical-slash columns; modality grouping);
 *   - on raw indexes the checker must agree with the reference validator in both directions;
 *   - whenever the checker accepts, the CPU forward (1 thread) must succeed on exactly-sized
 *     q/k/v/out/lse buffers and write every output row without NaN (out is pre-filled with NaN). */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mmi.h"


enum {
  MAX_SEQ = 4096,
  MAX_BLOCK = 300,
  MAX_BATCH = 3,
  MAX_HEADS = 3,
  MAX_LIST = 64,
  HEAD_DIM = 64,
  RAW_MAX_SEQ = 1024, /* the raw-index target spends its bytes on index values, not length */
  RAW_MAX_CAPACITY = 6,
};

/* Forward caps: (query row, key) pairs (each ~2 * HEAD_DIM instrumented multiply-adds) and tensor
 * elements (q + k + v + out, each filled, loaded and scanned): they keep one execution around a
 * millisecond, so bigger problems are checked but not run. */
static const int64_t FORWARD_WORK_BUDGET = 1 << 12;
static const int64_t FORWARD_TENSOR_BUDGET = 1 << 16;

/* Bulk loops of the harness itself (tensor fill and scan): no coverage feedback, which would only
 * slow them down and reward tensor size. */
#if defined(__clang__)
#define HARNESS_BULK __attribute__((no_sanitize("coverage")))
#else
#define HARNESS_BULK
#endif

/* ------------------------------------------------------------------------------------------ */
/* Byte reader                                                                                */

typedef struct byte_reader {
  const uint8_t *data;
  size_t size;
  size_t pos;
} byte_reader;

static uint8_t take_u8(byte_reader *r) { return r->pos < r->size ? r->data[r->pos++] : 0; }

static uint32_t take_u16(byte_reader *r) {
  uint32_t lo = take_u8(r);
  return lo | (uint32_t)take_u8(r) << 8;
}

static uint32_t take_u32(byte_reader *r) {
  uint32_t lo = take_u16(r);
  return lo | take_u16(r) << 16;
}

/* Value in [lo, hi] (lo <= hi, hi - lo < 2^32), biased toward small offsets from lo. */
static int64_t take_log_in(byte_reader *r, int64_t lo, int64_t hi) {
  const uint64_t span = (uint64_t)(hi - lo);
  const unsigned bits = take_u8(r) % 14u;
  const uint64_t raw = take_u16(r) & ((1u << bits) - 1u);
  return lo + (int64_t)(raw % (span + 1));
}

/* Valid value in [lo, hi] most of the time, else one of `invalid[0:n_invalid]`. */
static int64_t take_param(byte_reader *r, int64_t lo, int64_t hi, const int64_t *invalid,
                          size_t n_invalid) {
  const uint8_t selector = take_u8(r);
  if (selector < 232 || n_invalid == 0) return take_log_in(r, lo, hi);
  return invalid[selector % n_invalid];
}

#define COUNT_OF(array) (sizeof(array) / sizeof((array)[0]))

static const int64_t INVALID_SEQ[] = {0, -1, INT64_MIN, (int64_t)INT32_MAX + 1, INT64_MAX};
static const int64_t INVALID_BLOCK[] = {0, -1, 4097, INT64_MIN, INT64_MAX};
static const int64_t INVALID_COUNT[] = {0, -1, INT64_MIN}; /* batch / heads */
static const int64_t INVALID_LIST_LENGTH[] = {-1, INT64_MIN};
static const int64_t INVALID_NON_NEGATIVE[] = {-1, INT64_MIN};
static const int64_t INVALID_POSITIVE[] = {0, -1, INT64_MIN};

/* Block size: log-biased in [1, MAX_BLOCK], sometimes the boundary 4096, sometimes invalid. */
static int64_t take_block(byte_reader *r) {
  const int64_t v = take_param(r, 1, MAX_BLOCK + 1, INVALID_BLOCK, COUNT_OF(INVALID_BLOCK));
  return v == MAX_BLOCK + 1 ? 4096 : v;
}

/* sink / local style parameter: small, near `scale`, sometimes INT64_MAX (valid), or invalid. */
static int64_t take_window(byte_reader *r, int64_t min_valid, int64_t scale) {
  const int64_t *invalid = min_valid == 0 ? INVALID_NON_NEGATIVE : INVALID_POSITIVE;
  const size_t n_invalid = min_valid == 0 ? COUNT_OF(INVALID_NON_NEGATIVE) : COUNT_OF(INVALID_POSITIVE);
  const int64_t v = take_param(r, min_valid, scale + 2, invalid, n_invalid);
  return v == scale + 2 ? INT64_MAX : v;
}

/* ------------------------------------------------------------------------------------------ */
/* Failure reporting and error-contract checks                                                */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  fputs("\n*** mmi fuzz invariant violated: ", stderr);
  vfprintf(stderr, fmt, args);
  fputs("\n", stderr);
  va_end(args);
  abort();
}

static int is_known_status(int status) {
  return strcmp(mmi_strerror(status), "unknown status") != 0;
}

/* Resets `err` to a state no function would leave behind: code != any status, empty message. */
static void poison_error(mmi_error *err) {
  err->code = 0x7eadbeef;
  err->message[0] = '\0';
}

/* Every error return must name its cause in err->message and repeat the status in err->code. */
static void expect_error_contract(const char *where, int status, const mmi_error *err) {
  if (status == MMI_OK) return;
  if (status > 0 || !is_known_status(status))
    die("%s returned status %d, which is not in the status table", where, status);
  if (err->code != status)
    die("%s returned %d but err.code = %d (message \"%s\")", where, status, err->code,
        err->message);
  if (memchr(err->message, '\0', sizeof err->message) == NULL)
    die("%s left err.message without a terminating NUL", where);
  if (err->message[0] == '\0') die("%s returned %d (%s) with an empty err.message", where, status,
                                   mmi_strerror(status));
}

/* A builder must reject every clearly invalid argument set and accept every clearly valid one
 * (arguments outside both sets, e.g. block sizes past 4096 that the headers do not mention, and
 * calls with a NULL pointer argument, are judged only by the error contract). */
static void expect_verdict(const char *builder, int status, int clearly_valid, int clearly_invalid,
                           const mmi_error *err) {
  if (status == MMI_OK && clearly_invalid) die("%s accepted invalid arguments", builder);
  if (status != MMI_OK && clearly_valid)
    die("%s rejected valid arguments: %s (%s)", builder, err->message, mmi_strerror(status));
}

static int block_size_valid(int64_t v) { return v >= 1 && v <= 4096; }
static int block_size_invalid(int64_t v) { return v < 1; }

/* 1 if list[0:n] is strictly increasing inside [0, upper). */
static int list_valid(const int32_t *list, int64_t n, int64_t upper) {
  for (int64_t i = 0; i < n; ++i)
    if (list[i] < 0 || list[i] >= upper || (i > 0 && list[i] <= list[i - 1])) return 0;
  return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Exact-size allocation                                                                      */

/* Buffer of exactly `count` int32 (count <= 0: a zero-byte allocation, so any access is caught). */
static int32_t *alloc_i32(int64_t count) {
  const size_t bytes = count > 0 ? (size_t)count * sizeof(int32_t) : 0;
  int32_t *p = (int32_t *)malloc(bytes);
  if (p == NULL && bytes == 0) p = (int32_t *)malloc(1); /* non-NULL even for zero elements */
  if (p == NULL) die("test harness: out of memory allocating %zu bytes", bytes);
  return p;
}

/* Product of non-negative factors, or 0 when any factor is negative (a meaningless shape). */
static int64_t shape_size(int n, const int64_t *dims) {
  int64_t total = 1;
  for (int i = 0; i < n; ++i) {
    if (dims[i] < 0) return 0;
    total *= dims[i];
  }
  return total;
}

#define SHAPE_SIZE(...) \
  shape_size((int)COUNT_OF(((const int64_t[]){__VA_ARGS__})), (const int64_t[]){__VA_ARGS__})

/* ceil(seq / block) computed without overflow; 0 when either is outside the builders' domain. */
static int64_t documented_num_blocks(int64_t seq, int64_t block) {
  if (seq < 1 || seq > INT32_MAX || block < 1 || block > 4096) return 0;
  return seq / block + (seq % block != 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Reference validator for mmi_sparse_index.h, written from the header only                   */

/* 1 if every (b, h, qb) block and every permutation of `p` is valid; else 0 and a reason in `why`.
 * Assumes the problem's shape fields are valid and that every array has its declared extent under
 * the given strides. Unlike the checker, it never skips a (b, h) for broadcasting. */
static int reference_index_valid(const mmi_attention_problem *p, char *why, size_t why_size) {
  const mmi_sparse_index *ix = &p->index;
  for (int64_t b = 0; b < p->batch; ++b)
    for (int64_t h = 0; h < p->q_heads; ++h)
      for (int64_t qb = 0; qb < ix->num_q_blocks; ++qb) {
        const int32_t n_ranges =
            ix->kv_range_count[b * ix->kv_range_count_stride_b + h * ix->kv_range_count_stride_h + qb];
        if (n_ranges < 0 || n_ranges > ix->max_ranges) {
          snprintf(why, why_size, "range count %d at (b %lld, h %lld, qb %lld) outside [0, %lld]",
                   n_ranges, (long long)b, (long long)h, (long long)qb, (long long)ix->max_ranges);
          return 0;
        }
        const int32_t *ranges = n_ranges == 0 ? NULL
                                              : ix->kv_ranges + b * ix->kv_ranges_stride_b +
                                                    h * ix->kv_ranges_stride_h + qb * ix->max_ranges * 2;
        for (int32_t r = 0; r < n_ranges; ++r) {
          const int32_t start = ranges[2 * r], end = ranges[2 * r + 1];
          if (start < 0 || end > p->seq_k || start > end || (r > 0 && start < ranges[2 * r - 1])) {
            snprintf(why, why_size,
                     "range %d = [%d, %d) at (b %lld, h %lld, qb %lld) is out of [0, %lld], "
                     "reversed or overlaps its predecessor",
                     r, start, end, (long long)b, (long long)h, (long long)qb, (long long)p->seq_k);
            return 0;
          }
        }
        if (ix->max_columns == 0) continue;
        const int32_t n_columns = ix->kv_column_count[b * ix->kv_column_count_stride_b +
                                                      h * ix->kv_column_count_stride_h + qb];
        if (n_columns < 0 || n_columns > ix->max_columns) {
          snprintf(why, why_size, "column count %d at (b %lld, h %lld, qb %lld) outside [0, %lld]",
                   n_columns, (long long)b, (long long)h, (long long)qb, (long long)ix->max_columns);
          return 0;
        }
        const int32_t *columns = ix->kv_columns + b * ix->kv_columns_stride_b +
                                 h * ix->kv_columns_stride_h + qb * ix->max_columns;
        for (int32_t c = 0; c < n_columns; ++c) {
          const int32_t col = columns[c];
          if (col < 0 || col >= p->seq_k || (c > 0 && col <= columns[c - 1])) {
            snprintf(why, why_size,
                     "column %d = %d at (b %lld, h %lld, qb %lld) out of [0, %lld) or not increasing",
                     c, col, (long long)b, (long long)h, (long long)qb, (long long)p->seq_k);
            return 0;
          }
          /* Ranges are sorted by start and disjoint: only the last one starting <= col can hold it. */
          int32_t lo = 0, hi = n_ranges; /* first range with start > col */
          while (lo < hi) {
            const int32_t mid = lo + (hi - lo) / 2;
            if (ranges[2 * mid] <= col) lo = mid + 1; else hi = mid;
          }
          if (lo > 0 && col < ranges[2 * (lo - 1) + 1]) {
            snprintf(why, why_size, "column %d at (b %lld, h %lld, qb %lld) lies in range [%d, %d)",
                     col, (long long)b, (long long)h, (long long)qb, ranges[2 * (lo - 1)],
                     ranges[2 * (lo - 1) + 1]);
            return 0;
          }
        }
      }

  const int64_t n_max = p->seq_q > p->seq_k ? p->seq_q : p->seq_k;
  unsigned char *seen = (unsigned char *)malloc((size_t)n_max);
  if (seen == NULL) die("test harness: out of memory");
  for (int which = 0; which < 2; ++which) {
    const int32_t *base = which == 0 ? ix->q_perm : ix->k_perm;
    if (base == NULL) continue;
    const int64_t n = which == 0 ? p->seq_q : p->seq_k;
    const int64_t sb = which == 0 ? ix->q_perm_stride_b : ix->k_perm_stride_b;
    const int64_t sh = which == 0 ? ix->q_perm_stride_h : ix->k_perm_stride_h;
    for (int64_t b = 0; b < p->batch; ++b)
      for (int64_t h = 0; h < p->q_heads; ++h) {
        const int32_t *perm = base + b * sb + h * sh;
        memset(seen, 0, (size_t)n);
        for (int64_t i = 0; i < n; ++i) {
          if (perm[i] < 0 || perm[i] >= n || seen[perm[i]]) {
            snprintf(why, why_size, "%s at (b %lld, h %lld) is not a permutation of 0..%lld",
                     which == 0 ? "q_perm" : "k_perm", (long long)b, (long long)h,
                     (long long)n - 1);
            free(seen);
            return 0;
          }
          seen[perm[i]] = 1;
        }
      }
  }
  free(seen);
  return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Attention tensors and the check + forward step                                             */

typedef struct tensors {
  void *q, *k, *v, *out;
  float *lse;
  int64_t out_elements;
  size_t element_size;
} tensors;

static size_t dtype_size(mmi_dtype dtype) { return dtype == MMI_DTYPE_FLOAT32 ? 4 : 2; }

/* Allocates contiguous [B, H, S, D] tensors of exactly the sizes the problem declares and points
 * `p` at them (strides in elements). Contents are written later by `tensors_fill`. */
static void tensors_alloc(tensors *t, mmi_attention_problem *p, int with_lse) {
  const size_t es = dtype_size(p->dtype);
  const int64_t d = p->head_dim > 0 ? p->head_dim : 0;
  const int64_t q_elems = SHAPE_SIZE(p->batch, p->q_heads, p->seq_q, d);
  const int64_t kv_elems = SHAPE_SIZE(p->batch, p->kv_heads, p->seq_k, d);
  t->element_size = es;
  t->out_elements = q_elems;
  t->q = malloc((size_t)q_elems * es + (q_elems == 0));
  t->k = malloc((size_t)kv_elems * es + (kv_elems == 0));
  t->v = malloc((size_t)kv_elems * es + (kv_elems == 0));
  t->out = malloc((size_t)q_elems * es + (q_elems == 0));
  const int64_t lse_elems = SHAPE_SIZE(p->batch, p->q_heads, p->seq_q);
  t->lse = with_lse ? (float *)malloc((size_t)lse_elems * sizeof(float) + (lse_elems == 0)) : NULL;
  if (!t->q || !t->k || !t->v || !t->out || (with_lse && !t->lse)) die("test harness: out of memory");
  p->q = t->q;
  p->q_stride_s = d;
  p->q_stride_h = p->seq_q * d;
  p->q_stride_b = p->q_heads * p->q_stride_h;
  p->k = t->k;
  p->v = t->v;
  p->k_stride_s = p->v_stride_s = d;
  p->k_stride_h = p->v_stride_h = p->seq_k * d;
  p->k_stride_b = p->v_stride_b = p->kv_heads * p->k_stride_h;
  p->out = t->out;
  p->out_stride_s = d;
  p->out_stride_h = p->seq_q * d;
  p->out_stride_b = p->q_heads * p->out_stride_h;
  p->lse = t->lse;
}

static void tensors_free(tensors *t) {
  free(t->q);
  free(t->k);
  free(t->v);
  free(t->out);
  free(t->lse);
}

/* 16-bit patterns shared by float16 and bfloat16 fills: zeros, +-1, halves, subnormals, larger. */
static const uint16_t F16_PATTERNS[] = {0x0000, 0x8000, 0x3c00, 0xbc00, 0x3800, 0xb400,
                                        0x0001, 0x83ff, 0x4900, 0x2e66, 0x3555, 0xc200};
static const uint16_t BF16_PATTERNS[] = {0x0000, 0x8000, 0x3f80, 0xbf80, 0x3f00, 0xbe80,
                                         0x0001, 0x807f, 0x4120, 0x3dcd, 0x3eab, 0xc040};

HARNESS_BULK static void fill_values(void *buf, int64_t n, mmi_dtype dtype, uint32_t seed) {
  uint32_t x = seed | 1u;
  for (int64_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    if (dtype == MMI_DTYPE_FLOAT32)
      ((float *)buf)[i] = (float)((int)(x % 257u) - 128) / 64.0f;
    else if (dtype == MMI_DTYPE_FLOAT16)
      ((uint16_t *)buf)[i] = F16_PATTERNS[x % COUNT_OF(F16_PATTERNS)];
    else
      ((uint16_t *)buf)[i] = BF16_PATTERNS[x % COUNT_OF(BF16_PATTERNS)];
  }
}

/* Index of the first NaN among buf[0:n] (float32, float16 or bfloat16), or -1. */
HARNESS_BULK static int64_t first_nan(const void *buf, int64_t n, mmi_dtype dtype) {
  for (int64_t i = 0; i < n; ++i) {
    int nan;
    if (dtype == MMI_DTYPE_FLOAT32) {
      nan = isnan(((const float *)buf)[i]);
    } else {
      const uint16_t bits = ((const uint16_t *)buf)[i];
      nan = dtype == MMI_DTYPE_FLOAT16 ? (bits & 0x7c00u) == 0x7c00u && (bits & 0x03ffu) != 0
                                       : (bits & 0x7f80u) == 0x7f80u && (bits & 0x007fu) != 0;
    }
    if (nan) return i;
  }
  return -1;
}

HARNESS_BULK static void tensors_fill(tensors *t, const mmi_attention_problem *p) {
  fill_values(t->q, t->out_elements, p->dtype, 0x9e3779b9u);
  fill_values(t->k, SHAPE_SIZE(p->batch, p->kv_heads, p->seq_k, p->head_dim), p->dtype, 0x85ebca6bu);
  fill_values(t->v, SHAPE_SIZE(p->batch, p->kv_heads, p->seq_k, p->head_dim), p->dtype, 0xc2b2ae35u);
  /* NaN everywhere: a row the forward forgets to write shows up as NaN afterwards. */
  if (p->dtype == MMI_DTYPE_FLOAT32) {
    for (int64_t i = 0; i < t->out_elements; ++i) ((float *)t->out)[i] = NAN;
  } else {
    for (int64_t i = 0; i < t->out_elements; ++i) ((uint16_t *)t->out)[i] = 0x7fffu;
  }
  if (t->lse != NULL)
    for (int64_t i = 0; i < SHAPE_SIZE(p->batch, p->q_heads, p->seq_q); ++i) t->lse[i] = NAN;
}

/* (query row, key) pairs the forward will visit; only called on an index the checker accepted,
 * and clamps everything so that a wrongly accepted index cannot make it read out of bounds. */
static int64_t forward_work(const mmi_attention_problem *p) {
  const mmi_sparse_index *ix = &p->index;
  int64_t work = 0;
  for (int64_t b = 0; b < p->batch; ++b)
    for (int64_t h = 0; h < p->q_heads; ++h)
      for (int64_t qb = 0; qb < ix->num_q_blocks; ++qb) {
        const int64_t rows = qb == ix->num_q_blocks - 1 ? p->seq_q - qb * ix->block_q : ix->block_q;
        int64_t keys = 0;
        int64_t n_ranges = ix->kv_range_count[b * ix->kv_range_count_stride_b +
                                              h * ix->kv_range_count_stride_h + qb];
        n_ranges = n_ranges < 0 ? 0 : n_ranges > ix->max_ranges ? ix->max_ranges : n_ranges;
        const int32_t *ranges = n_ranges == 0 ? NULL
                                              : ix->kv_ranges + b * ix->kv_ranges_stride_b +
                                                    h * ix->kv_ranges_stride_h + qb * ix->max_ranges * 2;
        for (int64_t r = 0; r < n_ranges; ++r) {
          const int64_t len = (int64_t)ranges[2 * r + 1] - ranges[2 * r];
          keys += len < 0 ? 0 : len > p->seq_k ? p->seq_k : len;
        }
        if (ix->max_columns > 0) {
          const int64_t n_columns = ix->kv_column_count[b * ix->kv_column_count_stride_b +
                                                        h * ix->kv_column_count_stride_h + qb];
          keys += n_columns < 0 ? 0 : n_columns > ix->max_columns ? ix->max_columns : n_columns;
        }
        work += (rows + 1) * (keys + 1);
      }
  return work;
}

/* Runs the checker; `must_accept` says the index is known valid (a builder made it). On success,
 * runs the CPU forward within the work budget and checks that it wrote every row without NaN.
 * Returns the checker's status. */
static int check_and_forward(const char *label, mmi_attention_problem *p, tensors *t,
                             int must_accept, int shape_valid) {
  mmi_error err;
  poison_error(&err);
  const int status = mmi_sparse_attention_check(p, &err);
  expect_error_contract("mmi_sparse_attention_check", status, &err);
  if (status != MMI_OK) {
    if (must_accept)
      die("%s: mmi_sparse_attention_check rejected an index the builder produced: %s (%s)", label,
          err.message, mmi_strerror(status));
    return status;
  }
  if (!shape_valid) die("%s: mmi_sparse_attention_check accepted an invalid shape", label);
  char why[256];
  if (!reference_index_valid(p, why, sizeof why))
    die("%s: mmi_sparse_attention_check accepted an invalid index: %s", label, why);

  const int64_t tensor_elements = 2 * SHAPE_SIZE(p->batch, p->q_heads, p->seq_q, p->head_dim) +
                                  2 * SHAPE_SIZE(p->batch, p->kv_heads, p->seq_k, p->head_dim);
  if (tensor_elements > FORWARD_TENSOR_BUDGET || forward_work(p) > FORWARD_WORK_BUDGET)
    return status;
  tensors_fill(t, p);
  poison_error(&err);
  const int forward_status = mmi_sparse_attention_forward_cpu(p, 1, &err);
  expect_error_contract("mmi_sparse_attention_forward_cpu", forward_status, &err);
  if (forward_status != MMI_OK)
    die("%s: forward failed on a checked problem: %s (%s)", label, err.message,
        mmi_strerror(forward_status));
  const int64_t bad_out = first_nan(t->out, t->out_elements, p->dtype);
  if (bad_out >= 0)
    die("%s: forward output element %lld is NaN (row not written, or NaN produced)", label,
        (long long)bad_out);
  if (t->lse != NULL) {
    const int64_t bad_lse =
        first_nan(t->lse, SHAPE_SIZE(p->batch, p->q_heads, p->seq_q), MMI_DTYPE_FLOAT32);
    if (bad_lse >= 0) die("%s: forward lse[%lld] is NaN", label, (long long)bad_lse);
  }
  return status;
}

/* A float32, head_dim 64 problem around `index`, with tensors allocated to match. */
static void make_builder_problem(mmi_attention_problem *p, tensors *t, int64_t batch,
                                 int64_t q_heads, int64_t kv_heads, int64_t seq_q, int64_t seq_k,
                                 int causal, const mmi_sparse_index *index, int with_lse) {
  memset(p, 0, sizeof *p);
  p->dtype = MMI_DTYPE_FLOAT32;
  p->batch = batch;
  p->q_heads = q_heads;
  p->kv_heads = kv_heads;
  p->seq_q = seq_q;
  p->seq_k = seq_k;
  p->head_dim = HEAD_DIM;
  p->scale = 0.125f;
  p->causal = causal;
  p->index = *index;
  tensors_alloc(t, p, with_lse);
}

/* Documented invariants of one block a builder emitted: ranges non-empty, aligned outward to
 * block_k (an end may instead sit on `limit`), inside [0, limit), strictly separated (touching
 * ranges are merged). */
static void check_built_ranges(const char *builder, int64_t cell, const int32_t *ranges,
                               int32_t count, int64_t capacity, int64_t block_k, int64_t limit) {
  if (count < 0 || count > capacity)
    die("%s: block %lld has range count %d, capacity %lld", builder, (long long)cell, count,
        (long long)capacity);
  for (int32_t r = 0; r < count; ++r) {
    const int32_t start = ranges[2 * r], end = ranges[2 * r + 1];
    if (start >= end) die("%s: block %lld range %d = [%d, %d) is empty", builder, (long long)cell, r,
                          start, end);
    if (start < 0 || end > limit)
      die("%s: block %lld range %d = [%d, %d) exceeds the limit %lld", builder, (long long)cell, r,
          start, end, (long long)limit);
    if (start % block_k != 0 || (end % block_k != 0 && end != limit))
      die("%s: block %lld range %d = [%d, %d) is not aligned to block_k %lld (limit %lld)", builder,
          (long long)cell, r, start, end, (long long)block_k, (long long)limit);
    if (r > 0 && start <= ranges[2 * r - 1])
      die("%s: block %lld range %d = [%d, %d) overlaps or touches the previous end %d", builder,
          (long long)cell, r, start, end, ranges[2 * r - 1]);
  }
}

/* [lo, hi) (non-empty) must lie inside one range of the block: a builder output may over-cover a
 * pattern but never drop a key of it. Ranges are sorted and strictly separated. */
static void expect_covered(const char *builder, int64_t cell, const int32_t *ranges, int32_t count,
                           int64_t lo, int64_t hi) {
  int32_t first_after = 0, end = count; /* first range starting after lo */
  while (first_after < end) {
    const int32_t mid = first_after + (end - first_after) / 2;
    if (ranges[2 * mid] <= lo) first_after = mid + 1; else end = mid;
  }
  if (first_after > 0 && hi <= ranges[2 * (first_after - 1) + 1]) return;
  die("%s: block %lld drops keys of its pattern: [%lld, %lld) is not inside one range", builder,
      (long long)cell, (long long)lo, (long long)hi);
}

/* ------------------------------------------------------------------------------------------ */
/* Shared decoding pieces                                                                     */

typedef struct common_flags {
  int call_without_err;
  int null_pointer;     /* -1: none, else which pointer argument to pass as NULL */
  int with_lse;
  int single_kv_head;
} common_flags;

static common_flags take_flags(byte_reader *r) {
  const uint8_t bits = take_u8(r);
  common_flags f;
  f.call_without_err = bits & 1;
  f.null_pointer = (bits & 2) ? take_u8(r) % 8 : -1;
  f.with_lse = (bits >> 2) & 1;
  f.single_kv_head = (bits >> 3) & 1;
  return f;
}

/* Strictly increasing list in [0, upper) (when it fits), then optionally corrupted. */
static void take_sorted_list(byte_reader *r, int32_t *list, int64_t n, int64_t upper) {
  if (n <= 0) return;
  const int64_t mean_gap = upper / n > 1 ? upper / n : 1;
  int64_t v = take_log_in(r, 0, mean_gap - 1 < 0 ? 0 : mean_gap - 1);
  for (int64_t i = 0; i < n; ++i) {
    list[i] = (int32_t)(v < INT32_MAX ? v : INT32_MAX);
    v += 1 + take_log_in(r, 0, 2 * mean_gap);
  }
  const uint8_t corruption = take_u8(r);
  const int64_t at = take_u8(r) % n;
  switch (corruption) {
    case 250: list[at] = -1 - (int32_t)(take_u8(r) % 3); break;         /* negative */
    case 251: list[at] = (int32_t)upper; break;                         /* one past the end */
    case 252: if (at > 0) list[at] = list[at - 1]; break;               /* duplicate */
    case 253: if (at > 0) { int32_t t = list[at]; list[at] = list[at - 1]; list[at - 1] = t; } break;
    case 254: list[at] = INT32_MIN; break;
    case 255: list[at] = (int32_t)take_u32(r); break;                   /* anything */
    default: break;
  }
}

/* ------------------------------------------------------------------------------------------ */
/* A-shape                                                                                    */

static void fuzz_a_shape(byte_reader *r, common_flags flags) {
  const int64_t seq_q = take_param(r, 1, MAX_SEQ, INVALID_SEQ, COUNT_OF(INVALID_SEQ));
  static const int64_t invalid_seq_k_delta[] = {-1, INT64_MIN};
  int64_t seq_k = seq_q;
  const int64_t delta = take_param(r, 0, MAX_SEQ, invalid_seq_k_delta, COUNT_OF(invalid_seq_k_delta));
  if (delta == INT64_MIN) seq_k = INT64_MIN;
  else if (seq_q >= 1 && seq_q <= MAX_SEQ) seq_k = seq_q + delta; /* delta -1: seq_k < seq_q */
  const int64_t block_q = take_block(r);
  const int64_t block_k = take_block(r);
  const int64_t sink = take_window(r, 0, seq_k > 0 && seq_k <= 2 * MAX_SEQ ? seq_k : MAX_SEQ);
  const int64_t local = take_window(r, 1, seq_k > 0 && seq_k <= 2 * MAX_SEQ ? seq_k : MAX_SEQ);
  const int64_t batch = take_log_in(r, 1, MAX_BATCH);
  const int64_t heads = take_log_in(r, 1, MAX_HEADS);

  /* mmi_num_q_blocks is public: it must agree with ceil(seq_q / block_q) wherever that is defined. */
  const int64_t nqb = documented_num_blocks(seq_q, block_q);
  const int64_t nqb_api = mmi_num_q_blocks(seq_q, block_q);
  if (nqb > 0 && nqb_api != nqb)
    die("mmi_num_q_blocks(%lld, %lld) = %lld, expected %lld", (long long)seq_q, (long long)block_q,
        (long long)nqb_api, (long long)nqb);
  const int shape_ok = seq_k >= seq_q && seq_k <= 2 * MAX_SEQ && nqb > 0;
  const int64_t n_cells = shape_ok ? nqb : 0;

  int32_t *kv_ranges = alloc_i32(n_cells * MMI_A_SHAPE_MAX_RANGES * 2);
  int32_t *kv_range_count = alloc_i32(n_cells);
  int32_t *arg_ranges = flags.null_pointer == 0 ? NULL : kv_ranges;
  int32_t *arg_count = flags.null_pointer == 1 ? NULL : kv_range_count;

  mmi_error err;
  poison_error(&err);
  const int status = mmi_build_a_shape_index(seq_q, seq_k, block_q, block_k, sink, local,
                                             arg_ranges, arg_count, &err);
  expect_error_contract("mmi_build_a_shape_index", status, &err);
  if (flags.call_without_err) {
    const int again = mmi_build_a_shape_index(seq_q, seq_k, block_q, block_k, sink, local,
                                              arg_ranges, arg_count, NULL);
    if (again != status) die("mmi_build_a_shape_index: status %d with err, %d without", status, again);
  }
  const int seq_valid = seq_q >= 1 && seq_q <= INT32_MAX && seq_k >= seq_q && seq_k <= INT32_MAX;
  expect_verdict("mmi_build_a_shape_index", status,
                 flags.null_pointer < 0 && seq_valid && block_size_valid(block_q) &&
                     block_size_valid(block_k) && sink >= 0 && local >= 1,
                 !seq_valid || block_size_invalid(block_q) || block_size_invalid(block_k) ||
                     sink < 0 || local < 1,
                 &err);
  if (status == MMI_OK && !shape_ok) die("harness: A-shape shape outside the fuzzed domain");

  if (status == MMI_OK && arg_ranges != NULL && arg_count != NULL) {
    for (int64_t qb = 0; qb < nqb; ++qb) {
      const int64_t limit = (qb + 1) * block_q < seq_q ? (qb + 1) * block_q + (seq_k - seq_q) : seq_k;
      const int32_t *ranges = kv_ranges + qb * MMI_A_SHAPE_MAX_RANGES * 2;
      check_built_ranges("a_shape", qb, ranges, kv_range_count[qb], MMI_A_SHAPE_MAX_RANGES, block_k,
                         limit);
      /* Covers the sink [0, sink) and every row's local window, clipped to [0, limit). */
      const int64_t first = qb * block_q + (seq_k - seq_q);
      const int64_t sink_end = sink < limit ? sink : limit;
      if (sink_end > 0) expect_covered("a_shape", qb, ranges, kv_range_count[qb], 0, sink_end);
      const int64_t local_lo = local - 1 < first ? first - (local - 1) : 0;
      expect_covered("a_shape", qb, ranges, kv_range_count[qb], local_lo, limit);
    }
    mmi_sparse_index index;
    memset(&index, 0, sizeof index);
    index.block_q = block_q;
    index.num_q_blocks = nqb;
    index.max_ranges = MMI_A_SHAPE_MAX_RANGES;
    index.kv_ranges = kv_ranges; /* shared by every (b, h): all strides 0 */
    index.kv_range_count = kv_range_count;
    mmi_attention_problem problem;
    tensors t;
    make_builder_problem(&problem, &t, batch, heads, flags.single_kv_head ? 1 : heads, seq_q, seq_k,
                         1, &index, flags.with_lse);
    check_and_forward("a_shape", &problem, &t, 1, 1);
    tensors_free(&t);
  }
  free(kv_ranges);
  free(kv_range_count);
}

/* ------------------------------------------------------------------------------------------ */
/* Vertical-slash                                                                             */

static void fuzz_vertical_slash(byte_reader *r, common_flags flags) {
  const int64_t batch = take_param(r, 1, MAX_BATCH, INVALID_COUNT, COUNT_OF(INVALID_COUNT));
  const int64_t heads = take_param(r, 1, MAX_HEADS, INVALID_COUNT, COUNT_OF(INVALID_COUNT));
  const int64_t seq_q = take_param(r, 1, MAX_SEQ, INVALID_SEQ, COUNT_OF(INVALID_SEQ));
  int64_t seq_k = seq_q;
  static const int64_t invalid_delta[] = {-1};
  const int64_t delta = take_param(r, 0, MAX_SEQ, invalid_delta, COUNT_OF(invalid_delta));
  if (seq_q >= 1 && seq_q <= MAX_SEQ) seq_k = seq_q + delta;
  const int64_t block_q = take_block(r);
  const int64_t block_k = take_block(r);
  const int64_t num_vertical =
      take_param(r, 0, MAX_LIST, INVALID_LIST_LENGTH, COUNT_OF(INVALID_LIST_LENGTH));
  const int64_t num_slash =
      take_param(r, 0, MAX_LIST, INVALID_LIST_LENGTH, COUNT_OF(INVALID_LIST_LENGTH));
  /* Range capacity: the slash count (never over capacity) or a small, often smaller, one. */
  const int64_t max_ranges =
      (take_u8(r) & 1) ? (num_slash > 0 ? num_slash : 0)
                       : take_param(r, 0, 8, INVALID_LIST_LENGTH, COUNT_OF(INVALID_LIST_LENGTH));

  const int64_t nqb = documented_num_blocks(seq_q, block_q);
  const int seq_ok = seq_q >= 1 && seq_q <= MAX_SEQ && seq_k >= seq_q && seq_k <= 2 * MAX_SEQ;
  const int64_t bh = batch >= 1 && heads >= 1 ? batch * heads : 0;
  const int64_t nv = num_vertical > 0 ? num_vertical : 0;
  const int64_t ns = num_slash > 0 ? num_slash : 0;
  const int64_t mr = max_ranges > 0 ? max_ranges : 0;

  int32_t *vertical = alloc_i32(bh * nv);
  int32_t *slash = alloc_i32(bh * ns);
  for (int64_t i = 0; i < bh; ++i) {
    take_sorted_list(r, vertical + i * nv, nv, seq_ok ? seq_k : 1);
    take_sorted_list(r, slash + i * ns, ns, seq_ok ? seq_k : 1);
  }
  const int64_t n_cells = seq_ok ? bh * nqb : 0;
  int32_t *kv_ranges = alloc_i32(n_cells * mr * 2);
  int32_t *kv_range_count = alloc_i32(n_cells);
  int32_t *kv_columns = alloc_i32(n_cells * nv);
  int32_t *kv_column_count = alloc_i32(n_cells);
  const int columns_null = nv == 0 && (take_u8(r) & 1); /* documented: NULL allowed when NV == 0 */

  const int32_t *arg_vertical =
      flags.null_pointer == 0 ? NULL : vertical;
  const int32_t *arg_slash =
      flags.null_pointer == 1 ? NULL : slash;
  int32_t *arg_ranges = flags.null_pointer == 2 ? NULL : kv_ranges;
  int32_t *arg_range_count = flags.null_pointer == 3 ? NULL : kv_range_count;
  int32_t *arg_columns = flags.null_pointer == 4 || columns_null ? NULL : kv_columns;
  int32_t *arg_column_count = flags.null_pointer == 5 ? NULL : kv_column_count;

  mmi_error err;
  poison_error(&err);
  const int status = mmi_build_vertical_slash_index(
      batch, heads, seq_q, seq_k, block_q, block_k, arg_vertical, num_vertical, arg_slash, num_slash,
      max_ranges, arg_ranges, arg_range_count, arg_columns, arg_column_count, &err);
  expect_error_contract("mmi_build_vertical_slash_index", status, &err);
  if (flags.call_without_err) {
    const int again = mmi_build_vertical_slash_index(
        batch, heads, seq_q, seq_k, block_q, block_k, arg_vertical, num_vertical, arg_slash,
        num_slash, max_ranges, arg_ranges, arg_range_count, arg_columns, arg_column_count, NULL);
    if (again != status)
      die("mmi_build_vertical_slash_index: status %d with err, %d without", status, again);
  }
  {
    int lists_ok = num_vertical >= 0 && num_slash >= 0;
    for (int64_t i = 0; i < bh && lists_ok && seq_ok; ++i)
      lists_ok = list_valid(vertical + i * nv, nv, seq_k) && list_valid(slash + i * ns, ns, seq_k);
    const int seq_valid = seq_q >= 1 && seq_q <= INT32_MAX && seq_k >= seq_q && seq_k <= INT32_MAX;
    const int shape_invalid = batch < 1 || heads < 1 || !seq_valid || block_size_invalid(block_q) ||
                              block_size_invalid(block_k) || num_vertical < 0 || num_slash < 0 ||
                              max_ranges < 0;
    /* max_ranges == 0 with slashes given is left open: the header implies but does not say >= 1. */
    expect_verdict("mmi_build_vertical_slash_index", status,
                   flags.null_pointer < 0 && !columns_null && bh > 0 && seq_ok && nqb > 0 &&
                       block_size_valid(block_k) && lists_ok && (max_ranges >= 1 || (max_ranges == 0 && ns == 0)),
                   shape_invalid || (seq_ok && !lists_ok), &err);
  }
  if (status == MMI_OK && (!seq_ok || nqb == 0 || bh == 0))
    die("harness: vertical-slash shape outside the fuzzed domain");

  const int outputs_present = arg_ranges && arg_range_count && arg_column_count &&
                              arg_vertical == vertical && arg_slash == slash;
  if (status == MMI_OK && outputs_present) {
    const int64_t offset = seq_k - seq_q;
    for (int64_t i = 0; i < bh; ++i)
      for (int64_t qb = 0; qb < nqb; ++qb) {
        const int64_t cell = i * nqb + qb;
        const int64_t limit = ((qb + 1) * block_q < seq_q ? (qb + 1) * block_q : seq_q) + offset;
        const int32_t *ranges = kv_ranges + cell * mr * 2;
        const int32_t n_ranges = kv_range_count[cell];
        check_built_ranges("vertical_slash", cell, ranges, n_ranges, mr, block_k, limit);
        /* A superset of the pattern: every slash's keys [a_lo - d, a_hi - d] inside [0, limit). */
        const int64_t a_lo = qb * block_q + offset;
        for (int64_t k = 0; k < ns; ++k) {
          const int64_t d = slash[i * ns + k];
          const int64_t lo = a_lo - d > 0 ? a_lo - d : 0, hi = limit - d; /* [lo, hi) */
          if (lo < hi) expect_covered("vertical_slash", cell, ranges, n_ranges, lo, hi);
        }
        /* Columns: exactly the verticals v <= limit - 1 that no range covers, in order. */
        const int32_t *v_list = vertical + i * nv;
        const int32_t n_columns = kv_column_count[cell];
        if (n_columns < 0 || n_columns > nv)
          die("vertical_slash: block %lld column count %d, capacity %lld", (long long)cell,
              n_columns, (long long)nv);
        int64_t expected = 0, rr = 0;
        for (int64_t v = 0; v < nv && v_list[v] < limit; ++v) {
          while (rr < n_ranges && ranges[2 * rr + 1] <= v_list[v]) ++rr;
          if (rr < n_ranges && ranges[2 * rr] <= v_list[v]) continue;
          if (expected >= n_columns || kv_columns[cell * nv + expected] != v_list[v])
            die("vertical_slash: block %lld column %lld should be vertical %d", (long long)cell,
                (long long)expected, v_list[v]);
          ++expected;
        }
        if (expected != n_columns)
          die("vertical_slash: block %lld has %d columns, expected %lld", (long long)cell, n_columns,
              (long long)expected);
      }

    mmi_sparse_index index;
    memset(&index, 0, sizeof index);
    index.block_q = block_q;
    index.num_q_blocks = nqb;
    index.max_ranges = mr;
    index.max_columns = nv;
    index.kv_ranges = kv_ranges;
    index.kv_ranges_stride_h = nqb * mr * 2;
    index.kv_ranges_stride_b = heads * index.kv_ranges_stride_h;
    index.kv_range_count = kv_range_count;
    index.kv_range_count_stride_h = nqb;
    index.kv_range_count_stride_b = heads * nqb;
    if (nv > 0) {
      index.kv_columns = kv_columns;
      index.kv_columns_stride_h = nqb * nv;
      index.kv_columns_stride_b = heads * nqb * nv;
      index.kv_column_count = kv_column_count;
      index.kv_column_count_stride_h = nqb;
      index.kv_column_count_stride_b = heads * nqb;
    }
    mmi_attention_problem problem;
    tensors t;
    make_builder_problem(&problem, &t, batch, heads, flags.single_kv_head ? 1 : heads, seq_q, seq_k,
                         1, &index, flags.with_lse);
    check_and_forward("vertical_slash", &problem, &t, 1, 1);
    tensors_free(&t);
  }
  free(vertical);
  free(slash);
  free(kv_ranges);
  free(kv_range_count);
  free(kv_columns);
  free(kv_column_count);
}

/* ------------------------------------------------------------------------------------------ */
/* Grid                                                                                       */

static void fuzz_grid(byte_reader *r, common_flags flags) {
  const int64_t batch = take_param(r, 1, MAX_BATCH, INVALID_COUNT, COUNT_OF(INVALID_COUNT));
  const int64_t heads = take_param(r, 1, MAX_HEADS, INVALID_COUNT, COUNT_OF(INVALID_COUNT));
  mmi_grid_options o;
  memset(&o, 0, sizeof o);
  o.seq = take_param(r, 1, MAX_SEQ, INVALID_SEQ, COUNT_OF(INVALID_SEQ));
  o.block_q = take_block(r);
  o.block_k = take_block(r);
  const int seq_ok = o.seq >= 1 && o.seq <= MAX_SEQ;
  const int64_t seq_for_span = seq_ok ? o.seq : 1;
  {
    const int64_t invalid_start[] = {-1, seq_for_span, INT64_MIN};
    o.span_start = take_param(r, 0, seq_for_span - 1, invalid_start, COUNT_OF(invalid_start));
    const int64_t lo = o.span_start >= 0 && o.span_start < seq_for_span ? o.span_start + 1 : 1;
    const int64_t invalid_end[] = {o.span_start, seq_for_span + 1, INT64_MAX};
    o.span_end = take_param(r, lo, seq_for_span, invalid_end, COUNT_OF(invalid_end));
  }
  o.sink = take_window(r, 0, seq_for_span);
  o.local = take_window(r, 1, seq_for_span);
  const uint8_t line_bits = take_u8(r);
  static const int truthy[] = {0, 1, 2, -1};
  o.use_hlines = truthy[line_bits & 3];
  o.use_vlines = truthy[(line_bits >> 2) & 3];

  const int64_t bh = batch >= 1 && heads >= 1 ? batch * heads : 0;
  const int span_ok = o.span_start >= 0 && o.span_start < seq_for_span &&
                      o.span_end > o.span_start && o.span_end <= seq_for_span;
  const int64_t span = span_ok ? o.span_end - o.span_start : 1;
  int32_t *stride = alloc_i32(bh);
  int32_t *phase = alloc_i32(bh);
  for (int64_t i = 0; i < bh; ++i) {
    const int64_t invalid_stride[] = {0, -1, span + 1, INT32_MIN, INT32_MAX};
    stride[i] = (int32_t)take_param(r, 1, span, invalid_stride, COUNT_OF(invalid_stride));
    const int64_t s = stride[i] >= 1 ? stride[i] : 1;
    const int64_t invalid_phase[] = {-1, s, INT32_MAX, INT32_MIN};
    phase[i] = (int32_t)take_param(r, 0, s - 1, invalid_phase, COUNT_OF(invalid_phase));
  }

  const int64_t nqb = documented_num_blocks(o.seq, o.block_q);
  const int64_t seq = seq_ok ? o.seq : 0;
  int32_t *q_perm = alloc_i32(bh * seq);
  int32_t *k_perm = alloc_i32(bh * seq);
  int32_t *kv_ranges = alloc_i32(bh * nqb * MMI_GRID_MAX_RANGES * 2);
  int32_t *kv_range_count = alloc_i32(bh * nqb);

  const mmi_grid_options *arg_options = flags.null_pointer == 0 ? NULL : &o;
  const int32_t *arg_stride = flags.null_pointer == 1 ? NULL : stride;
  const int32_t *arg_phase = flags.null_pointer == 2 ? NULL : phase;
  int32_t *arg_q_perm = flags.null_pointer == 3 ? NULL : q_perm;
  int32_t *arg_k_perm = flags.null_pointer == 4 ? NULL : k_perm;
  int32_t *arg_ranges = flags.null_pointer == 5 ? NULL : kv_ranges;
  int32_t *arg_range_count = flags.null_pointer == 6 ? NULL : kv_range_count;

  mmi_error err;
  poison_error(&err);
  const int status = mmi_build_grid_index(batch, heads, arg_options, arg_stride, arg_phase,
                                          arg_q_perm, arg_k_perm, arg_ranges, arg_range_count, &err);
  expect_error_contract("mmi_build_grid_index", status, &err);
  if (flags.call_without_err) {
    const int again = mmi_build_grid_index(batch, heads, arg_options, arg_stride, arg_phase,
                                           arg_q_perm, arg_k_perm, arg_ranges, arg_range_count, NULL);
    if (again != status) die("mmi_build_grid_index: status %d with err, %d without", status, again);
  }
  {
    int lines_ok = 1, lines_invalid = 0;
    for (int64_t i = 0; i < bh; ++i) {
      const int ok = stride[i] >= 1 && stride[i] <= span && phase[i] >= 0 && phase[i] < stride[i];
      lines_ok = lines_ok && ok;
      lines_invalid = lines_invalid || !ok;
    }
    const int seq_invalid = o.seq < 1 || o.seq > INT32_MAX;
    const int span_invalid = o.span_start < 0 || o.span_end > o.seq || o.span_start >= o.span_end;
    expect_verdict("mmi_build_grid_index", status,
                   flags.null_pointer < 0 && bh > 0 && seq_ok && span_ok && nqb > 0 &&
                       block_size_valid(o.block_k) && o.sink >= 0 && o.local >= 1 && lines_ok,
                   bh == 0 || seq_invalid || block_size_invalid(o.block_q) ||
                       block_size_invalid(o.block_k) || span_invalid || o.sink < 0 || o.local < 1 ||
                       (span_ok && seq_ok && lines_invalid),
                   &err);
  }
  if (status == MMI_OK && (seq == 0 || nqb == 0 || bh == 0))
    die("harness: grid shape outside the fuzzed domain");

  if (status == MMI_OK && flags.null_pointer < 0) {
    for (int64_t cell = 0; cell < bh * nqb; ++cell)
      check_built_ranges("grid", cell, kv_ranges + cell * MMI_GRID_MAX_RANGES * 2,
                         kv_range_count[cell], MMI_GRID_MAX_RANGES, o.block_k, seq);
    /* Lines first, then the others, each ascending: check against the documented line rule. */
    for (int64_t i = 0; i < bh; ++i) {
      const int32_t *qp = q_perm + i * seq;
      int64_t n_lines = 0;
      for (int64_t p = o.span_start; p < o.span_end; ++p)
        n_lines += (p - o.span_start) % stride[i] == phase[i];
      for (int64_t s = 0; s < seq; ++s) {
        const int64_t p = qp[s];
        const int is_line = p >= o.span_start && p < o.span_end && (p - o.span_start) % stride[i] == phase[i];
        if (is_line != (s < n_lines) || (s > 0 && s != n_lines && qp[s - 1] >= p))
          die("grid: q_perm[%lld][%lld] = %lld breaks 'lines first, each part ascending' "
              "(%lld lines)", (long long)i, (long long)s, (long long)p, (long long)n_lines);
        if (k_perm[i * seq + s] != p) die("grid: k_perm differs from q_perm at %lld", (long long)s);
      }
    }
    mmi_sparse_index index;
    memset(&index, 0, sizeof index);
    index.block_q = o.block_q;
    index.num_q_blocks = nqb;
    index.max_ranges = MMI_GRID_MAX_RANGES;
    index.kv_ranges = kv_ranges;
    index.kv_ranges_stride_h = nqb * MMI_GRID_MAX_RANGES * 2;
    index.kv_ranges_stride_b = heads * index.kv_ranges_stride_h;
    index.kv_range_count = kv_range_count;
    index.kv_range_count_stride_h = nqb;
    index.kv_range_count_stride_b = heads * nqb;
    index.q_perm = q_perm;
    index.q_perm_stride_h = seq;
    index.q_perm_stride_b = heads * seq;
    index.k_perm = k_perm;
    index.k_perm_stride_h = seq;
    index.k_perm_stride_b = heads * seq;
    mmi_attention_problem problem;
    tensors t;
    make_builder_problem(&problem, &t, batch, heads, flags.single_kv_head ? 1 : heads, seq, seq, 1,
                         &index, flags.with_lse);
    check_and_forward("grid", &problem, &t, 1, 1);
    tensors_free(&t);
  }
  free(stride);
  free(phase);
  free(q_perm);
  free(k_perm);
  free(kv_ranges);
  free(kv_range_count);
}

/* ------------------------------------------------------------------------------------------ */
/* Modality permutation                                                                       */

static void fuzz_modality_permutation(byte_reader *r, common_flags flags) {
  const int64_t batch = take_param(r, 1, MAX_BATCH, INVALID_COUNT, COUNT_OF(INVALID_COUNT));
  const int64_t seq = take_param(r, 1, MAX_SEQ, INVALID_SEQ, COUNT_OF(INVALID_SEQ));
  static const int64_t invalid_modalities[] = {0, -1, 257, INT64_MAX, INT64_MIN};
  int64_t num_modalities =
      take_param(r, 1, 9, invalid_modalities, COUNT_OF(invalid_modalities));
  if (num_modalities == 9) num_modalities = 256; /* the largest valid count */
  const int64_t heads = take_log_in(r, 1, MAX_HEADS);
  const int causal = take_u8(r) & 1;
  const uint8_t block_mask = take_u8(r);
  const int64_t block_q = take_log_in(r, 1, MAX_BLOCK);

  const int64_t b_count = batch >= 1 ? batch : 0;
  const int64_t s_count = seq >= 1 && seq <= MAX_SEQ ? seq : 0;
  const int64_t m_ok = num_modalities >= 1 && num_modalities <= 256 ? num_modalities : 0;
  const int64_t m_draw = m_ok > 0 ? m_ok : 4;
  int32_t *modality = alloc_i32(b_count * s_count);
  /* Runs of one modality (image/text spans): (value, run length) pairs. */
  for (int64_t b = 0; b < b_count; ++b) {
    int64_t p = 0;
    while (p < s_count) {
      const uint8_t v = take_u8(r);
      int32_t value = (int32_t)(v % m_draw);
      if (v == 255) value = -1;
      else if (v == 254) value = (int32_t)m_draw; /* one past the last modality */
      const int64_t run = 1 + take_log_in(r, 0, 255);
      for (int64_t i = 0; i < run && p < s_count; ++i) modality[b * s_count + p++] = value;
    }
  }
  int32_t *perm = alloc_i32(b_count * s_count);
  int32_t *segment_offsets = alloc_i32(b_count * (m_ok > 0 ? m_ok + 1 : 0));

  const int32_t *arg_modality = flags.null_pointer == 0 ? NULL : modality;
  int32_t *arg_perm = flags.null_pointer == 1 ? NULL : perm;
  int32_t *arg_offsets = flags.null_pointer == 2 ? NULL : segment_offsets;

  mmi_error err;
  poison_error(&err);
  const int status = mmi_build_modality_permutation(batch, seq, arg_modality, num_modalities,
                                                    arg_perm, arg_offsets, &err);
  expect_error_contract("mmi_build_modality_permutation", status, &err);
  if (flags.call_without_err) {
    const int again = mmi_build_modality_permutation(batch, seq, arg_modality, num_modalities,
                                                     arg_perm, arg_offsets, NULL);
    if (again != status)
      die("mmi_build_modality_permutation: status %d with err, %d without", status, again);
  }
  {
    int values_ok = 1;
    for (int64_t i = 0; i < b_count * s_count; ++i)
      values_ok = values_ok && modality[i] >= 0 && modality[i] < num_modalities;
    /* The header bounds num_modalities only from below; the 256 cap is the implementation's. */
    expect_verdict("mmi_build_modality_permutation", status,
                   flags.null_pointer < 0 && b_count > 0 && s_count > 0 && m_ok > 0 && values_ok,
                   batch < 1 || seq < 1 || seq > INT32_MAX || num_modalities < 1 ||
                       (s_count > 0 && b_count > 0 && !values_ok),
                   &err);
  }
  if (status == MMI_OK && (b_count == 0 || s_count == 0 || m_ok == 0))
    die("harness: modality shape outside the fuzzed domain");

  if (status == MMI_OK && flags.null_pointer < 0) {
    /* Offsets: 0 .. seq, non-decreasing; segment m holds exactly modality m's positions, ascending. */
    for (int64_t b = 0; b < b_count; ++b) {
      const int32_t *off = segment_offsets + b * (m_ok + 1);
      const int32_t *pb = perm + b * s_count;
      if (off[0] != 0 || off[m_ok] != s_count)
        die("modality: segment_offsets[%lld] spans [%d, %d), expected [0, %lld)", (long long)b,
            off[0], off[m_ok], (long long)s_count);
      int64_t count_seen = 0;
      for (int64_t m = 0; m < m_ok; ++m) {
        if (off[m + 1] < off[m]) die("modality: segment_offsets[%lld] decreases at %lld", (long long)b, (long long)m);
        for (int32_t s = off[m]; s < off[m + 1]; ++s) {
          if (pb[s] < 0 || pb[s] >= s_count || modality[b * s_count + pb[s]] != m ||
              (s > off[m] && pb[s] <= pb[s - 1]))
            die("modality: perm[%lld][%d] = %d is not the next position of modality %lld",
                (long long)b, s, pb[s], (long long)m);
          ++count_seen;
        }
      }
      if (count_seen != s_count) die("modality: segments cover %lld of %lld slots", (long long)count_seen, (long long)s_count);
    }
    /* An index in permuted space: query block qb attends the (non-empty) segments picked by a
     * mask; ranges and counts are per batch and broadcast over heads. */
    const int64_t nqb = documented_num_blocks(s_count, block_q);
    int32_t *kv_ranges = alloc_i32(b_count * nqb * m_ok * 2);
    int32_t *kv_range_count = alloc_i32(b_count * nqb);
    for (int64_t b = 0; b < b_count; ++b)
      for (int64_t qb = 0; qb < nqb; ++qb) {
        const int32_t *off = segment_offsets + b * (m_ok + 1);
        int32_t *out = kv_ranges + (b * nqb + qb) * m_ok * 2;
        int32_t n = 0;
        for (int64_t m = 0; m < m_ok; ++m)
          if (off[m + 1] > off[m] && ((block_mask >> ((m + qb) % 8)) & 1)) {
            out[2 * n] = off[m];
            out[2 * n + 1] = off[m + 1];
            ++n;
          }
        for (int64_t k = n; k < m_ok; ++k) out[2 * k] = out[2 * k + 1] = -7; /* unused: garbage */
        kv_range_count[b * nqb + qb] = n;
      }
    mmi_sparse_index index;
    memset(&index, 0, sizeof index);
    index.block_q = block_q;
    index.num_q_blocks = nqb;
    index.max_ranges = m_ok;
    index.kv_ranges = kv_ranges;
    index.kv_ranges_stride_b = nqb * m_ok * 2;
    index.kv_range_count = kv_range_count;
    index.kv_range_count_stride_b = nqb;
    index.q_perm = perm;
    index.q_perm_stride_b = s_count;
    index.k_perm = perm;
    index.k_perm_stride_b = s_count;
    mmi_attention_problem problem;
    tensors t;
    make_builder_problem(&problem, &t, b_count, heads, flags.single_kv_head ? 1 : heads, s_count,
                         s_count, causal, &index, flags.with_lse);
    check_and_forward("modality", &problem, &t, 1, 1);
    tensors_free(&t);
    free(kv_ranges);
    free(kv_range_count);
  }
  free(modality);
  free(perm);
  free(segment_offsets);
}

/* ------------------------------------------------------------------------------------------ */
/* Raw indexes straight into the checker                                                      */

/* How an index array is laid out over (batch, head): its own strides, possibly broadcasting. */
typedef enum layout { LAYOUT_FULL, LAYOUT_SHARED_B, LAYOUT_SHARED_H, LAYOUT_SHARED_BH } layout;

/* Elements of an array [B', H', trailing] under `l`, and its strides. */
static int64_t layout_strides(layout l, int64_t batch, int64_t heads, int64_t trailing,
                              int64_t *stride_b, int64_t *stride_h) {
  const int64_t eb = l == LAYOUT_SHARED_B || l == LAYOUT_SHARED_BH ? 1 : batch;
  const int64_t eh = l == LAYOUT_SHARED_H || l == LAYOUT_SHARED_BH ? 1 : heads;
  *stride_h = eh == 1 ? 0 : trailing;
  *stride_b = eb == 1 ? 0 : eh * trailing;
  return eb * eh * trailing;
}

/* One block's ranges and columns. All R range slots and C column slots are generated valid-looking
 * (sorted, disjoint, columns outside the ranges), and the counts pick a prefix; slots past the
 * counts are sometimes raw garbage instead. Then at most one corruption hits any slot, used or
 * not, or a count. Unused slots must be ignored by the checker and the forward, but they matter
 * when a differently broadcast count array pairs them with a larger count. */
static void take_raw_block(byte_reader *r, int64_t seq_k, int64_t max_ranges, int64_t max_columns,
                           int32_t *ranges, int32_t *range_count, int32_t *columns,
                           int32_t *column_count) {
  const uint8_t shape = take_u8(r);
  const int garbage_tail = (shape & 0xc0) == 0xc0;
  const int64_t n_ranges = max_ranges > 0 ? (shape & 0x3f) % (max_ranges + 1) : 0;
  int64_t cursor = 0;
  for (int64_t i = 0; i < max_ranges; ++i) {
    const int64_t start = cursor + take_log_in(r, 0, seq_k);
    const int64_t end = start + take_log_in(r, 0, seq_k); /* may be empty, may pass seq_k */
    ranges[2 * i] = (int32_t)(start < INT32_MAX ? start : INT32_MAX);
    ranges[2 * i + 1] = (int32_t)(end < INT32_MAX ? end : INT32_MAX);
    cursor = end;
    if (garbage_tail && i >= n_ranges) {
      ranges[2 * i] = (int32_t)take_u32(r);
      ranges[2 * i + 1] = (int32_t)take_u32(r);
    }
  }
  *range_count = (int32_t)n_ranges;

  int64_t n_columns = 0;
  if (max_columns > 0) {
    n_columns = take_u8(r) % (max_columns + 1);
    int64_t col = take_log_in(r, 0, seq_k);
    int64_t rr = 0;
    for (int64_t c = 0; c < max_columns; ++c) {
      /* Step past the used ranges, unless a bit asks for a column inside one (invalid). */
      const int allow_inside = (take_u8(r) & 7) == 7;
      while (!allow_inside && rr < n_ranges) {
        if (ranges[2 * rr + 1] <= col) ++rr;
        else if (ranges[2 * rr] <= col) col = ranges[2 * rr + 1];
        else break;
      }
      columns[c] = (int32_t)(col < INT32_MAX ? col : INT32_MAX);
      if (garbage_tail && c >= n_columns) columns[c] = (int32_t)take_u32(r);
      col += 1 + take_log_in(r, 0, seq_k);
    }
    *column_count = (int32_t)n_columns;
  }

  const uint8_t corruption = take_u8(r);
  if (corruption < 208) return;
  const int64_t ri = max_ranges > 0 ? take_u8(r) % max_ranges : 0;
  const int64_t ci = max_columns > 0 ? take_u8(r) % max_columns : 0;
  switch (corruption % 12) {
    case 0: *range_count = (int32_t)max_ranges + 1; break;
    case 1: *range_count = -1; break;
    case 2: if (max_ranges > 0) ranges[2 * ri] = -1; break;
    case 3: if (max_ranges > 0) ranges[2 * ri + 1] = (int32_t)seq_k + 1; break;
    case 4: if (max_ranges > 0) { int32_t t = ranges[2 * ri]; ranges[2 * ri] = ranges[2 * ri + 1]; ranges[2 * ri + 1] = t; } break;
    case 5: if (ri > 0) ranges[2 * ri] = ranges[2 * ri - 1] - 1; break; /* overlap */
    case 6: if (max_columns > 0) *column_count = (int32_t)max_columns + 1; break;
    case 7: if (max_columns > 0) *column_count = INT32_MIN; break;
    case 8: if (max_columns > 0) columns[ci] = (int32_t)seq_k; break;
    case 9: if (ci > 0) columns[ci] = columns[ci - 1]; break;
    case 10: if (max_columns > 0 && max_ranges > 0) columns[ci] = ranges[2 * ri]; break;
    default: if (max_ranges > 0) ranges[2 * ri] = INT32_MIN; break;
  }
}

static void take_raw_permutation(byte_reader *r, int32_t *perm, int64_t n) {
  for (int64_t i = 0; i < n; ++i) perm[i] = (int32_t)i;
  const int64_t swaps = take_log_in(r, 0, n);
  for (int64_t s = 0; s < swaps; ++s) {
    const int64_t i = take_u16(r) % n, j = take_u16(r) % n;
    const int32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  const uint8_t corruption = take_u8(r);
  if (corruption < 232) return;
  const int64_t at = take_u16(r) % n;
  switch (corruption % 3) {
    case 0: if (n > 1) perm[at] = perm[(at + 1) % n]; break; /* duplicate */
    case 1: perm[at] = (int32_t)n; break;
    default: perm[at] = -1; break;
  }
}

static void fuzz_checker_raw(byte_reader *r, common_flags flags) {
  mmi_attention_problem p;
  memset(&p, 0, sizeof p);
  const uint8_t shape_bits = take_u8(r);
  static const mmi_dtype dtypes[] = {MMI_DTYPE_FLOAT32, MMI_DTYPE_FLOAT32, MMI_DTYPE_FLOAT16,
                                     MMI_DTYPE_BFLOAT16};
  p.dtype = (shape_bits & 0xe0) == 0xe0 ? (mmi_dtype)3 : dtypes[shape_bits & 3];
  p.causal = (shape_bits >> 2) & 1;
  static const int64_t head_dims[] = {HEAD_DIM, HEAD_DIM, HEAD_DIM, HEAD_DIM, 80, 96, 128, 65};
  p.head_dim = (shape_bits & 0x18) == 0x18 ? head_dims[take_u8(r) % 8] : HEAD_DIM;
  p.batch = take_param(r, 1, MAX_BATCH, INVALID_COUNT, COUNT_OF(INVALID_COUNT));
  p.kv_heads = take_log_in(r, 1, MAX_HEADS);
  p.q_heads = p.kv_heads * take_log_in(r, 1, 2);
  if (take_u8(r) == 255) p.q_heads += 1; /* not a multiple of kv_heads */
  p.seq_q = take_param(r, 1, RAW_MAX_SEQ, INVALID_SEQ, COUNT_OF(INVALID_SEQ));
  p.seq_k = take_param(r, 1, RAW_MAX_SEQ, INVALID_SEQ, COUNT_OF(INVALID_SEQ));
  p.scale = 0.125f;

  mmi_sparse_index *ix = &p.index;
  static const int64_t invalid_block_q[] = {0, -1, INT64_MIN};
  ix->block_q = take_param(r, 1, MAX_BLOCK, invalid_block_q, COUNT_OF(invalid_block_q));
  const int64_t nqb = documented_num_blocks(p.seq_q <= RAW_MAX_SEQ ? p.seq_q : 0, ix->block_q);
  const uint8_t nqb_delta = take_u8(r);
  ix->num_q_blocks = nqb + (nqb_delta == 255 ? 1 : nqb_delta == 254 ? -1 : 0);
  static const int64_t invalid_capacity[] = {-1};
  ix->max_ranges = take_param(r, 0, RAW_MAX_CAPACITY, invalid_capacity, 1);
  ix->max_columns = take_param(r, 0, RAW_MAX_CAPACITY, invalid_capacity, 1);

  /* Sizes to build from: only when the declared shape is one the arrays can honestly have. */
  const int dims_ok = p.batch >= 1 && p.seq_q >= 1 && p.seq_q <= RAW_MAX_SEQ && p.seq_k >= 1 &&
                      p.seq_k <= RAW_MAX_SEQ && nqb > 0 && ix->max_ranges >= 0 &&
                      ix->max_columns >= 0;
  const int64_t B = dims_ok ? p.batch : 0, H = dims_ok ? p.q_heads : 0;
  const int64_t NQB = dims_ok ? nqb : 0;
  const int64_t R = dims_ok ? ix->max_ranges : 0, C = dims_ok ? ix->max_columns : 0;

  const uint8_t layout_bits = take_u8(r);
  const uint8_t perm_bits = take_u8(r);
  const layout ranges_layout = (layout)(layout_bits & 3);
  /* Each block array broadcasts on its own: mixed layouts must still be checked pair by pair. */
  const layout range_count_layout = (layout)((layout_bits >> 2) & 3);
  const layout columns_layout = (layout)((layout_bits >> 4) & 3);
  const layout column_count_layout = (layout)((layout_bits >> 6) & 3);

  const int64_t n_ranges_elems = layout_strides(ranges_layout, B, H, NQB * R * 2,
                                                &ix->kv_ranges_stride_b, &ix->kv_ranges_stride_h);
  const int64_t n_range_count = layout_strides(range_count_layout, B, H, NQB,
                                               &ix->kv_range_count_stride_b, &ix->kv_range_count_stride_h);
  const int64_t n_columns_elems = layout_strides(columns_layout, B, H, NQB * C,
                                                 &ix->kv_columns_stride_b, &ix->kv_columns_stride_h);
  const int64_t n_column_count = layout_strides(column_count_layout, B, H, NQB,
                                                &ix->kv_column_count_stride_b, &ix->kv_column_count_stride_h);
  int32_t *kv_ranges = alloc_i32(n_ranges_elems);
  int32_t *kv_range_count = alloc_i32(n_range_count);
  int32_t *kv_columns = alloc_i32(n_columns_elems);
  int32_t *kv_column_count = alloc_i32(n_column_count);
  memset(kv_ranges, 0, (size_t)n_ranges_elems * sizeof(int32_t));
  memset(kv_range_count, 0, (size_t)n_range_count * sizeof(int32_t));
  memset(kv_columns, 0, (size_t)n_columns_elems * sizeof(int32_t));
  memset(kv_column_count, 0, (size_t)n_column_count * sizeof(int32_t));

  /* Fill block by block, walking every (b, h) and writing through each array's own strides.
   * Entries shared by broadcasting are rewritten and the last write wins, so the visit order
   * (b-major or h-major, forwards or backwards) decides which (b, h) each shared entry comes
   * from: arrays broadcast differently then meet in combinations no single block generated. */
  if (dims_ok) {
    const uint8_t order = take_u8(r);
    int32_t scratch_ranges[2 * RAW_MAX_CAPACITY], scratch_columns[RAW_MAX_CAPACITY];
    for (int64_t visit = 0; visit < B * H; ++visit) {
      const int64_t v = (order & 1) ? B * H - 1 - visit : visit;
      const int64_t b = (order & 2) ? v % B : v / H;
      const int64_t h = (order & 2) ? v / B : v % H;
      for (int64_t qb = 0; qb < NQB; ++qb) {
          int32_t n_ranges = 0, n_columns = 0;
          take_raw_block(r, p.seq_k, R, C, scratch_ranges, &n_ranges, scratch_columns, &n_columns);
          memcpy(kv_ranges + b * ix->kv_ranges_stride_b + h * ix->kv_ranges_stride_h + qb * R * 2,
                 scratch_ranges, (size_t)(R * 2) * sizeof(int32_t));
          kv_range_count[b * ix->kv_range_count_stride_b + h * ix->kv_range_count_stride_h + qb] = n_ranges;
          if (C > 0) {
            memcpy(kv_columns + b * ix->kv_columns_stride_b + h * ix->kv_columns_stride_h + qb * C,
                   scratch_columns, (size_t)C * sizeof(int32_t));
            kv_column_count[b * ix->kv_column_count_stride_b + h * ix->kv_column_count_stride_h + qb] =
                n_columns;
          }
      }
    }
  }
  ix->kv_ranges = kv_ranges;
  ix->kv_range_count = kv_range_count;
  ix->kv_columns = kv_columns;
  ix->kv_column_count = kv_column_count;
  /* NULL where the header allows it (C == 0), and sometimes where it does not. */
  int ambiguous = 0;
  if (C == 0 && (perm_bits & 0x10)) ix->kv_columns = NULL, ix->kv_column_count = NULL;
  if (R == 0 && (perm_bits & 0x20))
    ix->kv_ranges = NULL, ambiguous = 1; /* allowed by the checker, not by the header */
  if (flags.null_pointer == 0) ix->kv_range_count = NULL;
  if (flags.null_pointer == 1 && ix->max_columns > 0) ix->kv_columns = NULL;
  if (flags.null_pointer == 3 && ix->max_columns > 0) ix->kv_column_count = NULL;
  if (flags.null_pointer == 4 && ix->max_ranges > 0) ix->kv_ranges = NULL;

  int32_t *q_perm = NULL, *k_perm = NULL;
  if (dims_ok && (perm_bits & 1)) {
    const int64_t n = layout_strides((layout)((perm_bits >> 2) & 3), B, H, p.seq_q,
                                     &ix->q_perm_stride_b, &ix->q_perm_stride_h);
    q_perm = alloc_i32(n);
    for (int64_t i = 0; i < n / p.seq_q; ++i) take_raw_permutation(r, q_perm + i * p.seq_q, p.seq_q);
    ix->q_perm = q_perm;
  }
  if (dims_ok && (perm_bits & 2)) {
    const int64_t n = layout_strides((layout)((perm_bits >> 6) & 3), B, H, p.seq_k,
                                     &ix->k_perm_stride_b, &ix->k_perm_stride_h);
    k_perm = alloc_i32(n);
    for (int64_t i = 0; i < n / p.seq_k; ++i) take_raw_permutation(r, k_perm + i * p.seq_k, p.seq_k);
    ix->k_perm = k_perm;
  }

  /* The declared shape as the headers define it; the index values are judged separately. */
  const int shape_valid =
      dims_ok && p.dtype <= MMI_DTYPE_BFLOAT16 && p.q_heads % p.kv_heads == 0 &&
      (!p.causal || p.seq_k >= p.seq_q) && mmi_head_dim_supported(p.head_dim) &&
      ix->num_q_blocks == nqb && ix->kv_range_count != NULL &&
      (ix->max_ranges == 0 || ix->kv_ranges != NULL) &&
      (ix->max_columns == 0 || (ix->kv_columns != NULL && ix->kv_column_count != NULL));

  /* Tensors of the declared size whenever it is small; otherwise zero-byte buffers, which the
   * checker must reject before touching (it never reads q/k/v/out anyway). */
  tensors t;
  memset(&t, 0, sizeof t);
  const int tensor_dims_ok = p.batch >= 1 && p.seq_q >= 1 && p.seq_q <= RAW_MAX_SEQ &&
                             p.seq_k >= 1 && p.seq_k <= RAW_MAX_SEQ;
  if (tensor_dims_ok) {
    tensors_alloc(&t, &p, flags.with_lse);
  } else {
    t.q = alloc_i32(0), t.k = alloc_i32(0), t.v = alloc_i32(0), t.out = alloc_i32(0);
    p.q = t.q, p.k = t.k, p.v = t.v, p.out = t.out;
  }
  if (flags.null_pointer == 2) p.v = NULL;
  const int status = check_and_forward("raw", &p, &t, 0, shape_valid && p.v != NULL);
  char why[256];
  if (status != MMI_OK && shape_valid && p.v != NULL && !ambiguous &&
      reference_index_valid(&p, why, sizeof why)) {
    mmi_error err;
    poison_error(&err);
    mmi_sparse_attention_check(&p, &err);
    die("raw: mmi_sparse_attention_check rejected a valid index: %s", err.message);
  }
  tensors_free(&t);

  /* A NULL problem must be an error too. */
  mmi_error err;
  poison_error(&err);
  const int null_status = mmi_sparse_attention_check(NULL, &err);
  expect_error_contract("mmi_sparse_attention_check(NULL)", null_status, &err);
  if (null_status == MMI_OK) die("mmi_sparse_attention_check(NULL) returned MMI_OK");

  free(kv_ranges);
  free(kv_range_count);
  free(kv_columns);
  free(kv_column_count);
  free(q_perm);
  free(k_perm);
}

/* ------------------------------------------------------------------------------------------ */
/* Modality-boundary builder (mmi_boundary_index.h)                                           */

/* A row of `n` entries: a strictly increasing valid prefix in [0, seq), then -1 padding; the
 * corruptions of take_sorted_list (negative, past the end, duplicate, swapped) may follow. */
static void take_padded_list(byte_reader *r, int32_t *row, int64_t n, int64_t seq) {
  if (n <= 0) return;
  const int64_t valid = take_log_in(r, 0, n);
  take_sorted_list(r, row, n, seq > 0 ? seq : 1);
  for (int64_t i = valid; i < n; ++i) row[i] = -1;
}

/* 1 if row[0:n] is a strictly increasing prefix in [0, seq) followed only by -1. */
static int padded_list_valid(const int32_t *row, int64_t n, int64_t seq) {
  int64_t valid = 0;
  while (valid < n && row[valid] != -1) ++valid;
  for (int64_t i = valid; i < n; ++i)
    if (row[i] != -1) return 0;
  return list_valid(row, valid, seq);
}

static void fuzz_boundary(byte_reader *r, common_flags flags) {
  static const int64_t invalid_modalities[] = {0, -1, 9, INT64_MAX, INT64_MIN};
  static const int64_t invalid_capacity[] = {-1, INT64_MIN, (int64_t)INT32_MAX + 1};
  mmi_boundary_problem p;
  memset(&p, 0, sizeof p);
  p.batch = take_param(r, 1, MAX_BATCH, INVALID_COUNT, COUNT_OF(INVALID_COUNT));
  p.heads = take_param(r, 1, MAX_HEADS, INVALID_COUNT, COUNT_OF(INVALID_COUNT));
  p.seq = take_param(r, 1, MAX_SEQ, INVALID_SEQ, COUNT_OF(INVALID_SEQ));
  p.num_modalities = take_param(r, 1, MMI_BOUNDARY_MAX_MODALITIES, invalid_modalities,
                                COUNT_OF(invalid_modalities));
  p.block_q = take_block(r);
  p.block_k = take_block(r);
  p.max_ranges = take_param(r, 0, 16, invalid_capacity, COUNT_OF(invalid_capacity));
  p.max_columns = take_param(r, 0, 16, invalid_capacity, COUNT_OF(invalid_capacity));
  p.num_vertical = take_param(r, 0, 12, INVALID_LIST_LENGTH, COUNT_OF(INVALID_LIST_LENGTH));
  p.num_slash = take_param(r, 0, 12, INVALID_LIST_LENGTH, COUNT_OF(INVALID_LIST_LENGTH));
  const uint8_t broadcast = take_u8(r); /* 2 bits per input: share over batch, over heads */

  const int64_t B = p.batch >= 1 ? p.batch : 0, H = p.heads >= 1 ? p.heads : 0;
  const int64_t S = p.seq >= 1 && p.seq <= MAX_SEQ ? p.seq : 0;
  const int64_t M = p.num_modalities >= 1 && p.num_modalities <= MMI_BOUNDARY_MAX_MODALITIES
                        ? p.num_modalities : 0;
  const int64_t NV = p.num_vertical >= 0 ? p.num_vertical : 0;
  const int64_t NS = p.num_slash >= 0 ? p.num_slash : 0;
  /* Own extents and strides of the four (batch, head) inputs. */
  int64_t eb[4], eh[4], sb[4], sh[4];
  const int64_t trailing[4] = {M, M, M * M * MMI_PAIR_PATTERN_FIELDS, M};
  for (int i = 0; i < 4; ++i) {
    eb[i] = (broadcast >> (2 * i)) & 1 ? 1 : B;
    eh[i] = (broadcast >> (2 * i + 1)) & 1 ? 1 : H;
    sh[i] = eh[i] == 1 ? 0 : trailing[i];
    sb[i] = eb[i] == 1 ? 0 : eh[i] * trailing[i];
  }
  /* vertical and slash share input 3's layout */
  const int64_t v_sh = eh[3] == 1 ? 0 : M * NV, v_sb = eb[3] == 1 ? 0 : eh[3] * M * NV;
  const int64_t s_sh = eh[3] == 1 ? 0 : M * NS, s_sb = eb[3] == 1 ? 0 : eh[3] * M * NS;

  int32_t *modality = alloc_i32(B * S);
  const int64_t m_draw = M > 0 ? M : 3;
  for (int64_t b = 0; b < B; ++b) {
    int64_t x = 0;
    while (x < S) {
      const uint8_t v = take_u8(r);
      int32_t value = (int32_t)(v % m_draw);
      if (v == 255) value = -1;
      else if (v == 254) value = (int32_t)m_draw;
      const int64_t run = 1 + take_log_in(r, 0, 255);
      for (int64_t i = 0; i < run && x < S; ++i) modality[b * S + x++] = value;
    }
  }
  int32_t *grid_stride = alloc_i32(eb[0] * eh[0] * M);
  int32_t *grid_phase = alloc_i32(eb[1] * eh[1] * M);
  for (int64_t i = 0; i < eb[0] * eh[0] * M; ++i) {
    static const int64_t invalid_stride[] = {-1, INT32_MIN};
    grid_stride[i] = (int32_t)take_param(r, 0, S + 2, invalid_stride, COUNT_OF(invalid_stride));
  }
  for (int64_t i = 0; i < eb[1] * eh[1] * M; ++i) {
    /* mostly a phase below the stride it meets at the same (b, h) under the full layout */
    const int64_t n_strides = eb[0] * eh[0] * M; /* 0 when batch or heads are invalid */
    const int64_t s = n_strides > 0 ? grid_stride[i % n_strides] : 0;
    const int64_t invalid_phase[] = {-1, s > 0 ? s : 1, INT32_MAX};
    grid_phase[i] = (int32_t)take_param(r, 0, s > 0 ? s - 1 : 0, invalid_phase,
                                        COUNT_OF(invalid_phase));
  }
  int32_t *pattern = alloc_i32(eb[2] * eh[2] * M * M * MMI_PAIR_PATTERN_FIELDS);
  for (int64_t i = 0; i < eb[2] * eh[2] * M * M; ++i) {
    int32_t *e = pattern + i * MMI_PAIR_PATTERN_FIELDS;
    const uint8_t k = take_u8(r);
    e[0] = k >= 250 ? (k == 250 ? -1 : 5 + k % 3) : k % 5;
    const int64_t scale = S > 0 ? S : 8;
    for (int f = 1; f < MMI_PAIR_PATTERN_FIELDS; ++f) {
      const int64_t w = take_window(r, 0, scale);
      e[f] = (int32_t)(w > INT32_MAX ? INT32_MAX : w < INT32_MIN ? INT32_MIN : w);
    }
    if (e[0] == MMI_PAIR_LINES) {
      const uint8_t bits = take_u8(r);
      static const int32_t truthy[] = {0, 1, 0, 1, 0, 1, 2, -1};
      e[1] = truthy[bits & 7];
      e[2] = truthy[(bits >> 3) & 7];
    }
  }
  int32_t *vertical = alloc_i32(eb[3] * eh[3] * M * NV);
  int32_t *slash = alloc_i32(eb[3] * eh[3] * M * NS);
  for (int64_t i = 0; i < eb[3] * eh[3] * M; ++i) take_padded_list(r, vertical + i * NV, NV, S);
  for (int64_t i = 0; i < eb[3] * eh[3] * M; ++i) take_padded_list(r, slash + i * NS, NS, S);

  p.modality = flags.null_pointer == 0 ? NULL : modality;
  p.grid_stride = flags.null_pointer == 1 ? NULL : grid_stride;
  p.grid_stride_stride_b = sb[0], p.grid_stride_stride_h = sh[0];
  p.grid_phase = flags.null_pointer == 2 ? NULL : grid_phase;
  p.grid_phase_stride_b = sb[1], p.grid_phase_stride_h = sh[1];
  p.pair_pattern = flags.null_pointer == 3 ? NULL : pattern;
  p.pair_pattern_stride_b = sb[2], p.pair_pattern_stride_h = sh[2];
  /* Empty lists come as NULL, as from an empty tensor. */
  p.vertical = NV == 0 ? NULL : vertical;
  p.vertical_stride_b = v_sb, p.vertical_stride_h = v_sh;
  p.slash = NS == 0 ? NULL : slash;
  p.slash_stride_b = s_sb, p.slash_stride_h = s_sh;

  const int64_t nqb = documented_num_blocks(S, p.block_q);
  const int64_t R = p.max_ranges >= 1 && p.max_ranges <= 16 ? p.max_ranges : 0;
  const int64_t C = p.max_columns >= 0 && p.max_columns <= 16 ? p.max_columns : 0;
  int32_t *q_perm = alloc_i32(B * H * S);
  int32_t *k_perm = alloc_i32(B * H * S);
  int32_t *kv_ranges = alloc_i32(B * H * nqb * R * 2);
  int32_t *kv_range_count = alloc_i32(B * H * nqb);
  int32_t *kv_columns = C > 0 ? alloc_i32(B * H * nqb * C) : NULL;
  int32_t *kv_column_count = alloc_i32(B * H * nqb);
  int32_t *class_offsets = alloc_i32(B * H * (2 * M + 1));
  mmi_boundary_output o;
  o.q_perm = flags.null_pointer == 4 ? NULL : q_perm;
  o.k_perm = flags.null_pointer == 5 ? NULL : k_perm; /* NULL is allowed: not written */
  o.kv_ranges = flags.null_pointer == 6 ? NULL : kv_ranges;
  o.kv_range_count = kv_range_count;
  o.kv_columns = kv_columns;
  o.kv_column_count = kv_column_count;
  o.class_offsets = flags.null_pointer == 7 ? NULL : class_offsets;

  mmi_error err;
  poison_error(&err);
  const int status = mmi_build_boundary_index(&p, &o, 1, &err);
  expect_error_contract("mmi_build_boundary_index", status, &err);
  if (flags.call_without_err) {
    const int again = mmi_build_boundary_index(&p, &o, 1, NULL);
    if (again != status) die("mmi_build_boundary_index: status %d with err, %d without", status, again);
  }
  {
    /* kv_ranges and kv_columns both NULL: count mode (capacities ignored; mmi_boundary_index.h). */
    const int count_mode = o.kv_ranges == NULL && o.kv_columns == NULL;
    const int sizes_ok = B > 0 && H > 0 && S > 0 && M > 0 && block_size_valid(p.block_q) &&
                         block_size_valid(p.block_k) &&
                         (count_mode || (R > 0 && p.max_columns >= 0 && p.max_columns <= 16)) &&
                         p.num_vertical >= 0 && p.num_slash >= 0;
    int values_ok = sizes_ok;
    for (int64_t i = 0; values_ok && i < B * S; ++i)
      values_ok = modality[i] >= 0 && modality[i] < M;
    for (int64_t b = 0; values_ok && b < B; ++b)
      for (int64_t h = 0; values_ok && h < H; ++h)
        for (int64_t m = 0; values_ok && m < M; ++m) {
          const int32_t st = grid_stride[b * sb[0] + h * sh[0] + m];
          const int32_t ph = grid_phase[b * sb[1] + h * sh[1] + m];
          values_ok = st >= 0 && (st == 0 ? ph == 0 : ph >= 0 && ph < st);
        }
    for (int64_t i = 0; values_ok && i < eb[2] * eh[2] * M * M; ++i) {
      const int32_t *e = pattern + i * MMI_PAIR_PATTERN_FIELDS;
      if (e[0] < 0 || e[0] > 4) values_ok = 0;
      else if (e[0] == MMI_PAIR_A_SHAPE) values_ok = e[1] >= 0 && e[2] >= 0;
      else if (e[0] == MMI_PAIR_LINES)
        values_ok = (e[1] == 0 || e[1] == 1) && (e[2] == 0 || e[2] == 1) && e[3] >= 0;
    }
    for (int64_t i = 0; values_ok && i < eb[3] * eh[3] * M; ++i)
      values_ok = padded_list_valid(vertical + i * NV, NV, S) && padded_list_valid(slash + i * NS, NS, S);
    const int null_arg = flags.null_pointer >= 0 && flags.null_pointer != 5 &&
                         !(flags.null_pointer == 6 && count_mode);
    expect_verdict("mmi_build_boundary_index", status, !null_arg && values_ok,
                   null_arg || !sizes_ok || (sizes_ok && !values_ok), &err);
  }

  if (status == MMI_OK && flags.null_pointer < 0) {
    const int64_t NC = 2 * M;
    int64_t rank[MMI_BOUNDARY_MAX_MODALITIES];
    int32_t *cls = alloc_i32(S);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t bh = b * H + h;
        const int32_t *st = grid_stride + b * sb[0] + h * sh[0];
        const int32_t *ph = grid_phase + b * sb[1] + h * sh[1];
        for (int64_t m = 0; m < M; ++m) rank[m] = 0;
        for (int64_t x = 0; x < S; ++x) {
          const int32_t m = modality[b * S + x];
          const int64_t rk = rank[m]++;
          cls[x] = 2 * m + !(st[m] > 0 && rk % st[m] == ph[m]);
        }
        const int32_t *off = class_offsets + bh * (NC + 1);
        const int32_t *qp = q_perm + bh * S;
        if (off[0] != 0 || off[NC] != S) die("boundary: class_offsets[%lld] spans [%d, %d)", (long long)bh, off[0], off[NC]);
        for (int64_t c = 0; c < NC; ++c) {
          if (off[c + 1] < off[c]) die("boundary: class_offsets[%lld] decreases at %lld", (long long)bh, (long long)c);
          for (int32_t s = off[c]; s < off[c + 1]; ++s)
            if (qp[s] < 0 || qp[s] >= S || cls[qp[s]] != c || (s > off[c] && qp[s] <= qp[s - 1]))
              die("boundary: q_perm[%lld][%d] = %d is not the next position of class %lld",
                  (long long)bh, s, qp[s], (long long)c);
        }
        if (memcmp(qp, k_perm + bh * S, (size_t)S * sizeof(int32_t)) != 0)
          die("boundary: k_perm differs from q_perm at (b, h) = %lld", (long long)bh);
        for (int64_t qb = 0; qb < nqb; ++qb) {
          const int64_t cell = bh * nqb + qb;
          const int32_t *rg = kv_ranges + cell * R * 2;
          const int32_t n = kv_range_count[cell];
          if (n < 0 || n > R) die("boundary: block %lld has %d ranges, capacity %lld", (long long)cell, n, (long long)R);
          for (int32_t i = 0; i < n; ++i)
            if (rg[2 * i] >= rg[2 * i + 1] || rg[2 * i] < 0 || rg[2 * i + 1] > S ||
                (i > 0 && rg[2 * i] <= rg[2 * i - 1]))
              die("boundary: block %lld range %d = [%d, %d) is empty, out of [0, %lld) or not "
                  "separated", (long long)cell, i, rg[2 * i], rg[2 * i + 1], (long long)S);
          const int32_t nc = kv_column_count[cell];
          if (nc < 0 || nc > C) die("boundary: block %lld has %d columns, capacity %lld", (long long)cell, nc, (long long)C);
          for (int32_t i = 0; i < nc; ++i) {
            const int32_t c = kv_columns[cell * C + i];
            if (c < 0 || c >= S || (i > 0 && c <= kv_columns[cell * C + i - 1]))
              die("boundary: block %lld column %d = %d out of range or not increasing", (long long)cell, i, c);
            for (int32_t j = 0; j < n; ++j)
              if (c >= rg[2 * j] && c < rg[2 * j + 1])
                die("boundary: block %lld column %d lies in range %d", (long long)cell, c, j);
          }
        }
      }
    free(cls);
    mmi_sparse_index index;
    memset(&index, 0, sizeof index);
    index.block_q = p.block_q;
    index.num_q_blocks = nqb;
    index.max_ranges = R;
    index.max_columns = C;
    index.kv_ranges = kv_ranges;
    index.kv_ranges_stride_h = nqb * R * 2;
    index.kv_ranges_stride_b = H * index.kv_ranges_stride_h;
    index.kv_range_count = kv_range_count;
    index.kv_range_count_stride_h = nqb;
    index.kv_range_count_stride_b = H * nqb;
    index.kv_columns = kv_columns;
    index.kv_columns_stride_h = nqb * C;
    index.kv_columns_stride_b = H * nqb * C;
    index.kv_column_count = kv_column_count;
    index.kv_column_count_stride_h = nqb;
    index.kv_column_count_stride_b = H * nqb;
    index.q_perm = q_perm;
    index.q_perm_stride_h = S;
    index.q_perm_stride_b = H * S;
    index.k_perm = k_perm;
    index.k_perm_stride_h = S;
    index.k_perm_stride_b = H * S;
    mmi_attention_problem problem;
    tensors t;
    make_builder_problem(&problem, &t, B, H, flags.single_kv_head ? 1 : H, S, S, 1, &index,
                         flags.with_lse);
    check_and_forward("boundary", &problem, &t, 1, 1);
    tensors_free(&t);
  }
  free(modality);
  free(grid_stride);
  free(grid_phase);
  free(pattern);
  free(vertical);
  free(slash);
  free(q_perm);
  free(k_perm);
  free(kv_ranges);
  free(kv_range_count);
  free(kv_columns);
  free(kv_column_count);
  free(class_offsets);
}

/* ------------------------------------------------------------------------------------------ */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  byte_reader reader = {data, size, 0};
  const uint8_t target = take_u8(&reader) % 6;
  const common_flags flags = take_flags(&reader);
  switch (target) {
    case 0: fuzz_a_shape(&reader, flags); break;
    case 1: fuzz_vertical_slash(&reader, flags); break;
    case 2: fuzz_grid(&reader, flags); break;
    case 3: fuzz_modality_permutation(&reader, flags); break;
    case 5: fuzz_boundary(&reader, flags); break;
    default: fuzz_checker_raw(&reader, flags); break;
  }
  return 0;
}
