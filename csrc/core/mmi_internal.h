/* Private helpers of the C core (prefix mmi__). Not installed, not part of the ABI. */
#ifndef MMI_INTERNAL_H
#define MMI_INTERNAL_H

#include <stdint.h>

#include "mmi_status.h"

/* A half-open key-slot interval. */
typedef struct mmi__range {
  int64_t start;
  int64_t end;
} mmi__range;

static inline int64_t mmi__min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t mmi__max64(int64_t a, int64_t b) { return a > b ? a : b; }
/* ceil(a / b) for a >= 0, b > 0, without the overflow of (a + b - 1) / b near INT64_MAX. */
static inline int64_t mmi__ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/* Floor division that is correct for negative numerators (b > 0). */
static inline int64_t mmi__floor_div(int64_t a, int64_t b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* Aligns [lo, hi) outward to multiples of `align`, clipped to [0, limit). Returns the aligned range;
 * it is empty (start >= end) when nothing of [lo, hi) lies inside [0, limit). */
mmi__range mmi__align_range(int64_t lo, int64_t hi, int64_t align, int64_t limit);

/* Sorts `ranges[0:count]` by start, drops empty ones and merges ranges that overlap or touch.
 * Returns the new count (<= count). In place, no allocation (insertion sort: count is small). */
int64_t mmi__normalize_ranges(mmi__range *ranges, int64_t count);

/* Validates common builder arguments; returns MMI_OK or an error naming the argument. */
int mmi__check_block_sizes(int64_t block_q, int64_t block_k, mmi_error *err);

/* Returns nonzero when v fits in an int32 index. */
static inline int mmi__fits_int32(int64_t v) { return v >= 0 && v <= INT32_MAX; }

#endif /* MMI_INTERNAL_H */
