/* CUDA versions of the vertical-slash and grid index builders (csrc/core/mmi_index_builders.h)
 * and of the last-query estimation (csrc/core/mmi_estimate.h).
 *
 * The builders produce exactly the C core's int32 outputs (padding zeros included) for the same
 * input; the estimation matches the CPU's float32 scores to rounding.
 *
 * All buffers are device pointers on the current device, laid out as documented for the C core
 * (contiguous). Every call is asynchronous on `stream` (a cudaStream_t; NULL is the legacy default
 * stream). Host-side checks of sizes and NULLs return the C core's status and message; launch
 * failures return MMI_ERR_DEVICE with cudaGetErrorString's text.
 *
 * Input *values* living on the device (sorted lists, strides, phases) are checked on the device:
 * the launcher fills a caller-provided device `mmi_device_check`, the caller copies it to the host
 * once the stream reaches it (16 bytes) and passes it to the matching *_check_result function,
 * which returns the error the C core would have returned for the same input. The kernels stay
 * in bounds for any input; outputs are meaningless when the check fails. */
#ifndef MMI_CUDA_INDEX_H
#define MMI_CUDA_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include "mmi_estimate.h"
#include "mmi_grid_detect.h"
#include "mmi_index_builders.h"
#include "mmi_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* First bad input entry found on the device; `first_bad` is MMI_DEVICE_CHECK_PASSED when none. */
typedef struct mmi_device_check {
  uint64_t first_bad; /* op-specific key ordering entries as the C core visits them */
  int32_t value;      /* the bad entry */
  int32_t other;      /* its context: the previous list entry, or the head's phase */
} mmi_device_check;

#define MMI_DEVICE_CHECK_PASSED UINT64_MAX

/* mmi_build_vertical_slash_index on the GPU. `check` is a device mmi_device_check.
 * Needs batch * heads < 2^31 and num_vertical, num_slash, max_ranges < 2^31. */
int mmi_build_vertical_slash_index_cuda(int64_t batch, int64_t heads, int64_t seq_q, int64_t seq_k,
                                        int64_t block_q, int64_t block_k, const int32_t *vertical,
                                        int64_t num_vertical, const int32_t *slash,
                                        int64_t num_slash, int64_t max_ranges, int32_t *kv_ranges,
                                        int32_t *kv_range_count, int32_t *kv_columns,
                                        int32_t *kv_column_count, mmi_device_check *check,
                                        void *stream, mmi_error *err);

/* The C core's error for a host copy of the vertical-slash check (MMI_OK when it passed):
 * "vertical[b, h, i] = v is outside [0, seq_k)" or "slash[b, h, :] must be strictly increasing...". */
int mmi_vertical_slash_check_result(const mmi_device_check *check, int64_t heads, int64_t seq_k,
                                    mmi_error *err);

/* mmi_build_grid_index on the GPU: permutations in closed form per slot, ranges per query block.
 * `stride`, `phase` [B, H] and every output are device buffers; `check` is a device
 * mmi_device_check. Needs batch * heads < 2^31. */
int mmi_build_grid_index_cuda(int64_t batch, int64_t heads, const mmi_grid_options *options,
                              const int32_t *stride, const int32_t *phase, int32_t *q_perm,
                              int32_t *k_perm, int32_t *kv_ranges, int32_t *kv_range_count,
                              mmi_device_check *check, void *stream, mmi_error *err);

/* The C core's error for a host copy of the grid check (MMI_OK when it passed). */
int mmi_grid_check_result(const mmi_device_check *check, int64_t heads,
                          const mmi_grid_options *options, mmi_error *err);

/* Largest `last` the CUDA estimation accepts. */
enum { MMI_ESTIMATE_CUDA_MAX_LAST = 64 };

/* Device workspace bytes mmi_estimate_vertical_slash_scores_cuda needs for `problem` (per-row
 * softmax statistics: O(B * Hq * last * segments), independent of Sk beyond the segment count).
 * 0 when the problem fails mmi_estimate_check. */
size_t mmi_estimate_cuda_workspace_bytes(const mmi_estimate_problem *problem);

/* mmi_estimate_vertical_slash_scores_cpu on the GPU: two passes of tensor-core Q.K^T over key
 * chunks (row max and sum of exp, then probabilities reduced into column and diagonal sums), with
 * nothing of size last x Sk stored. Supported: float16 / bfloat16, head_dim 64, 80, 96, 128,
 * last <= 64, k rows 16-byte aligned (pointer and batch/head/seq strides multiples of 8 elements),
 * seq_k <= 2^31 - 257; q may have any strides. Compute capability 8.0 or newer. slash_score may
 * be NULL (vertical scores only): pass 2 then keeps no diagonal ring and issues no atomics. */
int mmi_estimate_vertical_slash_scores_cuda(const mmi_estimate_problem *problem, void *workspace,
                                            size_t workspace_bytes, void *stream, mmi_error *err);

/* Device workspace bytes mmi_detect_grid_cuda needs: 16 per usable candidate plus 16 per
 * (b, h, chunk of 128 phases of every usable candidate). 0 when the problem fails
 * mmi_detect_grid_check. */
size_t mmi_detect_grid_cuda_workspace_bytes(const mmi_grid_detect_problem *problem);

/* mmi_detect_grid on the GPU, same outputs (stride, phase, lift [B, H] device buffers). The
 * scores are device memory; candidate_strides stays in host memory (read at launch, passed to the
 * kernels by value). Two or more launches, no host synchronisation; `workspace` is a 16-byte
 * aligned device buffer of at least mmi_detect_grid_cuda_workspace_bytes. Needs B * H < 2^31. */
int mmi_detect_grid_cuda(const mmi_grid_detect_problem *problem, int32_t *stride, int32_t *phase,
                         float *lift, void *workspace, size_t workspace_bytes, void *stream,
                         mmi_error *err);

/* mmi_grid_lift on the GPU (stride, phase, lift [B, H] device buffers). Bad (stride, phase)
 * entries are reported through the device `check` (their lift is NaN). */
int mmi_grid_lift_cuda(const mmi_grid_scores *scores, const int32_t *stride, const int32_t *phase,
                       float *lift, mmi_device_check *check, void *stream, mmi_error *err);

/* mmi_grid_lift's error for a host copy of the grid-lift check (MMI_OK when it passed). */
int mmi_grid_lift_check_result(const mmi_device_check *check, int64_t heads,
                               const mmi_grid_scores *scores, mmi_error *err);

#ifdef __cplusplus
}
#endif

#endif /* MMI_CUDA_INDEX_H */
