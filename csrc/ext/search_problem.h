// Tensor validation of mminference::search_score, shared by its CPU and CUDA dispatch
// (csrc/ext/search_ops.cpp, csrc/ext/cuda/cuda_search_ops.cpp). Semantics: csrc/core/mmi_search.h.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "mmi_search.h"

namespace mminference {

// The op's outputs, allocated on probs' device: kept_mass float32 [H, R, M], kept_out float32
// [H, R, D] (D = 0 without value), block_tiles int32 [H, NQB].
struct SearchOutputs {
  at::Tensor kept_mass, kept_out, block_tiles;
};

// Holds contiguous copies of the inputs alive while the problem points into them.
struct SearchInputs {
  at::Tensor probs, row_pos, modality, value, ranges, range_count, columns, column_count, q_perm,
      k_perm;
};

// Validates every tensor (dtype, rank, shape, device; errors name the argument), allocates the
// outputs and fills `problem` with pointers into `inputs` / `outputs`.
void make_search_problem(const at::Tensor& probs, const at::Tensor& row_pos,
                         const at::Tensor& modality, const std::optional<at::Tensor>& value,
                         const at::Tensor& kv_ranges, const at::Tensor& kv_range_count,
                         const at::Tensor& kv_columns, const at::Tensor& kv_column_count,
                         const std::optional<at::Tensor>& q_perm,
                         const std::optional<at::Tensor>& k_perm, int64_t block_q, int64_t block_k,
                         int64_t num_modalities, SearchInputs& inputs, SearchOutputs& outputs,
                         mmi_search_problem& problem);

}  // namespace mminference
