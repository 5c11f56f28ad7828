#include "mmi_index_builders.h"
#include "mmi_internal.h"

mmi__range mmi__align_range(int64_t lo, int64_t hi, int64_t align, int64_t limit) {
  mmi__range r;
  lo = mmi__max64(lo, 0);
  hi = mmi__min64(hi, limit);
  if (lo >= hi) {
    r.start = 0;
    r.end = 0;
    return r;
  }
  r.start = (lo / align) * align;
  r.end = mmi__min64(mmi__ceil_div(hi, align) * align, limit);
  return r;
}

int64_t mmi__normalize_ranges(mmi__range *ranges, int64_t count) {
  int64_t kept = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (ranges[i].start < ranges[i].end) ranges[kept++] = ranges[i];
  }
  for (int64_t i = 1; i < kept; ++i) {
    mmi__range key = ranges[i];
    int64_t j = i - 1;
    while (j >= 0 && ranges[j].start > key.start) {
      ranges[j + 1] = ranges[j];
      --j;
    }
    ranges[j + 1] = key;
  }
  int64_t merged = 0;
  for (int64_t i = 0; i < kept; ++i) {
    if (merged > 0 && ranges[i].start <= ranges[merged - 1].end) {
      ranges[merged - 1].end = mmi__max64(ranges[merged - 1].end, ranges[i].end);
    } else {
      ranges[merged++] = ranges[i];
    }
  }
  return merged;
}

int mmi__check_block_sizes(int64_t block_q, int64_t block_k, mmi_error *err) {
  if (block_q < 1 || block_q > 4096)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "block_q must be in [1, 4096], got %lld",
                         (long long)block_q);
  if (block_k < 1 || block_k > 4096)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "block_k must be in [1, 4096], got %lld",
                         (long long)block_k);
  return MMI_OK;
}

int64_t mmi_num_q_blocks(int64_t seq_q, int64_t block_q) {
  return block_q > 0 && seq_q > 0 ? mmi__ceil_div(seq_q, block_q) : 0;
}
