// CUDA dispatch of the index builders and the estimation: the CPU ops' checks (csrc/ext/cpu_ops.cpp),
// outputs on the inputs' device, launches on the current stream (csrc/cuda/mmi_cuda_index.h).
// The builders validate their device-resident inputs on the device and read the verdict back with
// one 16-byte copy, so bad input raises the same ValueError as on the CPU.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "../tensor_checks.h"
#include "mmi_cuda_index.h"

namespace mminference {
namespace {

static_assert(sizeof(mmi_device_check) == 2 * sizeof(int64_t),
              "mmi_device_check is carried in a 2-element int64 tensor");

// Device storage for an mmi_device_check, and its host copy (waits for the current stream).
at::Tensor new_device_check(const at::Tensor& like) {
  return at::empty({2}, like.options().dtype(at::kLong));
}

mmi_device_check read_device_check(const at::Tensor& check) {
  const at::Tensor host = check.to(at::kCPU);
  mmi_device_check result;
  std::memcpy(&result, host.data_ptr(), sizeof result);
  return result;
}

mmi_device_check* device_check_pointer(const at::Tensor& check) {
  return reinterpret_cast<mmi_device_check*>(check.data_ptr());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> build_vertical_slash_index_cuda(
    const at::Tensor& vertical, const at::Tensor& slash, int64_t seq_q, int64_t seq_k,
    int64_t block_q, int64_t block_k, int64_t max_ranges) {
  check_vertical_slash_lists(vertical, slash, max_ranges);
  const c10::cuda::CUDAGuard guard(vertical.device());
  const at::Tensor v = vertical.contiguous(), s = slash.contiguous();
  const int64_t batch = v.size(0), heads = v.size(1), nv = v.size(2), ns = s.size(2);
  const int64_t nqb = mmi_num_q_blocks(seq_q, block_q);
  const at::TensorOptions int32 = v.options().dtype(at::kInt);
  at::Tensor ranges = at::empty({batch, heads, nqb, max_ranges, 2}, int32);
  at::Tensor range_count = at::empty({batch, heads, nqb}, int32);
  at::Tensor columns = at::empty({batch, heads, nqb, nv}, int32);
  at::Tensor column_count = at::empty({batch, heads, nqb}, int32);
  const at::Tensor check = new_device_check(v);
  mmi_error err;
  raise_on_error(mmi_build_vertical_slash_index_cuda(
                     batch, heads, seq_q, seq_k, block_q, block_k, v.data_ptr<int32_t>(), nv,
                     s.data_ptr<int32_t>(), ns, max_ranges, ranges.data_ptr<int32_t>(),
                     range_count.data_ptr<int32_t>(), columns.data_ptr<int32_t>(),
                     column_count.data_ptr<int32_t>(), device_check_pointer(check),
                     at::cuda::getCurrentCUDAStream().stream(), &err),
                 err);
  const mmi_device_check verdict = read_device_check(check);
  raise_on_error(mmi_vertical_slash_check_result(&verdict, heads, seq_k, &err), err);
  return {ranges, range_count, columns, column_count};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> build_grid_index_cuda(
    const at::Tensor& stride, const at::Tensor& phase, int64_t seq, int64_t block_q,
    int64_t block_k, int64_t span_start, int64_t span_end, int64_t sink, int64_t local,
    bool use_hlines, bool use_vlines) {
  check_grid_parameters(stride, phase);
  const c10::cuda::CUDAGuard guard(stride.device());
  const at::Tensor st = stride.contiguous(), ph = phase.contiguous();
  const int64_t batch = st.size(0), heads = st.size(1);
  const int64_t nqb = mmi_num_q_blocks(seq, block_q);
  const at::TensorOptions int32 = st.options().dtype(at::kInt);
  at::Tensor q_perm = at::empty({batch, heads, seq}, int32);
  at::Tensor k_perm = at::empty({batch, heads, seq}, int32);
  at::Tensor ranges = at::empty({batch, heads, nqb, MMI_GRID_MAX_RANGES, 2}, int32);
  at::Tensor range_count = at::empty({batch, heads, nqb}, int32);
  mmi_grid_options options{};
  options.seq = seq;
  options.block_q = block_q;
  options.block_k = block_k;
  options.span_start = span_start;
  options.span_end = span_end;
  options.sink = sink;
  options.local = local;
  options.use_hlines = use_hlines ? 1 : 0;
  options.use_vlines = use_vlines ? 1 : 0;
  const at::Tensor check = new_device_check(st);
  mmi_error err;
  raise_on_error(mmi_build_grid_index_cuda(batch, heads, &options, st.data_ptr<int32_t>(),
                                           ph.data_ptr<int32_t>(), q_perm.data_ptr<int32_t>(),
                                           k_perm.data_ptr<int32_t>(), ranges.data_ptr<int32_t>(),
                                           range_count.data_ptr<int32_t>(),
                                           device_check_pointer(check),
                                           at::cuda::getCurrentCUDAStream().stream(), &err),
                 err);
  const mmi_device_check verdict = read_device_check(check);
  raise_on_error(mmi_grid_check_result(&verdict, heads, &options, &err), err);
  return {q_perm, k_perm, ranges, range_count};
}

// cp.async reads k in 16-byte rows; a view that is not row-aligned is copied once.
bool rows_aligned(const at::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(0) % 8 == 0 &&
         t.stride(1) % 8 == 0 && t.stride(2) % 8 == 0;
}

// Vertical scores, and slash scores when `with_slash` (otherwise an undefined tensor): without
// them the kernel skips the diagonal sums (mmi_cuda_index.h).
std::tuple<at::Tensor, at::Tensor> estimate_scores_cuda(const at::Tensor& q, const at::Tensor& k,
                                                        int64_t last, int64_t query_end,
                                                        double scale, bool with_slash) {
  mmi_estimate_problem problem = make_estimate_problem(q, k, last, query_end, scale);
  TORCH_CHECK_TYPE(problem.dtype != MMI_DTYPE_FLOAT32,
                   "q: dtype float32 is not supported by the CUDA estimation (float16, bfloat16)");
  TORCH_CHECK_VALUE(last <= MMI_ESTIMATE_CUDA_MAX_LAST, "last must be <= ",
                    static_cast<int>(MMI_ESTIMATE_CUDA_MAX_LAST),
                    " for the CUDA estimation, got ", last);
  const c10::cuda::CUDAGuard guard(q.device());
  const at::Tensor k_rows = rows_aligned(k) ? k : k.contiguous();
  problem.k = k_rows.data_ptr();
  problem.k_stride_b = k_rows.stride(0);
  problem.k_stride_h = k_rows.stride(1);
  problem.k_stride_s = k_rows.stride(2);
  at::Tensor vertical = at::empty({q.size(0), q.size(1), k.size(2)}, q.options().dtype(at::kFloat));
  at::Tensor slash = with_slash ? at::empty_like(vertical) : at::Tensor();
  problem.vertical_score = vertical.data_ptr<float>();
  problem.slash_score = with_slash ? slash.data_ptr<float>() : nullptr;
  const size_t workspace_bytes = mmi_estimate_cuda_workspace_bytes(&problem);
  const at::Tensor workspace =
      at::empty({static_cast<int64_t>(workspace_bytes)}, q.options().dtype(at::kByte));
  mmi_error err;
  raise_on_error(mmi_estimate_vertical_slash_scores_cuda(&problem, workspace.data_ptr(),
                                                         workspace_bytes,
                                                         at::cuda::getCurrentCUDAStream().stream(),
                                                         &err),
                 err);
  return {vertical, slash};
}

std::tuple<at::Tensor, at::Tensor> estimate_vertical_slash_scores_cuda(const at::Tensor& q,
                                                                       const at::Tensor& k,
                                                                       int64_t last,
                                                                       int64_t query_end,
                                                                       double scale) {
  return estimate_scores_cuda(q, k, last, query_end, scale, true);
}

at::Tensor estimate_vertical_scores_cuda(const at::Tensor& q, const at::Tensor& k, int64_t last,
                                         int64_t query_end, double scale) {
  return std::get<0>(estimate_scores_cuda(q, k, last, query_end, scale, false));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> detect_grid_cuda(const at::Tensor& vertical_score,
                                                                int64_t span_start,
                                                                int64_t span_end,
                                                                at::IntArrayRef candidate_strides,
                                                                double tolerance,
                                                                int64_t max_lines) {
  const c10::cuda::CUDAGuard guard(vertical_score.device());
  at::Tensor scores;
  std::vector<int32_t> strides;
  const mmi_grid_detect_problem problem = make_grid_detect_problem(
      vertical_score, span_start, span_end, candidate_strides, tolerance, max_lines, scores,
      strides);
  const int64_t batch = scores.size(0), heads = scores.size(1);
  at::Tensor stride = at::empty({batch, heads}, scores.options().dtype(at::kInt));
  at::Tensor phase = at::empty({batch, heads}, scores.options().dtype(at::kInt));
  at::Tensor lift = at::empty({batch, heads}, scores.options());
  const size_t workspace_bytes = mmi_detect_grid_cuda_workspace_bytes(&problem);
  const at::Tensor workspace =
      at::empty({static_cast<int64_t>(workspace_bytes)}, scores.options().dtype(at::kByte));
  mmi_error err;
  raise_on_error(mmi_detect_grid_cuda(&problem, stride.data_ptr<int32_t>(),
                                      phase.data_ptr<int32_t>(), lift.data_ptr<float>(),
                                      workspace.data_ptr(), workspace_bytes,
                                      at::cuda::getCurrentCUDAStream().stream(), &err),
                 err);
  return {stride, phase, lift};
}

at::Tensor grid_lift_cuda(const at::Tensor& vertical_score, int64_t span_start, int64_t span_end,
                          const at::Tensor& stride, const at::Tensor& phase) {
  const c10::cuda::CUDAGuard guard(vertical_score.device());
  at::Tensor scores;
  const mmi_grid_scores view = make_grid_scores(vertical_score, span_start, span_end, scores);
  check_grid_lift_parameters(scores, stride, phase);
  const at::Tensor st = stride.contiguous(), ph = phase.contiguous();
  at::Tensor lift = at::empty({scores.size(0), scores.size(1)}, scores.options());
  const at::Tensor check = new_device_check(st);
  mmi_error err;
  raise_on_error(mmi_grid_lift_cuda(&view, st.data_ptr<int32_t>(), ph.data_ptr<int32_t>(),
                                    lift.data_ptr<float>(), device_check_pointer(check),
                                    at::cuda::getCurrentCUDAStream().stream(), &err),
                 err);
  const mmi_device_check verdict = read_device_check(check);
  raise_on_error(mmi_grid_lift_check_result(&verdict, view.heads, &view, &err), err);
  return lift;
}

}  // namespace

TORCH_LIBRARY_IMPL(mminference, CUDA, m) {
  m.impl("build_vertical_slash_index", &build_vertical_slash_index_cuda);
  m.impl("build_grid_index", &build_grid_index_cuda);
  m.impl("estimate_vertical_slash_scores", &estimate_vertical_slash_scores_cuda);
  m.impl("estimate_vertical_scores", &estimate_vertical_scores_cuda);
  m.impl("detect_grid", &detect_grid_cuda);
  m.impl("grid_lift", &grid_lift_cuda);
}

}  // namespace mminference
