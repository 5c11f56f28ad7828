// CUDA dispatch of mminference::sparse_attention: the same tensor validation as the CPU op
// (tensor_checks.h), then the CUDA forward of csrc/cuda/mmi_cuda.h on the current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../tensor_checks.h"
#include "mmi_cuda.h"

namespace mminference {
namespace {

std::tuple<at::Tensor, at::Tensor> sparse_attention_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_ranges,
    const at::Tensor& kv_range_count, const at::Tensor& kv_columns,
    const at::Tensor& kv_column_count, const std::optional<at::Tensor>& q_perm,
    const std::optional<at::Tensor>& k_perm, int64_t block_q, bool causal, double scale) {
  // Any CUDA argument routes here; the outputs follow q, so q itself must be the CUDA one.
  TORCH_CHECK_VALUE(q.is_cuda(), "q: expected a CUDA tensor, got device ", q.device());
  const c10::cuda::CUDAGuard device_guard(q.device());
  const auto [out, lse] = empty_attention_outputs(q);
  const mmi_attention_problem problem =
      make_attention_problem(q, k, v, kv_ranges, kv_range_count, kv_columns, kv_column_count,
                             q_perm, k_perm, block_q, causal, scale, out, lse);
  mmi_error err;
  raise_on_error(mmi_sparse_attention_forward_cuda(
                     &problem, at::cuda::getCurrentCUDAStream(q.device().index()).stream(), &err),
                 err);
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(mminference, CUDA, m) { m.impl("sparse_attention", &sparse_attention_cuda); }

}  // namespace mminference
