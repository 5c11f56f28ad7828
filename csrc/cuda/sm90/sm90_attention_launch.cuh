// Host side of the sm_90a wgmma forwards (sm90_attention_kernel.cuh: two math warpgroups that
// also load, one CTA per work item; sm90_ws_attention_kernel.cuh: warp-specialised, persistent,
// TMA for contiguous key tiles): availability check, the K / V tensor maps and the launch.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "mmi_attention.h"
#include "sm90/sm90_attention_kernel.cuh"
#include "sm90/sm90_ws_attention_kernel.cuh"

namespace mmi_cuda {
namespace sm90 {

// Kernel entry point, block size and dynamic shared memory of a traits type.
template <class Traits, class Element>
struct Sm90Kernel;
template <int kHeadDim, class Element>
struct Sm90Kernel<Sm90Traits<kHeadDim>, Element> {
  static constexpr auto function = &sm90_attention_fwd_kernel<Sm90Traits<kHeadDim>, Element>;
  static constexpr int shared_bytes = sm90_shared_bytes<Sm90Traits<kHeadDim>>();
  static constexpr bool persistent = false;  // one CTA per work item
};
template <int kHeadDim, class Element>
struct Sm90Kernel<Sm90WsTraits<kHeadDim>, Element> {
  using Traits = Sm90WsTraits<kHeadDim>;
  static constexpr auto function = &sm90_ws_attention_fwd_kernel<Traits, Element>;
  static constexpr int shared_bytes = sm90_ws_shared_bytes<Traits>();
  static constexpr bool persistent = true;  // one CTA per SM, looping over the work items
};

// Whether the kernel instantiation can run on `device` (compute capability 9.0 checked by the
// caller): the loaded image must be real sm_90 code built from the sm_90a target
// (-gencode=arch=compute_90a,code=sm_90a). Builds without it (sm_80 only, where the driver would
// JIT compute_80 PTX, or plain compute_90 without the 'a' features) contain a trapping stub: its
// register count gives it away. Cached per device (< 64).
template <class Traits, class Element>
bool sm90_kernel_available(int device) {
  static std::atomic<uint64_t> checked{0};
  static std::atomic<uint64_t> available{0};
  const uint64_t bit = device >= 0 && device < 64 ? (uint64_t{1} << device) : 0;
  if (bit != 0 && (checked.load(std::memory_order_acquire) & bit) != 0)
    return (available.load(std::memory_order_acquire) & bit) != 0;
  cudaFuncAttributes attributes{};
  bool ok = cudaFuncGetAttributes(&attributes, Sm90Kernel<Traits, Element>::function) ==
            cudaSuccess;
  if (!ok) (void)cudaGetLastError();  // no image for this device: not an error of the call
  // The stub needs a handful of registers; the real kernel well over 64.
  ok = ok && attributes.binaryVersion == 90 && attributes.ptxVersion >= 90 &&
       attributes.numRegs >= 64;
  if (bit != 0) {
    if (ok) available.fetch_or(bit, std::memory_order_acq_rel);
    checked.fetch_or(bit, std::memory_order_acq_rel);
  }
  return ok;
}

template <class Traits, class Element>
cudaError_t prepare_sm90_kernel(int device) {
  static std::atomic<uint64_t> prepared{0};
  const uint64_t bit = device >= 0 && device < 64 ? (uint64_t{1} << device) : 0;
  if (bit != 0 && (prepared.load(std::memory_order_acquire) & bit) != 0) return cudaSuccess;
  const cudaError_t status =
      cudaFuncSetAttribute(Sm90Kernel<Traits, Element>::function,
                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                           Sm90Kernel<Traits, Element>::shared_bytes);
  if (status == cudaSuccess && bit != 0) prepared.fetch_or(bit, std::memory_order_acq_rel);
  return status;
}

// Launches on `stream` on the current `device`; `problem` must have passed the host checks of the
// C entry point, with block_q 128 and head_dim Traits::kHeadDim.
template <class Traits, class Element>
cudaError_t launch_sm90_attention(const mmi_attention_problem& problem, int device,
                                  cudaStream_t stream) {
  cudaError_t status = prepare_sm90_kernel<Traits, Element>(device);
  if (status != cudaSuccess) return status;
  using Kernel = Sm90Kernel<Traits, Element>;
  const int64_t items = problem.batch * problem.q_heads * problem.index.num_q_blocks;
  int64_t ctas = items;
  if constexpr (Kernel::persistent) {
    int sms = 0;
    status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    if (status != cudaSuccess) return status;
    if (sms > 0 && ctas > sms) ctas = sms;  // the kernel fits one CTA per SM
    // One coordinate order serves both maps: TMA only when K and V order their outer dimensions
    // alike (always for K and V of one layout; a K in (B, H, S, D) with a V in (B, S, H, D) gathers).
    KvTensorMaps maps{};
    int v_seq_dim = 0, v_head_dim = 0, v_batch_dim = 0;
    maps.enabled =
        encode_kv_tensor_map(&maps.k, problem.k, problem.batch, problem.kv_heads, problem.seq_k,
                             problem.head_dim, problem.k_stride_b, problem.k_stride_h,
                             problem.k_stride_s, &maps.seq_dim, &maps.head_dim,
                             &maps.batch_dim) &&
        encode_kv_tensor_map(&maps.v, problem.v, problem.batch, problem.kv_heads, problem.seq_k,
                             problem.head_dim, problem.v_stride_b, problem.v_stride_h,
                             problem.v_stride_s, &v_seq_dim, &v_head_dim, &v_batch_dim) &&
        v_seq_dim == maps.seq_dim && v_head_dim == maps.head_dim && v_batch_dim == maps.batch_dim;
    // The work counter the CTAs take items from (dynamic scheduling: item costs differ by far
    // more than a wave's worth, e.g. a grid index's line queries). Stream-ordered, so it costs a
    // pooled allocation and a 4-byte memset; without it the CTAs take items statically. Under
    // stream capture these become memory nodes (the memset re-zeroes the counter every replay),
    // and CUDA allows one executable instance of a graph with memory nodes at a time.
    // -DMMI_SM90_STATIC_SCHEDULE builds the previous static last-first schedule (A/B timing).
    int* work_counter = nullptr;
#if !defined(MMI_SM90_STATIC_SCHEDULE)
    if (cudaMallocAsync(reinterpret_cast<void**>(&work_counter), sizeof(int), stream) !=
        cudaSuccess) {
      (void)cudaGetLastError();
      work_counter = nullptr;
    } else if ((status = cudaMemsetAsync(work_counter, 0, sizeof(int), stream)) != cudaSuccess) {
      (void)cudaFreeAsync(work_counter, stream);
      return status;
    }
#endif
    Kernel::function<<<static_cast<unsigned>(ctas), Traits::kThreads, Kernel::shared_bytes,
                       stream>>>(problem, maps, work_counter);
    status = cudaGetLastError();
    if (work_counter != nullptr) {
      const cudaError_t freed = cudaFreeAsync(work_counter, stream);
      if (status == cudaSuccess) status = freed;
    }
    return status;
  } else {
    Kernel::function<<<static_cast<unsigned>(ctas), Traits::kThreads, Kernel::shared_bytes,
                       stream>>>(problem);
  }
  return cudaGetLastError();
}

}  // namespace sm90
}  // namespace mmi_cuda
