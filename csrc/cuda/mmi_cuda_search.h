/* CUDA version of the pattern search's candidate scoring (csrc/core/mmi_search.h): the same
 * outputs as mmi_search_score_cpu for the same inputs (float32 accumulation instead of double,
 * in a fixed order: deterministic run to run).
 *
 * Every pointer in the problem is a device pointer on the current device. The host checks sizes
 * and pointers only (mmi_search_check): it cannot read device data, so index values, row_pos and
 * modality are not validated; entries outside their valid range are skipped (a row whose position
 * is outside [0, S) or absent from q_perm scores zero), never read out of bounds. Use
 * mmi_search_check_values on host copies for validation.
 * Supported: head_dim <= 256 with value; batch-0 of the index as on the CPU.
 * Asynchronous on `stream` (a cudaStream_t; NULL: the legacy default stream); launch failures
 * return MMI_ERR_DEVICE with cudaGetErrorString's text. */
#ifndef MMI_CUDA_SEARCH_H
#define MMI_CUDA_SEARCH_H

#include "mmi_search.h"
#include "mmi_status.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { MMI_SEARCH_CUDA_MAX_HEAD_DIM = 256 };

int mmi_search_score_cuda(const mmi_search_problem *problem, void *stream, mmi_error *err);

#ifdef __cplusplus
}
#endif

#endif /* MMI_CUDA_SEARCH_H */
