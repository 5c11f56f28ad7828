/* CUDA forward of the block-sparse attention described by mmi_attention_problem
 * (csrc/core/mmi_attention.h) over an mmi_sparse_index (csrc/core/mmi_sparse_index.h), with the
 * semantics of the CPU reference mmi_sparse_attention_forward_cpu.
 *
 * Supported (anything else returns MMI_ERR_UNSUPPORTED with a message naming the argument):
 *   dtype      float16 or bfloat16 (q, k, v, out); float32 accumulation; lse float32
 *   head_dim   64, 80, 96, 128
 *   block_q    64 or 128 (index.block_q)
 *   GQA (q_heads a multiple of kv_heads), batch >= 1, q_perm / k_perm optional, causal or not,
 *   any scale (negative and zero included).
 *   Alignment: q, k, v, out 16-byte aligned, and their batch/head/seq strides multiples of 8
 *   elements (16-byte rows), as for any contiguous-head_dim tensor of a supported head_dim.
 *   Sequence lengths up to 2^31 - 257.
 *
 * All pointers (tensors and index arrays) are device pointers on the current device. The host
 * checks sizes, strides, alignment and NULLs only: it cannot read the index, so index *values*
 * are not validated (use mmi_sparse_attention_check on a host copy for that). The kernel clamps
 * or skips every index value outside [0, seq_k) / [0, seq_q) and counts outside [0, capacity], so
 * a malformed index may give wrong numbers but never an out-of-bounds access. Rows with no allowed
 * key are zeros with lse = -inf.
 *
 * On compute capability 9.0 with sm_90a code in the binary, block_q 128 and head_dim 64 or 128 run
 * a wgmma (Hopper) kernel, everything else an mma.sync kernel; set the environment variable
 * MMI_CUDA_FORCE_MMA_SYNC=1 to force the mma.sync kernel (read at every call).
 *
 * The call is asynchronous on `stream` (a cudaStream_t, NULL for the legacy default stream).
 * Launch and configuration failures return MMI_ERR_DEVICE with cudaGetErrorString's text; faults
 * during execution surface at the caller's next synchronisation. */
#ifndef MMI_CUDA_H
#define MMI_CUDA_H

#include "mmi_attention.h"
#include "mmi_status.h"

#ifdef __cplusplus
extern "C" {
#endif

int mmi_sparse_attention_forward_cuda(const mmi_attention_problem *problem, void *stream,
                                      mmi_error *err);

/* Which kernel mmi_sparse_attention_forward_cuda would run for `problem` on the current device:
 * "sm90-wgmma" (compute capability 9.0, a binary with sm_90a code, block_q 128, head_dim 64 or
 * 128; environment variable MMI_CUDA_FORCE_MMA_SYNC=1 turns it off), "mma-sync" (everything
 * else), or a string starting with "none" when the problem fails the host checks or no device is
 * usable. For diagnostics and benchmarks; a static string. */
const char *mmi_sparse_attention_cuda_kernel_name(const mmi_attention_problem *problem);

#ifdef __cplusplus
}
#endif

#endif /* MMI_CUDA_H */
