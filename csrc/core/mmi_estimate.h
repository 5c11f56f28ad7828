/* Online estimation of sparse structure from the last queries' attention.
 *
 * For the L queries ending at `query_end` (absolute positions a = query_end - L + r + (Sk - Sq)),
 * p[r, j] = softmax_j(scale * q_r . k_j) over causal keys j <= a; then
 *   vertical_score[b, h, j] = sum_r p[r, j]              (column mass: vertical lines, grid lines)
 *   slash_score[b, h, d]    = sum_r p[r, a_r - d]         (diagonal mass, d = a_r - j >= 0)
 * Nothing of size L x Sk is stored: each query row is reduced as soon as it is computed.
 *
 * Vertical scores only: with slash_score == NULL no diagonal sum is formed (a grid's stride
 * detection needs only the column mass); vertical_score is computed as with slash_score (the CPU
 * gives the same bits, the CUDA variant runs the same column-sum code). */
#ifndef MMI_ESTIMATE_H
#define MMI_ESTIMATE_H

#include <stdint.h>

#include "mmi_attention.h"
#include "mmi_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mmi_estimate_problem {
  mmi_dtype dtype;
  int64_t batch, q_heads, kv_heads, seq_q, seq_k, head_dim;
  const void *q; int64_t q_stride_b, q_stride_h, q_stride_s; /* [B, Hq, Sq, D] */
  const void *k; int64_t k_stride_b, k_stride_h, k_stride_s; /* [B, Hkv, Sk, D] */
  int64_t last;      /* L >= 1, <= query_end */
  int64_t query_end; /* in [1, Sq] */
  float scale;
  float *vertical_score; /* [B, Hq, Sk] contiguous, overwritten */
  float *slash_score;    /* [B, Hq, Sk] contiguous, overwritten; NULL: vertical scores only */
} mmi_estimate_problem;

/* Size and parameter checks shared by every backend (no pointer is read or required). */
int mmi_estimate_check(const mmi_estimate_problem *problem, mmi_error *err);

/* CPU implementation, OpenMP over (batch, head); O(num_threads * Sk) scratch. q, k and
 * vertical_score must be non-NULL; slash_score may be NULL (vertical scores only). */
int mmi_estimate_vertical_slash_scores_cpu(const mmi_estimate_problem *problem, int num_threads,
                                           mmi_error *err);

#ifdef __cplusplus
}
#endif

#endif /* MMI_ESTIMATE_H */
