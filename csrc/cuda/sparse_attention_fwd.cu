// C entry point of the CUDA forward: host-side checks of sizes, then dispatch over
// (dtype, head_dim, block_q) to a kernel instantiation (kernel_traits.cuh), or to the sm_90a
// wgmma kernel (sm90/) where it applies (see try_sm90 below).
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernel_traits.cuh"
#include "mmi_cuda.h"
#include "ptx_primitives.cuh"
#include "sm90/sm90_attention_launch.cuh"
#include "sparse_attention_launch.cuh"

namespace {

using mmi_cuda::Bfloat16;
using mmi_cuda::DefaultTraits;
using mmi_cuda::Float16;

// Slots are int32 and the kernel adds up to one block and one key tile to them.
constexpr int64_t kMaxSequence = INT32_MAX - 256;
constexpr int64_t kMaxCapacity = INT32_MAX / 2;
// Row addresses are computed as position * (seq stride in bytes) with 32-bit factors.
constexpr int64_t kMaxSequenceStride = INT32_MAX;

const char* dtype_name(mmi_dtype dtype) {
  switch (dtype) {
    case MMI_DTYPE_FLOAT32: return "float32";
    case MMI_DTYPE_FLOAT16: return "float16";
    case MMI_DTYPE_BFLOAT16: return "bfloat16";
  }
  return "unknown";
}

// 16-byte cp.async / vector stores need 16-byte aligned rows.
int check_rows_aligned(const void* data, int64_t stride_b, int64_t stride_h, int64_t stride_s,
                       const char* name, mmi_error* err) {
  if (reinterpret_cast<uintptr_t>(data) % 16 != 0)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "%s: data pointer must be 16-byte aligned for the CUDA kernel", name);
  if (stride_s < 0 || stride_s > kMaxSequenceStride)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "%s: seq stride %lld is outside [0, %lld] elements for the CUDA kernel",
                         name, (long long)stride_s, (long long)kMaxSequenceStride);
  if (stride_b % 8 != 0 || stride_h % 8 != 0 || stride_s % 8 != 0)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "%s: batch/head/seq strides (%lld, %lld, %lld) must be multiples of 8 "
                         "elements for the CUDA kernel",
                         name, (long long)stride_b, (long long)stride_h, (long long)stride_s);
  return MMI_OK;
}

int check_problem(const mmi_attention_problem* p, mmi_error* err) {
  if (p == nullptr) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "problem is NULL");
  if (p->dtype != MMI_DTYPE_FLOAT16 && p->dtype != MMI_DTYPE_BFLOAT16)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "q: dtype %s is not supported by the CUDA kernel (float16, bfloat16)",
                         dtype_name(p->dtype));
  // The shared shape checks (C core) first; the limits below are this kernel's own.
  int status = mmi_sparse_attention_check_shapes(p, err);
  if (status != MMI_OK) return status;
  if (p->seq_q > kMaxSequence || p->seq_k > kMaxSequence)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "q/k: sequence lengths (%lld, %lld) must be <= %lld for the CUDA kernel",
                         (long long)p->seq_q, (long long)p->seq_k, (long long)kMaxSequence);
  status = check_rows_aligned(p->q, p->q_stride_b, p->q_stride_h, p->q_stride_s, "q", err);
  if (status == MMI_OK)
    status = check_rows_aligned(p->k, p->k_stride_b, p->k_stride_h, p->k_stride_s, "k", err);
  if (status == MMI_OK)
    status = check_rows_aligned(p->v, p->v_stride_b, p->v_stride_h, p->v_stride_s, "v", err);
  if (status == MMI_OK)
    status =
        check_rows_aligned(p->out, p->out_stride_b, p->out_stride_h, p->out_stride_s, "out", err);
  if (status != MMI_OK) return status;

  const mmi_sparse_index& ix = p->index;
  if (ix.block_q != 64 && ix.block_q != 128)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "block_q %lld is not supported by the CUDA kernel (64, 128)",
                         (long long)ix.block_q);
  const int64_t nqb = ix.num_q_blocks;
  if (ix.max_ranges > kMaxCapacity)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "kv_ranges: capacity %lld is outside [0, %lld]",
                         (long long)ix.max_ranges, (long long)kMaxCapacity);
  if (ix.max_columns > kMaxCapacity)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "kv_columns: capacity %lld is outside [0, %lld]",
                         (long long)ix.max_columns, (long long)kMaxCapacity);
  // Work items are int in the kernels; the persistent kernel's CTAs count up to two grid widths
  // (<= 2 x SMs) past the last item before they stop, hence the margin.
  if (p->batch * p->q_heads * nqb > INT32_MAX - (1 << 20))
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "q: batch %lld x heads %lld x query blocks %lld exceeds the CUDA kernel's "
                         "work-item limit 2^31 - 2^20",
                         (long long)p->batch, (long long)p->q_heads, (long long)nqb);
  return MMI_OK;
}

int device_error(cudaError_t status, const char* what, mmi_error* err) {
  return mmi_error_set(err, MMI_ERR_DEVICE, "%s: %s", what, cudaGetErrorString(status));
}

template <class Traits, class Element>
int run(const mmi_attention_problem& p, int device, cudaStream_t stream, mmi_error* err) {
  int shared_limit = 0;
  cudaError_t status =
      cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (status != cudaSuccess) return device_error(status, "cudaDeviceGetAttribute", err);
  if (shared_limit < mmi_cuda::shared_bytes<Traits>())
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "block_q %d with head_dim %d needs %d bytes of shared memory per block; "
                         "device %d offers %d",
                         Traits::kBlockQ, Traits::kHeadDim, mmi_cuda::shared_bytes<Traits>(),
                         device, shared_limit);
  status = mmi_cuda::launch_sparse_attention<Traits, Element>(p, device, stream);
  if (status != cudaSuccess) return device_error(status, "sparse attention kernel launch", err);
  return MMI_OK;
}

template <class Element, int kHeadDim>
int dispatch_block_q(const mmi_attention_problem& p, int device, cudaStream_t stream,
                     mmi_error* err) {
  if (p.index.block_q == 128)
    return run<typename DefaultTraits<kHeadDim, 128>::type, Element>(p, device, stream, err);
  return run<typename DefaultTraits<kHeadDim, 64>::type, Element>(p, device, stream, err);
}

template <class Element>
int dispatch_head_dim(const mmi_attention_problem& p, int device, cudaStream_t stream,
                      mmi_error* err) {
  switch (p.head_dim) {
    case 64: return dispatch_block_q<Element, 64>(p, device, stream, err);
    case 80: return dispatch_block_q<Element, 80>(p, device, stream, err);
    case 96: return dispatch_block_q<Element, 96>(p, device, stream, err);
    default: return dispatch_block_q<Element, 128>(p, device, stream, err);
  }
}

// ---- sm_90a wgmma path (csrc/cuda/sm90/) -------------------------------------------------------
// Taken when the device is compute capability 9.0, the binary carries sm_90a code for the kernel,
// block_q is 128 and head_dim 64 or 128 (dtype float16 / bfloat16 is already checked), unless the
// environment variable MMI_CUDA_FORCE_MMA_SYNC is set to a non-empty value other than "0" (forces
// the mma.sync kernel, e.g. for comparisons). Everything else runs the mma.sync kernel.
bool force_mma_sync() {
  const char* value = std::getenv("MMI_CUDA_FORCE_MMA_SYNC");
  return value != nullptr && value[0] != '\0' && std::strcmp(value, "0") != 0;
}

template <class Element, int kHeadDim>
bool sm90_path_available(int device) {
  return mmi_cuda::sm90::sm90_kernel_available<mmi_cuda::sm90::Sm90Traits<kHeadDim>, Element>(
      device);
}

// Whether the wgmma kernel would run this (checked) problem on `device`.
template <class Element>
bool sm90_applies(const mmi_attention_problem& p, int device, int major, int minor) {
  if (major != 9 || minor != 0 || p.index.block_q != 128 || force_mma_sync()) return false;
  if (p.head_dim == 128) return sm90_path_available<Element, 128>(device);
  if (p.head_dim == 64) return sm90_path_available<Element, 64>(device);
  return false;
}

// Which sm_90a kernel runs head_dim 128: the warp-specialised one (default), or, when
// MMI_CUDA_SM90_KERNEL=pipelined, the non-specialised one (kept for comparisons on the device).
// head_dim 64 always runs the non-specialised kernel, two CTAs per SM (H200, 32K causal: 361
// TFLOP/s against 292 for the warp-specialised one, which fits one CTA per SM).
bool sm90_warp_specialized(int head_dim) {
  if (head_dim != 128) return false;
  const char* value = std::getenv("MMI_CUDA_SM90_KERNEL");
  return value == nullptr || std::strcmp(value, "pipelined") != 0;
}

template <class Traits, class Element>
int run_sm90(const mmi_attention_problem& p, int device, cudaStream_t stream, mmi_error* err) {
  using Kernel = mmi_cuda::sm90::Sm90Kernel<Traits, Element>;
  int shared_limit = 0;
  cudaError_t status =
      cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (status != cudaSuccess) return device_error(status, "cudaDeviceGetAttribute", err);
  if (shared_limit < Kernel::shared_bytes)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "head_dim %d (sm90 kernel) needs %d bytes of shared memory per block; "
                         "device %d offers %d",
                         Traits::kHeadDim, Kernel::shared_bytes, device, shared_limit);
  status = mmi_cuda::sm90::launch_sm90_attention<Traits, Element>(p, device, stream);
  if (status != cudaSuccess) return device_error(status, "sm90 sparse attention kernel launch", err);
  return MMI_OK;
}

template <class Element>
int dispatch_sm90(const mmi_attention_problem& p, int device, cudaStream_t stream,
                  mmi_error* err) {
  using namespace mmi_cuda::sm90;
  if (p.head_dim == 64) return run_sm90<Sm90Traits<64>, Element>(p, device, stream, err);
  if (sm90_warp_specialized(128))
    return run_sm90<Sm90WsTraits<128>, Element>(p, device, stream, err);
  return run_sm90<Sm90Traits<128>, Element>(p, device, stream, err);
}

int device_capability(int* device, int* major, int* minor, mmi_error* err) {
  cudaError_t cuda_status = cudaGetDevice(device);
  if (cuda_status != cudaSuccess) return device_error(cuda_status, "cudaGetDevice", err);
  cuda_status = cudaDeviceGetAttribute(major, cudaDevAttrComputeCapabilityMajor, *device);
  if (cuda_status == cudaSuccess)
    cuda_status = cudaDeviceGetAttribute(minor, cudaDevAttrComputeCapabilityMinor, *device);
  if (cuda_status != cudaSuccess) return device_error(cuda_status, "cudaDeviceGetAttribute", err);
  return MMI_OK;
}
// ---- end of the sm_90a path ----------------------------------------------------------------------

}  // namespace

extern "C" const char* mmi_sparse_attention_cuda_kernel_name(
    const mmi_attention_problem* problem) {
  mmi_error err;
  if (check_problem(problem, &err) != MMI_OK) return "none (invalid problem)";
  int device = 0, major = 0, minor = 0;
  if (device_capability(&device, &major, &minor, &err) != MMI_OK) return "none (no device)";
  const bool sm90 = problem->dtype == MMI_DTYPE_BFLOAT16
                        ? sm90_applies<Bfloat16>(*problem, device, major, minor)
                        : sm90_applies<Float16>(*problem, device, major, minor);
  if (!sm90) return "mma-sync";
  return sm90_warp_specialized(static_cast<int>(problem->head_dim)) ? "sm90-wgmma-ws"
                                                                       : "sm90-wgmma";
}

extern "C" int mmi_sparse_attention_forward_cuda(const mmi_attention_problem* problem,
                                                 void* stream, mmi_error* err) {
  mmi_error_clear(err);
  const int status = check_problem(problem, err);
  if (status != MMI_OK) return status;

  int device = 0, major = 0, minor = 0;
  const int device_status = device_capability(&device, &major, &minor, err);
  if (device_status != MMI_OK) return device_status;
  if (major < 8)
    return mmi_error_set(err, MMI_ERR_UNSUPPORTED,
                         "device %d has compute capability %d.x; the CUDA kernel needs 8.0 or newer",
                         device, major);

  const cudaStream_t cuda_stream = static_cast<cudaStream_t>(stream);
  if (problem->dtype == MMI_DTYPE_BFLOAT16 && sm90_applies<Bfloat16>(*problem, device, major, minor))
    return dispatch_sm90<Bfloat16>(*problem, device, cuda_stream, err);
  if (problem->dtype == MMI_DTYPE_FLOAT16 && sm90_applies<Float16>(*problem, device, major, minor))
    return dispatch_sm90<Float16>(*problem, device, cuda_stream, err);
  if (problem->dtype == MMI_DTYPE_BFLOAT16)
    return dispatch_head_dim<Bfloat16>(*problem, device, cuda_stream, err);
  return dispatch_head_dim<Float16>(*problem, device, cuda_stream, err);
}
