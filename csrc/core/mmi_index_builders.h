/* Builders that compile each attention pattern into an `mmi_sparse_index` (mmi_sparse_index.h).
 *
 * All builders assume causal prefill with key offset Sk - Sq (Sk >= Sq), write into caller-owned
 * buffers whose shapes are given below, and produce ranges that are sorted, disjoint, aligned
 * outward to `block_k` key slots and clipped to the block's causal limit. A range is never empty.
 * Shared rules, restated by the Python re-derivations in tests/:
 *   align(lo, hi) = [floor(lo / block_k) * block_k, min(ceil(hi / block_k) * block_k, limit))
 *   then ranges are sorted by start and merged when they overlap or touch. */
#ifndef MMI_INDEX_BUILDERS_H
#define MMI_INDEX_BUILDERS_H

#include <stdint.h>

#include "mmi_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of query blocks: ceil(seq_q / block_q). */
int64_t mmi_num_q_blocks(int64_t seq_q, int64_t block_q);

enum { MMI_A_SHAPE_MAX_RANGES = 2, MMI_GRID_MAX_RANGES = 4 };

/* A-shape: every query attends the first `sink` keys and a local window of the `local` keys
 * ending at its own position (sink >= 0, local >= 1). Shared by all heads.
 *   kv_ranges      [NQB, 2, 2]
 *   kv_range_count [NQB] */
int mmi_build_a_shape_index(int64_t seq_q, int64_t seq_k, int64_t block_q, int64_t block_k,
                            int64_t sink, int64_t local, int32_t *kv_ranges,
                            int32_t *kv_range_count, mmi_error *err);

/* Vertical-slash: per (b, h), a strictly increasing list of key positions (vertical lines) and of
 * diagonal distances d = query position + (Sk - Sq) - key position (slash lines, d >= 0).
 * For query block rows [qs, qe) (absolute positions a = qs + off .. qe - 1 + off, off = Sk - Sq), a
 * slash d covers keys [a_lo - d, a_hi - d], aligned outward, clipped to [0, qe + off); overlapping
 * slash ranges merge. If more than `max_ranges` merged ranges remain, range max_ranges - 1 is
 * extended to the end of the last one (a superset of the pattern, never a subset). Verticals
 * v <= a_hi that fall in no range become columns.
 *   vertical  [B, H, NV] in [0, Sk),   slash [B, H, NS] in [0, Sk)
 *   kv_ranges [B, H, NQB, max_ranges, 2], kv_range_count [B, H, NQB]
 *   kv_columns [B, H, NQB, NV],   kv_column_count [B, H, NQB] */
int mmi_build_vertical_slash_index(int64_t batch, int64_t heads, int64_t seq_q, int64_t seq_k,
                                   int64_t block_q, int64_t block_k, const int32_t *vertical,
                                   int64_t num_vertical, const int32_t *slash, int64_t num_slash,
                                   int64_t max_ranges, int32_t *kv_ranges, int32_t *kv_range_count,
                                   int32_t *kv_columns, int32_t *kv_column_count, mmi_error *err);

/* Size and parameter checks of mmi_build_vertical_slash_index, shared with the CUDA builder (no
 * pointer is read; list contents are checked by the builders themselves). */
int mmi_vertical_slash_check_args(int64_t batch, int64_t heads, int64_t seq_q, int64_t seq_k,
                                  int64_t block_q, int64_t block_k, int64_t num_vertical,
                                  int64_t num_slash, int64_t max_ranges, mmi_error *err);

/* Grid parameters shared by all heads; stride and phase come per head. */
typedef struct mmi_grid_options {
  int64_t seq;        /* S = Sq = Sk */
  int64_t block_q;
  int64_t block_k;
  int64_t span_start; /* lines live in [span_start, span_end), e.g. one video segment */
  int64_t span_end;
  int64_t sink;       /* keys [0, sink) always attended (>= 0) */
  int64_t local;      /* local window of `local` keys ending at the query (>= 1) */
  int use_hlines;     /* line queries attend every causal key (horizontal lines) */
  int use_vlines;     /* every query attends every causal line key (vertical lines) */
} mmi_grid_options;

/* Grid: per (b, h), the *lines* are positions p in [span_start, span_end) with
 * (p - span_start) % stride == phase (1 <= stride <= span length, 0 <= phase < stride).
 * Both permutations put the lines first, then every other position, each part ascending, so a
 * strided line becomes a contiguous run of slots. Query block [a, b) in slot space, with original
 * positions spanning [pmin, pmax]:
 *   - with use_hlines and at least one line slot (< n_lines) in the block: all causal keys, i.e.
 *     line slots [0, L(pmax + 1)) and other slots [n + O(0), n + O(pmax + 1))
 *   - otherwise the union of: vertical lines [0, L(pmax + 1)) when use_vlines; sink line slots
 *     [0, L(e)) and other slots [n, n + O(e)) with e = min(sink, pmax + 1); local window
 *     lo = pmin - local + 1:
 *     [L(lo), L(pmax + 1)) and [n + O(lo), n + O(pmax + 1))
 *   where n = number of lines, L(x) = lines < x, O(x) = other positions < x; every range is
 *   aligned outward with limit S, empty ones dropped, then merged.
 *   stride, phase [B, H]
 *   q_perm, k_perm [B, H, S]
 *   kv_ranges [B, H, NQB, 4, 2], kv_range_count [B, H, NQB] */
int mmi_build_grid_index(int64_t batch, int64_t heads, const mmi_grid_options *options,
                         const int32_t *stride, const int32_t *phase, int32_t *q_perm,
                         int32_t *k_perm, int32_t *kv_ranges, int32_t *kv_range_count,
                         mmi_error *err);

/* Checks of mmi_grid_options, shared with the CUDA builder. */
int mmi_grid_check_options(const mmi_grid_options *options, mmi_error *err);

/* Stable grouping of tokens by modality: perm lists the positions of modality 0, then 1, ...,
 * each in ascending order; segment_offsets[b, m] .. segment_offsets[b, m + 1] is modality m's
 * slot range (empty modalities give empty ranges).
 *   modality [B, S] in [0, num_modalities)
 *   perm [B, S], segment_offsets [B, num_modalities + 1] */
int mmi_build_modality_permutation(int64_t batch, int64_t seq, const int32_t *modality,
                                   int64_t num_modalities, int32_t *perm,
                                   int32_t *segment_offsets, mmi_error *err);

#ifdef __cplusplus
}
#endif

#endif /* MMI_INDEX_BUILDERS_H */
