/* Block-sparse attention forward over an `mmi_sparse_index` (see mmi_sparse_index.h).
 *
 * The same problem description feeds the CPU reference (here) and the CUDA kernels
 * (csrc/cuda/mmi_cuda.h): raw pointers, sizes and strides in elements, no framework types. */
#ifndef MMI_ATTENTION_H
#define MMI_ATTENTION_H

#include <stdint.h>

#include "mmi_sparse_index.h"
#include "mmi_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum mmi_dtype {
  MMI_DTYPE_FLOAT32 = 0,
  MMI_DTYPE_FLOAT16 = 1,
  MMI_DTYPE_BFLOAT16 = 2,
} mmi_dtype;

/* One attention call. Tensors are [batch, heads, seq, head_dim] with arbitrary batch/head/seq
 * strides (elements) and a contiguous head_dim, which is exactly the layout transformers passes to
 * attention functions, and also covers a (batch, seq, heads, head_dim) buffer seen transposed. */
typedef struct mmi_attention_problem {
  mmi_dtype dtype;  /* q, k, v and out share it; accumulation is always float32 */
  int64_t batch;    /* B  >= 1 */
  int64_t q_heads;  /* Hq >= 1, a multiple of kv_heads (GQA) */
  int64_t kv_heads; /* Hkv >= 1 */
  int64_t seq_q;    /* Sq >= 1 */
  int64_t seq_k;    /* Sk >= 1; with causal, Sk >= Sq */
  int64_t head_dim; /* D, one of mmi_head_dim_supported() */

  const void *q; int64_t q_stride_b, q_stride_h, q_stride_s; /* [B, Hq, Sq, D] */
  const void *k; int64_t k_stride_b, k_stride_h, k_stride_s; /* [B, Hkv, Sk, D] */
  const void *v; int64_t v_stride_b, v_stride_h, v_stride_s; /* [B, Hkv, Sk, D] */
  void *out; int64_t out_stride_b, out_stride_h, out_stride_s; /* [B, Hq, Sq, D] */
  float *lse; /* NULL or [B, Hq, Sq] contiguous: natural-log log-sum-exp of the scaled scores */

  float scale; /* softmax scale, usually 1/sqrt(D) */
  int causal;  /* nonzero: key position j allowed only if j <= i + (Sk - Sq) */
  mmi_sparse_index index;
} mmi_attention_problem;

/* 1 if `head_dim` is supported by the attention kernels (64, 80, 96, 128), else 0. */
int mmi_head_dim_supported(int64_t head_dim);

/* Checks sizes, dtype, head dim, pointers and the index's shape fields; reads no tensor or index
 * data, so it serves device-memory backends too (the CUDA forward calls it first). */
int mmi_sparse_attention_check_shapes(const mmi_attention_problem *problem, mmi_error *err);

/* mmi_sparse_attention_check_shapes, then every index value (ranges in bounds, sorted and disjoint, columns
 * strictly increasing and outside ranges, permutations bijective). Host memory only.
 * O(B * Hq * (NQB * (R + C) + Sq + Sk)) time, O(max(Sq, Sk)) scratch memory. */
int mmi_sparse_attention_check(const mmi_attention_problem *problem, mmi_error *err);

/* CPU forward: checks the problem, then computes it with an online softmax in float32.
 * Parallel over (batch, head, query block) with OpenMP on `num_threads` threads (<= 0: runtime
 * default). Scratch memory is O(num_threads * (BQ + 64) * D), never O(Sq * Sk). */
int mmi_sparse_attention_forward_cpu(const mmi_attention_problem *problem, int num_threads,
                                     mmi_error *err);

#ifdef __cplusplus
}
#endif

#endif /* MMI_ATTENTION_H */
