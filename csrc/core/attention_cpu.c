/* CPU reference / fallback for the block-sparse forward: one query block at a time, keys walked in
 * chunks through the index, online softmax in float32. Correctness first; OpenMP for throughput. */
#include <math.h>
#include <stdlib.h>

#include "dtype_convert.h"
#include "mmi_attention.h"
#include "mmi_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

enum { KEY_CHUNK = 64 };

/* Per-thread scratch, sized for one query block and one key chunk. */
typedef struct block_scratch {
  float *q;      /* [BQ, D], already multiplied by the softmax scale */
  float *acc;    /* [BQ, D] unnormalised output */
  float *row_max; /* [BQ] */
  float *row_sum; /* [BQ] */
  int64_t *q_pos; /* [BQ] original query positions */
  float *k;       /* [KEY_CHUNK, D] */
  float *v;       /* [KEY_CHUNK, D] */
  int64_t *k_pos; /* [KEY_CHUNK] original key positions */
  float *scores;  /* [KEY_CHUNK] one row's scores */
} block_scratch;

static int scratch_alloc(block_scratch *s, int64_t block_q, int64_t dim) {
  s->q = (float *)malloc(sizeof(float) * (size_t)(block_q * dim));
  s->acc = (float *)malloc(sizeof(float) * (size_t)(block_q * dim));
  s->row_max = (float *)malloc(sizeof(float) * (size_t)block_q);
  s->row_sum = (float *)malloc(sizeof(float) * (size_t)block_q);
  s->q_pos = (int64_t *)malloc(sizeof(int64_t) * (size_t)block_q);
  s->k = (float *)malloc(sizeof(float) * (size_t)(KEY_CHUNK * dim));
  s->v = (float *)malloc(sizeof(float) * (size_t)(KEY_CHUNK * dim));
  s->k_pos = (int64_t *)malloc(sizeof(int64_t) * KEY_CHUNK);
  s->scores = (float *)malloc(sizeof(float) * KEY_CHUNK);
  return s->q && s->acc && s->row_max && s->row_sum && s->q_pos && s->k && s->v && s->k_pos &&
         s->scores;
}

static void scratch_free(block_scratch *s) {
  free(s->q);
  free(s->acc);
  free(s->row_max);
  free(s->row_sum);
  free(s->q_pos);
  free(s->k);
  free(s->v);
  free(s->k_pos);
  free(s->scores);
}

static void load_row(const void *base, int64_t offset, mmi_dtype dtype, int64_t dim, float scale,
                     float *dst) {
  if (dtype == MMI_DTYPE_FLOAT32) {
    const float *src = (const float *)base + offset;
    for (int64_t d = 0; d < dim; ++d) dst[d] = src[d] * scale;
  } else if (dtype == MMI_DTYPE_BFLOAT16) {
    const uint16_t *src = (const uint16_t *)base + offset;
    for (int64_t d = 0; d < dim; ++d) dst[d] = mmi__bf16_to_float(src[d]) * scale;
  } else {
    const uint16_t *src = (const uint16_t *)base + offset;
    for (int64_t d = 0; d < dim; ++d) dst[d] = mmi__f16_to_float(src[d]) * scale;
  }
}

static void store_row(void *base, int64_t offset, mmi_dtype dtype, int64_t dim, const float *src,
                      float scale) {
  if (dtype == MMI_DTYPE_FLOAT32) {
    float *dst = (float *)base + offset;
    for (int64_t d = 0; d < dim; ++d) dst[d] = src[d] * scale;
  } else if (dtype == MMI_DTYPE_BFLOAT16) {
    uint16_t *dst = (uint16_t *)base + offset;
    for (int64_t d = 0; d < dim; ++d) dst[d] = mmi__float_to_bf16(src[d] * scale);
  } else {
    uint16_t *dst = (uint16_t *)base + offset;
    for (int64_t d = 0; d < dim; ++d) dst[d] = mmi__float_to_f16(src[d] * scale);
  }
}

/* Dot product with 8 independent partial sums; every supported head dim is a multiple of 16. */
static float dot(const float *a, const float *b, int64_t dim) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t d = 0; d < dim; d += 8)
    for (int lane = 0; lane < 8; ++lane) partial[lane] += a[d + lane] * b[d + lane];
  return ((partial[0] + partial[1]) + (partial[2] + partial[3])) +
         ((partial[4] + partial[5]) + (partial[6] + partial[7]));
}

/* Everything one task (b, h, qb) needs to address its tensors. */
typedef struct block_task {
  const mmi_attention_problem *p;
  int64_t b, h, kv_h;
  const int32_t *k_perm; /* NULL: identity */
  int64_t rows;
} block_task;

/* AVX2+FMA clone where the CPU has it (chosen once at load time), baseline x86-64 otherwise. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(MMI_NO_TARGET_CLONES)
#define MMI__VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MMI__VECTOR_CLONES
#endif

/* Folds keys at slots `slots[0:n]` (or the contiguous run first..first+n when slots is NULL) into
 * the running softmax state of the block. */
MMI__VECTOR_CLONES static void attend_chunk(const block_task *t, block_scratch *s, const int32_t *slots,
                         int64_t first, int64_t n) {
  const mmi_attention_problem *p = t->p;
  const int64_t dim = p->head_dim;
  const int64_t offset = p->seq_k - p->seq_q;
  for (int64_t c = 0; c < n; ++c) {
    const int64_t slot = slots != NULL ? slots[c] : first + c;
    const int64_t pos = t->k_perm != NULL ? t->k_perm[slot] : slot;
    s->k_pos[c] = pos;
    load_row(p->k, t->b * p->k_stride_b + t->kv_h * p->k_stride_h + pos * p->k_stride_s, p->dtype,
             dim, 1.0f, s->k + c * dim);
    load_row(p->v, t->b * p->v_stride_b + t->kv_h * p->v_stride_h + pos * p->v_stride_s, p->dtype,
             dim, 1.0f, s->v + c * dim);
  }
  for (int64_t r = 0; r < t->rows; ++r) {
    const int64_t causal_limit = s->q_pos[r] + offset;
    float chunk_max = -INFINITY;
    for (int64_t c = 0; c < n; ++c) {
      float score = -INFINITY;
      if (!p->causal || s->k_pos[c] <= causal_limit) score = dot(s->q + r * dim, s->k + c * dim, dim);
      s->scores[c] = score;
      chunk_max = score > chunk_max ? score : chunk_max;
    }
    if (chunk_max == -INFINITY) continue; /* nothing allowed in this chunk for this row */
    const float new_max = chunk_max > s->row_max[r] ? chunk_max : s->row_max[r];
    const float correction = expf(s->row_max[r] - new_max); /* exp(-inf) = 0 on the first hit */
    float *acc = s->acc + r * dim;
    for (int64_t d = 0; d < dim; ++d) acc[d] *= correction;
    float sum = s->row_sum[r] * correction;
    for (int64_t c = 0; c < n; ++c) {
      if (s->scores[c] == -INFINITY) continue;
      const float weight = expf(s->scores[c] - new_max);
      sum += weight;
      const float *v = s->v + c * dim;
      for (int64_t d = 0; d < dim; ++d) acc[d] += weight * v[d];
    }
    s->row_sum[r] = sum;
    s->row_max[r] = new_max;
  }
}

static void run_block(const mmi_attention_problem *p, int64_t task, block_scratch *s) {
  const mmi_sparse_index *ix = &p->index;
  const int64_t nqb = ix->num_q_blocks;
  const int64_t qb = task % nqb;
  const int64_t h = (task / nqb) % p->q_heads;
  const int64_t b = task / (nqb * p->q_heads);
  const int64_t dim = p->head_dim;

  block_task t;
  t.p = p;
  t.b = b;
  t.h = h;
  t.kv_h = h / (p->q_heads / p->kv_heads);
  t.k_perm = ix->k_perm != NULL ? ix->k_perm + b * ix->k_perm_stride_b + h * ix->k_perm_stride_h
                                : NULL;
  const int64_t first_slot = qb * ix->block_q;
  t.rows = mmi__min64(ix->block_q, p->seq_q - first_slot);

  const int32_t *q_perm =
      ix->q_perm != NULL ? ix->q_perm + b * ix->q_perm_stride_b + h * ix->q_perm_stride_h : NULL;
  for (int64_t r = 0; r < t.rows; ++r) {
    const int64_t pos = q_perm != NULL ? q_perm[first_slot + r] : first_slot + r;
    s->q_pos[r] = pos;
    load_row(p->q, b * p->q_stride_b + h * p->q_stride_h + pos * p->q_stride_s, p->dtype, dim,
             p->scale, s->q + r * dim);
    s->row_max[r] = -INFINITY;
    s->row_sum[r] = 0.0f;
    for (int64_t d = 0; d < dim; ++d) s->acc[r * dim + d] = 0.0f;
  }

  const int32_t n_ranges =
      ix->kv_range_count[b * ix->kv_range_count_stride_b + h * ix->kv_range_count_stride_h + qb];
  const int32_t *ranges = ix->max_ranges > 0 ? ix->kv_ranges + b * ix->kv_ranges_stride_b +
                                                   h * ix->kv_ranges_stride_h + qb * ix->max_ranges * 2
                                             : NULL; /* n_ranges is 0 then */
  for (int32_t r = 0; r < n_ranges; ++r)
    for (int64_t start = ranges[2 * r]; start < ranges[2 * r + 1]; start += KEY_CHUNK)
      attend_chunk(&t, s, NULL, start, mmi__min64(KEY_CHUNK, ranges[2 * r + 1] - start));

  if (ix->max_columns > 0) {
    const int32_t n_columns = ix->kv_column_count[b * ix->kv_column_count_stride_b +
                                                  h * ix->kv_column_count_stride_h + qb];
    const int32_t *columns = ix->kv_columns + b * ix->kv_columns_stride_b +
                             h * ix->kv_columns_stride_h + qb * ix->max_columns;
    for (int64_t c = 0; c < n_columns; c += KEY_CHUNK)
      attend_chunk(&t, s, columns + c, 0, mmi__min64(KEY_CHUNK, n_columns - c));
  }

  for (int64_t r = 0; r < t.rows; ++r) {
    const int64_t pos = s->q_pos[r];
    const float sum = s->row_sum[r];
    /* A row with no allowed key is defined as zeros with lse = -inf. */
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    store_row(p->out, b * p->out_stride_b + h * p->out_stride_h + pos * p->out_stride_s, p->dtype,
              dim, s->acc + r * dim, inv);
    if (p->lse != NULL)
      p->lse[(b * p->q_heads + h) * p->seq_q + pos] =
          sum > 0.0f ? s->row_max[r] + logf(sum) : -INFINITY;
  }
}

int mmi_sparse_attention_forward_cpu(const mmi_attention_problem *p, int num_threads,
                                     mmi_error *err) {
  int status = mmi_sparse_attention_check(p, err);
  if (status != MMI_OK) return status;

  const int64_t num_tasks = p->batch * p->q_heads * p->index.num_q_blocks;
  int alloc_failed = 0;
#ifdef _OPENMP
  if (num_threads <= 0) num_threads = omp_get_max_threads();
#pragma omp parallel num_threads(num_threads) reduction(| : alloc_failed)
#else
  (void)num_threads;
#endif
  {
    block_scratch s;
    if (!scratch_alloc(&s, p->index.block_q, p->head_dim)) {
      alloc_failed = 1;
    }
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
    for (int64_t task = 0; task < num_tasks; ++task) {
      if (!alloc_failed) run_block(p, task, &s);
    }
    scratch_free(&s);
  }
  if (alloc_failed)
    return mmi_error_set(err, MMI_ERR_OUT_OF_MEMORY,
                         "cannot allocate CPU scratch for block_q %lld, head_dim %lld",
                         (long long)p->index.block_q, (long long)p->head_dim);
  return MMI_OK;
}
