/* Modality-boundary index builder: the modality-aware part of the method. Compiles Q-boundary and
 * 2D-boundary patterns (and no-boundary ones) into the one sparse-index representation
 * (mmi_sparse_index.h) through a *modality-class permutation*.
 *
 * Notation: B batch, H query heads, S = Sq = Sk sequence length (causal prefill without a cache
 * offset), M = num_modalities in [1, MMI_BOUNDARY_MAX_MODALITIES], BQ = block_q, NQB = ceil(S / BQ).
 *
 * Token classes (per batch element b and head h)
 *   modality[b, p] in [0, M) is the modality of position p (0 text, 1 image, 2 video by convention).
 *   rank(p) = number of positions p' < p with modality[b, p'] == modality[b, p]. Ranks count over
 *   all segments of a modality, so a video split by timestamp text keeps its stride.
 *   Grid of modality m: stride = grid_stride[b, h, m], phase = grid_phase[b, h, m]; stride 0 means
 *   "no grid" (phase must then be 0), otherwise stride >= 1 and 0 <= phase < stride.
 *   Position p of modality m is a *line* when m has a grid and rank(p) % stride == phase.
 *   class(p) = 2 m + (p is a line ? 0 : 1): 2M classes; the line class of a grid-less modality is
 *   empty.
 *
 * Permutation (identical for queries and keys)
 *   q_perm[b, h, :] = k_perm[b, h, :] = the positions ordered by (class, position). Class c occupies
 *   slots [off[c], off[c + 1]) with off = class_offsets[b, h, :] (off[0] = 0, off[2M] = S).
 *   cnt_c(x) = number of positions < x of class c (x clipped to [0, S]), so a position interval
 *   [lo, hi) restricted to class c is exactly the slot range
 *     slots_c(lo, hi) = [off[c] + cnt_c(lo), off[c] + cnt_c(hi)).
 *   With r = number of modality-m positions < x (a per-batch prefix count) and
 *   lines(r) = r > phase ? (r - phase - 1) / stride + 1 : 0 (0 without a grid):
 *   cnt_{2m}(x) = lines(r), cnt_{2m+1}(x) = r - lines(r).
 *
 * Patterns: pair_pattern[b, h, mq, mk, 0:4] = (kind, a, b, c) is the key set of modality mk that
 * query rows of modality mq attend, on top of causality (key position j <= query position i):
 *   MMI_PAIR_NONE            (0) no key of mk.
 *   MMI_PAIR_DENSE           (1) every causal key of mk.
 *   MMI_PAIR_A_SHAPE         (2) a = sink >= 0, b = local >= 0: keys of mk at positions < sink and in
 *                                the window [i - local + 1, i] (local 0: no window). c unused.
 *   MMI_PAIR_LINES           (3) a = use_hlines, b = use_vlines (each 0 or 1), c = local >= 0: the
 *                                grid of mk. Vertical lines: every line key of mk. Horizontal lines:
 *                                query rows that are lines of mq attend every causal key of mk.
 *                                Plus the local window of c keys (c = 0: none).
 *   MMI_PAIR_VERTICAL_SLASH  (4) keys of mk among the key positions vertical[b, h, mq, :] and on the
 *                                diagonals slash[b, h, mq, :] (distance d = i - j). a, b, c unused.
 *   Unused parameters are ignored. Each vertical / slash row lists valid entries in [0, S), strictly
 *   increasing, followed by -1 padding up to NV / NS (NV or NS may be 0).
 *
 * Boundary kinds
 *   - 2D-boundary: a different pattern per (query modality, key modality) pair.
 *   - Q-boundary: the same pattern for every key modality mk of a query modality mq, so each query
 *     modality has its own pattern over all keys. Keys are permuted too (simplification): since
 *     patterns and causality are judged on original positions, the union over mk of the restricted
 *     key sets is the unrestricted pattern; the permutation only changes the order in which the
 *     kernel walks keys (and block alignment, which is per class).
 *   - No-boundary: the builders of mmi_index_builders.h (no query permutation) - or any table here.
 *
 * Block rule. Query block qb holds slots [qb BQ, min((qb + 1) BQ, S)); a block may straddle classes
 * and its key set is the union over the classes of its rows. For each query class cq with rows in
 * the block: mq = cq / 2, rows are lines iff cq is even, pmin / pmax = smallest / largest original
 * position among the block's rows of class cq (the first / last such slot), e = pmax + 1 (the
 * causal limit of those rows). For every key modality mk, with K = both classes {2mk, 2mk + 1} of
 * mk and Lk = its line class {2mk}, pair_pattern[b, h, mq, mk] contributes position intervals:
 *   DENSE            [0, e) on K
 *   A_SHAPE          [0, min(sink, e)) on K;  local >= 1: [pmin - local + 1, e) on K
 *   LINES            use_vlines: [0, e) on Lk;  use_hlines and cq even: [0, e) on K;
 *                    local >= 1: [pmin - local + 1, e) on K
 *   VERTICAL_SLASH   each valid slash d: [pmin - d, pmax - d + 1) on K
 * Each interval is clipped to [0, e), mapped to [s, t) = slots_c(lo, hi) for each class c it
 * applies to, dropped when empty, and aligned outward to block_k *within its class* and its causal
 * slot limit lim_c = off[c] + cnt_c(e) (the class's keys at positions < e):
 *   [max(floor(s / block_k) block_k, off[c]), min(ceil(t / block_k) block_k, lim_c))
 * so alignment never pulls in keys of another class, nor keys that are causally dead for every
 * row that asked for them (the clip of the A-shape and vertical-slash builders: with M = 1, no
 * grid and an A_SHAPE or VERTICAL_SLASH table, this builder reproduces their indexes). All ranges
 * of the block (every query class, every mk) are then sorted and merged when they overlap or touch
 * (a merged range may span several adjacent classes). If more than max_ranges remain, range
 * max_ranges - 1 is extended to the end of the last one (a superset of the pattern, never a subset;
 * the rule of the vertical-slash builder).
 * Note: a class's rows in one block may be far apart in positions (e.g. text before and after a
 * video), and [pmin - local + 1, e) then covers the keys in between: a superset, as in the grid
 * builder.
 * Columns: for each query class cq of the block and each valid vertical v of vertical[b, h, mq, :]
 * with v <= pmax whose key modality mk = modality[b, v] has pair (mq, mk) of kind VERTICAL_SLASH,
 * the key slot of v (off[class(v)] + cnt_class(v)(v)) is a candidate. Candidates are deduplicated,
 * those inside a (capped) range are dropped, and the rest are kept in increasing slot order up to
 * max_columns: beyond it the highest slots are dropped. Unlike ranges this is a subset of the
 * pattern (no superset form exists without a range); the Python wrapper's default capacity
 * min(S, min(M, BQ) NV) never drops.
 *
 * Outputs (caller-owned, contiguous, entries past the counts are written as 0):
 *   q_perm, k_perm   [B, H, S]            (k_perm may be NULL: it always equals q_perm)
 *   kv_ranges        [B, H, NQB, max_ranges, 2],   kv_range_count  [B, H, NQB]
 *   kv_columns       [B, H, NQB, max_columns],     kv_column_count [B, H, NQB]
 *                    (kv_columns may be NULL when max_columns == 0)
 *   class_offsets    [B, H, 2M + 1]
 * Inputs: modality [B, S] contiguous; grid_stride, grid_phase [B|1, H|1, M]; pair_pattern
 * [B|1, H|1, M, M, 4]; vertical [B|1, H|1, M, NV]; slash [B|1, H|1, M, NS]. Each is addressed
 * through its own (batch, head) strides in elements (0 broadcasts), trailing dims contiguous;
 * vertical / slash may be NULL when NV / NS is 0.
 *
 * Cost: O(B M S) int32 scratch (per-batch modality prefix counts, shared by heads) plus per-thread
 * block scratch of O(min(2M, BQ) (M max(5, 2 NS) + NV)) entries; no O(S^2) memory. Work: O(B M S)
 * for the prefix counts, O(S) per (b, h) for the permutation, O(k log k) per block for its k
 * candidate ranges and columns (k <= cq (M max(5, 2 NS) + NV), cq = the number of classes the block
 * straddles, usually 1). OpenMP over (b, h) (num_threads <= 0: the OpenMP default). */
#ifndef MMI_BOUNDARY_INDEX_H
#define MMI_BOUNDARY_INDEX_H

#include <stdint.h>

#include "mmi_status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { MMI_BOUNDARY_MAX_MODALITIES = 8, MMI_PAIR_PATTERN_FIELDS = 4 };

typedef enum mmi_pair_kind {
  MMI_PAIR_NONE = 0,
  MMI_PAIR_DENSE = 1,
  MMI_PAIR_A_SHAPE = 2,
  MMI_PAIR_LINES = 3,
  MMI_PAIR_VERTICAL_SLASH = 4
} mmi_pair_kind;

typedef struct mmi_boundary_problem {
  int64_t batch;          /* B >= 1 */
  int64_t heads;          /* H >= 1 */
  int64_t seq;            /* S in [1, 2^31) */
  int64_t num_modalities; /* M in [1, MMI_BOUNDARY_MAX_MODALITIES] */
  int64_t block_q;        /* [1, 4096] */
  int64_t block_k;        /* [1, 4096] */
  int64_t max_ranges;     /* R in [1, 2^31); ignored in count mode */
  int64_t max_columns;    /* C in [0, 2^31); ignored in count mode */

  const int32_t *modality; /* [B, S] contiguous */
  const int32_t *grid_stride; /* [B|1, H|1, M] */
  int64_t grid_stride_stride_b, grid_stride_stride_h;
  const int32_t *grid_phase; /* [B|1, H|1, M] */
  int64_t grid_phase_stride_b, grid_phase_stride_h;
  const int32_t *pair_pattern; /* [B|1, H|1, M, M, 4] */
  int64_t pair_pattern_stride_b, pair_pattern_stride_h;
  const int32_t *vertical; /* [B|1, H|1, M, NV]; NULL allowed when NV == 0 */
  int64_t num_vertical;    /* NV >= 0 */
  int64_t vertical_stride_b, vertical_stride_h;
  const int32_t *slash; /* [B|1, H|1, M, NS]; NULL allowed when NS == 0 */
  int64_t num_slash;    /* NS >= 0 */
  int64_t slash_stride_b, slash_stride_h;
} mmi_boundary_problem;

/* Count mode: with kv_ranges == NULL and kv_columns == NULL, kv_range_count / kv_column_count
 * receive every block's uncapped range and column counts (the smallest capacities that hold the
 * index exactly) and no range or column is written; the permutations and class offsets are
 * written as usual. A caller sizes the real call with the maxima. */
typedef struct mmi_boundary_output {
  int32_t *q_perm;          /* [B, H, S] */
  int32_t *k_perm;          /* [B, H, S] or NULL */
  int32_t *kv_ranges;       /* [B, H, NQB, R, 2] */
  int32_t *kv_range_count;  /* [B, H, NQB] */
  int32_t *kv_columns;      /* [B, H, NQB, C]; NULL allowed when C == 0 */
  int32_t *kv_column_count; /* [B, H, NQB] */
  int32_t *class_offsets;   /* [B, H, 2M + 1] */
} mmi_boundary_output;

/* Validates every input (errors name the argument and the offending entry), then builds the index
 * described above. On error, the outputs are unspecified. */
int mmi_build_boundary_index(const mmi_boundary_problem *problem, const mmi_boundary_output *out,
                             int num_threads, mmi_error *err);

#ifdef __cplusplus
}
#endif

#endif /* MMI_BOUNDARY_INDEX_H */
