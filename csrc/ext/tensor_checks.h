// Tensor-level validation shared by every backend, and the translation of C-core status codes
// into Python exceptions (ValueError for bad values and shapes, TypeError for dtypes).
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "mmi.h"
#include "mmi_grid_detect.h"

namespace mminference {

// Raises the exception that matches `status` with the core's message (which names the argument).
void raise_on_error(int status, const mmi_error& err);

// dtype of q/k/v as the core's enum; TypeError for anything but float32/float16/bfloat16.
mmi_dtype attention_dtype(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// Checks an int32 index tensor `name` on `device` with `rank` dims; the leading two dims must
// equal (batch, heads) or be 1 (broadcast); the remaining dims must equal `trailing` and be
// contiguous. Returns the (batch, head) strides to use, 0 for broadcast dims.
std::pair<int64_t, int64_t> check_index_tensor(const at::Tensor& t, const char* name,
                                               const at::Device& device, int64_t batch,
                                               int64_t heads, at::IntArrayRef trailing);

// Validates q/k/v/index tensors and fills an mmi_attention_problem (out and lse pointers too).
mmi_attention_problem make_attention_problem(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_ranges,
    const at::Tensor& kv_range_count, const at::Tensor& kv_columns,
    const at::Tensor& kv_column_count, const std::optional<at::Tensor>& q_perm,
    const std::optional<at::Tensor>& k_perm, int64_t block_q, bool causal, double scale,
    const at::Tensor& out, const at::Tensor& lse);

// Validates q/k for last-query estimation and fills an mmi_estimate_problem (outputs left NULL).
mmi_estimate_problem make_estimate_problem(const at::Tensor& q, const at::Tensor& k, int64_t last,
                                           int64_t query_end, double scale);

// vertical/slash of build_vertical_slash_index: int32, (B, H, n), equal (B, H), one device;
// max_ranges >= 0. Values are checked by the builders.
void check_vertical_slash_lists(const at::Tensor& vertical, const at::Tensor& slash,
                                int64_t max_ranges);

// stride/phase of build_grid_index: int32, equal (B, H) shapes, one device.
void check_grid_parameters(const at::Tensor& stride, const at::Tensor& phase);

// vertical_score of detect_grid / grid_lift: float32 (B, H, Sk); a last dim that is not contiguous
// is copied into `holder`. Returns the scores view of the span (checked by the C core).
mmi_grid_scores make_grid_scores(const at::Tensor& vertical_score, int64_t span_start,
                                 int64_t span_end, at::Tensor& holder);

// detect_grid's problem over make_grid_scores; the candidate list is converted to int32 in
// `strides_holder` (host memory). Checked by the C core (mmi_detect_grid_check).
mmi_grid_detect_problem make_grid_detect_problem(const at::Tensor& vertical_score,
                                                 int64_t span_start, int64_t span_end,
                                                 at::IntArrayRef candidate_strides,
                                                 double tolerance, int64_t max_lines,
                                                 at::Tensor& score_holder,
                                                 std::vector<int32_t>& strides_holder);

// stride/phase of grid_lift: check_grid_parameters, shape (B, H) of vertical_score, its device.
void check_grid_lift_parameters(const at::Tensor& vertical_score, const at::Tensor& stride,
                                const at::Tensor& phase);

// Uninitialised (out, lse) of sparse_attention for q: out as empty_attention_output, lse float32
// [B, Hq, Sq].
std::pair<at::Tensor, at::Tensor> empty_attention_outputs(const at::Tensor& q);

// Output of sparse_attention: [B, Hq, Sq, D] viewed over a (B, Sq, Hq, D) contiguous buffer, the
// layout transformers expects back from an attention function (a free transpose away).
at::Tensor empty_attention_output(const at::Tensor& q);

}  // namespace mminference
