/* Grid stride / phase detection from per-key column mass (the `vertical_score` of mmi_estimate.h).
 *
 * Notation: x = one (b, h) row of vertical_score [B, H, Sk]; the span is [span_start, span_end),
 * n = span_end - span_start, and x_s[i] = x[span_start + i]. median() is the LOWER median: the
 * element of 0-based rank (m - 1) / 2 among m values (what torch.median returns).
 *
 * Detection (mmi_detect_grid), per (b, h):
 *   every candidate s with 1 <= s <= n / 2 (>= 2 lines; larger candidates are ignored):
 *     lines = n / s, used = min(lines, max_lines), first = (lines - used) * s
 *     window = x_s[first : lines * s]  (the last `used` whole periods: phases stay span-relative)
 *     med[p] = median(window[l * s + p] for l < used),  p in [0, s)
 *     best = max_p med[p], phase_s = the first p reaching it
 *     lift_s = best / max(mean(window), 1e-30)                    (float32 arithmetic)
 *   chosen stride = the smallest candidate with lift_s >= tolerance * max over candidates of lift_s
 *   (float32 product); when none qualifies (every lift_s < 0, possible only with negative scores),
 *   the first usable candidate in list order; chosen phase = its phase_s.
 * Reported lift: the grid lift of the chosen (stride, phase) over the WHOLE span (mmi_grid_lift),
 * not lift_s: that is the statistic the layout-aware Auto rule thresholds.
 *
 * Grid lift (mmi_grid_lift), per (b, h) with its own stride s and phase p:
 *   lift = median(x_s[p + l * s] for l < n / s) / max(sum(x_s) / n, 1e-30)
 *   (all n / s lines of the span, no max_lines window; the mean is over all n keys.)
 *
 * Sums are accumulated in double and rounded to float before the division, so lifts agree with a
 * float32 PyTorch evaluation to about 1e-7 relative; medians and maxima are exact selections.
 * Scores are expected to be finite (NaN gives unspecified strides and lifts).
 *
 * The CUDA versions (csrc/cuda/mmi_cuda_index.h) share the checks below and give the same outputs. */
#ifndef MMI_GRID_DETECT_H
#define MMI_GRID_DETECT_H

#include <stdint.h>

#include "mmi_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Scores of every (b, h) and the span searched. */
typedef struct mmi_grid_scores {
  int64_t batch, heads, seq_k;         /* B, H >= 1; 1 <= Sk < 2^31 */
  const float *vertical_score;         /* [B, H, Sk], last dim contiguous */
  int64_t score_stride_b, score_stride_h; /* element strides of dims 0 and 1 (>= 0) */
  int64_t span_start, span_end;        /* 0 <= span_start < span_end <= Sk */
} mmi_grid_scores;

/* One detection call. `candidate_strides` always lives in host memory (any order, duplicates
 * allowed; each >= 1; those above n / 2 are skipped). */
typedef struct mmi_grid_detect_problem {
  mmi_grid_scores scores;
  const int32_t *candidate_strides; /* [num_candidates], host memory */
  int64_t num_candidates;           /* >= 1 */
  float tolerance;                  /* in (0, 1] */
  int64_t max_lines;                /* >= 1: periods scored per candidate (the most recent ones) */
} mmi_grid_detect_problem;

/* Checks of mmi_grid_scores (sizes, span, strides; vertical_score is neither read nor required). */
int mmi_grid_scores_check(const mmi_grid_scores *scores, mmi_error *err);

/* Checks shared by every backend: the scores' checks, tolerance, max_lines, and the candidate list
 * (read from host memory): "candidate_strides[i] = v must be >= 1", or "candidate_strides: no
 * candidate stride leaves 2 or more lines in a span of n tokens". */
int mmi_detect_grid_check(const mmi_grid_detect_problem *problem, mmi_error *err);

/* Detection on the CPU, OpenMP over (b, h) (num_threads <= 0: the OpenMP default).
 *   stride, phase [B, H] int32 (phase relative to span_start), lift [B, H] float32: contiguous. */
int mmi_detect_grid(const mmi_grid_detect_problem *problem, int32_t *stride, int32_t *phase,
                    float *lift, int num_threads, mmi_error *err);

/* Grid lift on the CPU for given stride, phase [B, H] int32 contiguous (1 <= stride <= n,
 * 0 <= phase < stride; otherwise "stride[b, h] = v must be in [1, span length n]" or
 * "phase[b, h] = v must be in [0, stride = s)"), into lift [B, H] float32. */
int mmi_grid_lift(const mmi_grid_scores *scores, const int32_t *stride, const int32_t *phase,
                  float *lift, int num_threads, mmi_error *err);

/* The error of mmi_grid_lift for one bad (b, h) entry (bh = b * heads + h), shared with the CUDA
 * check's host-side report; MMI_OK when (stride, phase) is valid for a span of `span` keys. */
int mmi_grid_lift_entry_error(int64_t bh, int64_t heads, int64_t span, int32_t stride,
                              int32_t phase, mmi_error *err);

#ifdef __cplusplus
}
#endif

#endif /* MMI_GRID_DETECT_H */
