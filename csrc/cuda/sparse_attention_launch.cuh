// Host-side launch of one kernel instantiation (shared by the C entry point and the benchmark).
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "kernel_traits.cuh"
#include "mmi_attention.h"
#include "sparse_attention_kernel.cuh"

namespace mmi_cuda {

template <class Traits>
constexpr int shared_bytes() {
  return static_cast<int>(sizeof(SharedStorage<Traits>));
}

// Raises the kernel's dynamic shared-memory limit above the default 48 KB, once per device (the
// attribute is per device).
template <class Traits, class Element>
cudaError_t prepare_kernel(int device) {
  if (shared_bytes<Traits>() <= 48 * 1024) return cudaSuccess;
  static std::atomic<uint64_t> prepared{0};  // bit d: done for device d (< 64)
  const uint64_t bit = device < 64 ? (uint64_t{1} << device) : 0;
  if (bit != 0 && (prepared.load(std::memory_order_acquire) & bit) != 0) return cudaSuccess;
  const cudaError_t status =
      cudaFuncSetAttribute(sparse_attention_fwd_kernel<Traits, Element>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes<Traits>());
  if (status == cudaSuccess && bit != 0) prepared.fetch_or(bit, std::memory_order_acq_rel);
  return status;
}

// Launches on `stream` on the current `device`; `problem` must have passed the host checks of the
// C entry point and the device must offer shared_bytes<Traits>() per block.
template <class Traits, class Element>
cudaError_t launch_sparse_attention(const mmi_attention_problem& problem, int device,
                                    cudaStream_t stream) {
  cudaError_t status = prepare_kernel<Traits, Element>(device);
  if (status != cudaSuccess) return status;
  const int64_t ctas = problem.batch * problem.q_heads * problem.index.num_q_blocks;
  sparse_attention_fwd_kernel<Traits, Element>
      <<<static_cast<unsigned>(ctas), Traits::kThreads, shared_bytes<Traits>(), stream>>>(problem);
  return cudaGetLastError();
}

}  // namespace mmi_cuda
