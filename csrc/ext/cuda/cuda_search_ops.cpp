// CUDA dispatch of mminference::search_score: the CPU op's tensor checks (csrc/ext/search_problem.h),
// then mmi_search_score_cuda (csrc/cuda/mmi_cuda_search.h) on the current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../search_problem.h"
#include "../tensor_checks.h"
#include "mmi_cuda_search.h"

namespace mminference {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> search_score_cuda(
    const at::Tensor& probs, const at::Tensor& row_pos, const at::Tensor& modality,
    const std::optional<at::Tensor>& value, const at::Tensor& kv_ranges,
    const at::Tensor& kv_range_count, const at::Tensor& kv_columns,
    const at::Tensor& kv_column_count, const std::optional<at::Tensor>& q_perm,
    const std::optional<at::Tensor>& k_perm, int64_t block_q, int64_t block_k,
    int64_t num_modalities) {
  TORCH_CHECK_VALUE(probs.is_cuda(), "probs: expected a CUDA tensor, got device ", probs.device());
  const c10::cuda::CUDAGuard guard(probs.device());
  SearchInputs inputs;
  SearchOutputs outputs;
  mmi_search_problem problem{};
  make_search_problem(probs, row_pos, modality, value, kv_ranges, kv_range_count, kv_columns,
                      kv_column_count, q_perm, k_perm, block_q, block_k, num_modalities, inputs,
                      outputs, problem);
  mmi_error err;
  raise_on_error(mmi_search_score_cuda(&problem, at::cuda::getCurrentCUDAStream().stream(), &err),
                 err);
  return {outputs.kept_mass, outputs.kept_out, outputs.block_tiles};
}

}  // namespace

TORCH_LIBRARY_IMPL(mminference, CUDA, m) { m.impl("search_score", &search_score_cuda); }

}  // namespace mminference
