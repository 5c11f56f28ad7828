#include <stddef.h>

#include "mmi_index_builders.h"
#include "mmi_internal.h"

int mmi_build_modality_permutation(int64_t batch, int64_t seq, const int32_t *modality,
                                   int64_t num_modalities, int32_t *perm,
                                   int32_t *segment_offsets, mmi_error *err) {
  mmi_error_clear(err);
  if (modality == NULL) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "modality is NULL");
  if (perm == NULL || segment_offsets == NULL)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "an output buffer is NULL");
  if (batch < 1) return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "batch must be >= 1");
  if (seq < 1 || !mmi__fits_int32(seq))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "seq must be in [1, 2^31), got %lld",
                         (long long)seq);
  if (num_modalities < 1 || num_modalities > 256)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "num_modalities must be in [1, 256], got %lld",
                         (long long)num_modalities);

  for (int64_t b = 0; b < batch; ++b) {
    const int32_t *mod = modality + b * seq;
    int32_t *offsets = segment_offsets + b * (num_modalities + 1);
    for (int64_t m = 0; m <= num_modalities; ++m) offsets[m] = 0;
    for (int64_t p = 0; p < seq; ++p) {
      if (mod[p] < 0 || mod[p] >= num_modalities)
        return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                             "modality[%lld, %lld] = %d is outside [0, num_modalities = %lld)",
                             (long long)b, (long long)p, mod[p], (long long)num_modalities);
      offsets[mod[p] + 1] += 1;
    }
    for (int64_t m = 0; m < num_modalities; ++m) offsets[m + 1] += offsets[m];
    /* Stable counting sort: offsets[m + 1] is shifted to modality m's start and then serves as
     * its write cursor, so it ends at m's end, i.e. m + 1's start. */
    int32_t *out = perm + b * seq;
    for (int64_t m = num_modalities; m > 0; --m) offsets[m] = offsets[m - 1];
    offsets[0] = 0;
    for (int64_t p = 0; p < seq; ++p) out[offsets[mod[p] + 1]++] = (int32_t)p;
  }
  return MMI_OK;
}
