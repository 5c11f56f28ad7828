// Device side of one harness case: upload, poisoned outputs and the CUDA forward.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "host_problem.h"
#include "mmi_cuda.h"
#include "reference_compare.h"

#define HARNESS_CUDA_CHECK(call)                                                            \
  do {                                                                                      \
    const cudaError_t harness_status_ = (call);                                             \
    if (harness_status_ != cudaSuccess) {                                                   \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                    \
                   cudaGetErrorString(harness_status_));                                    \
      std::exit(3);                                                                         \
    }                                                                                       \
  } while (0)

namespace harness {

template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(const std::vector<T>& host) { upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }

  void allocate(size_t count) {
    count_ = count;
    if (count > 0) HARNESS_CUDA_CHECK(cudaMalloc(&ptr_, count * sizeof(T)));
  }
  void upload(const std::vector<T>& host) {
    allocate(host.size());
    if (!host.empty())
      HARNESS_CUDA_CHECK(
          cudaMemcpy(ptr_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(count_);
    if (count_ > 0)
      HARNESS_CUDA_CHECK(cudaMemcpy(host.data(), ptr_, count_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  // 0xFF bytes: NaN in float32, float16 and bfloat16, so an unwritten element is caught.
  void poison() {
    if (count_ > 0) HARNESS_CUDA_CHECK(cudaMemset(ptr_, 0xFF, count_ * sizeof(T)));
  }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

// The problem with every pointer on the device.
struct DeviceProblem {
  DeviceBuffer<uint16_t> q, k, v, out;
  DeviceBuffer<float> lse;
  DeviceBuffer<int32_t> ranges, range_count, columns, column_count, q_perm, k_perm;
  mmi_attention_problem problem;

  explicit DeviceProblem(const HostProblem& hp)
      : q(hp.q16), k(hp.k16), v(hp.v16), ranges(hp.kv_ranges), range_count(hp.kv_range_count),
        columns(hp.kv_columns), column_count(hp.kv_column_count), q_perm(hp.q_perm),
        k_perm(hp.k_perm) {
    out.allocate(hp.out_layout.elements);
    lse.allocate(hp.spec.batch * hp.spec.q_heads * hp.spec.seq_q);
    problem = hp.problem(hp.spec.dtype);
    problem.q = q.get();
    problem.k = k.get();
    problem.v = v.get();
    problem.out = out.get();
    problem.lse = lse.get();
    problem.index.kv_ranges = ranges.get();
    problem.index.kv_range_count = range_count.get();
    problem.index.kv_columns = columns.get();
    problem.index.kv_column_count = column_count.get();
    problem.index.q_perm = q_perm.get();
    problem.index.k_perm = k_perm.get();
  }
};

// Runs the CUDA forward on poisoned outputs; exits on a CUDA or entry-point error.
inline void run_forward(DeviceProblem& dev, const std::string& name) {
  dev.out.poison();
  dev.lse.poison();
  mmi_error err;
  const int status = mmi_sparse_attention_forward_cuda(&dev.problem, nullptr, &err);
  if (status != MMI_OK) {
    std::fprintf(stderr, "%s: mmi_sparse_attention_forward_cuda failed (%d): %s\n", name.c_str(),
                 status, err.message);
    std::exit(4);
  }
  HARNESS_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace harness
