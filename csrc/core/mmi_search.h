/* Candidate scoring for the offline pattern search (mminference/search).
 *
 * The search keeps, per layer, the exact causal attention distributions of R sampled query rows
 * (its pooled statistics: R x S per head, never S x S) and scores every candidate pattern by
 * compiling it to a real mmi_sparse_index (mmi_sparse_index.h) and measuring, per head:
 *
 *   kept mass    kept_mass[h, r, m] = sum of probs[h, r, j] over the key positions j that the index
 *                gives the query block holding row r's position i = row_pos[r], with j <= i and
 *                modality[j] == m. Summed over m it is the row's recall of the candidate.
 *   kept output  (optional) kept_out[h, r, :] = sum over the same keys of
 *                probs[h, r, j] * value[h / G, j, :], G = H / Hkv. kept_out / sum_m kept_mass is the
 *                candidate's sparse attention output for row r; the dense output is the sum over
 *                every j, so the caller can measure the output error against dense.
 *   kernel work  block_tiles[h, qb] = sum over the block's ranges of ceil((end - start) / block_k)
 *                + ceil(column count / block_k): the key tiles the block-sparse kernel visits for
 *                query block qb (its cost model: time ~ a * tiles + b * query blocks).
 *
 * Prefill only: Sq = Sk = S, causality j <= i judged on original positions as in the kernel. The
 * query block of position i is q_inv(i) / block_q, q_inv the inverse of q_perm (identity without
 * it); key slots map to positions through k_perm. The index's batch dimension is not used: batch
 * element 0 is scored (its batch strides are ignored). Head strides may be 0 (broadcast).
 *
 * Shapes (contiguous unless said otherwise; H heads, R >= 0 rows, M modalities, D head dim):
 *   probs      float32 [H, R, S]   attention probabilities of each sampled row (any values;
 *                                  keys j > row_pos[r] are never read)
 *   row_pos    int32   [R]         query positions in [0, S)
 *   modality   int32   [S]         modality ids in [0, M)
 *   value      float32 [Hkv, S, D] or NULL (then D may be 0 and kept_out must be NULL)
 *   kept_mass  float32 [H, R, M]   output (R = 0: may be NULL)
 *   kept_out   float32 [H, R, D]   output or NULL
 *   block_tiles int32  [H, NQB]    output, NQB = ceil(S / block_q)
 * Accumulation is in double on the CPU and float32 on the GPU, in a fixed order (deterministic). */
#ifndef MMI_SEARCH_H
#define MMI_SEARCH_H

#include <stdint.h>

#include "mmi_sparse_index.h"
#include "mmi_status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { MMI_SEARCH_MAX_MODALITIES = 8 };

typedef struct mmi_search_problem {
  int64_t heads;          /* H >= 1 */
  int64_t kv_heads;       /* Hkv >= 1, divides H (only used with value) */
  int64_t rows;           /* R >= 0 */
  int64_t seq;            /* S in [1, 2^31) */
  int64_t num_modalities; /* M in [1, MMI_SEARCH_MAX_MODALITIES] */
  int64_t block_k;        /* key tile width of the kernel, >= 1 (64 on the GPU) */
  int64_t head_dim;       /* D >= 1 with value, else ignored */

  const float *probs;      /* [H, R, S] */
  const int32_t *row_pos;  /* [R] */
  const int32_t *modality; /* [S] */
  const float *value;      /* [Hkv, S, D] or NULL */
  mmi_sparse_index index;  /* num_q_blocks == ceil(S / block_q) */

  float *kept_mass;     /* [H, R, M] */
  float *kept_out;      /* [H, R, D] or NULL; non-NULL exactly when value is non-NULL */
  int32_t *block_tiles; /* [H, NQB] */
} mmi_search_problem;

/* Sizes, capacities and pointers; reads no tensor or index data (shared by every backend). */
int mmi_search_check(const mmi_search_problem *problem, mmi_error *err);

/* mmi_search_check, then every input value: row_pos and modality in range; per block counts within
 * capacity, ranges inside [0, S] sorted and disjoint, columns strictly increasing and outside the
 * ranges (so no key is counted twice); q_perm and k_perm permutations. Host memory only;
 * O(S) scratch. */
int mmi_search_check_values(const mmi_search_problem *problem, mmi_error *err);

/* CPU scoring: mmi_search_check_values, then the outputs above. OpenMP over heads
 * (num_threads <= 0: the runtime default); O(num_threads * (S + D)) scratch. */
int mmi_search_score_cpu(const mmi_search_problem *problem, int num_threads, mmi_error *err);

#ifdef __cplusplus
}
#endif

#endif /* MMI_SEARCH_H */
