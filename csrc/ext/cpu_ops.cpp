// CPU dispatch of the mminference ops: validate tensors, call the C core, raise its errors.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "tensor_checks.h"

namespace mminference {
namespace {

std::tuple<at::Tensor, at::Tensor> sparse_attention_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_ranges,
    const at::Tensor& kv_range_count, const at::Tensor& kv_columns,
    const at::Tensor& kv_column_count, const std::optional<at::Tensor>& q_perm,
    const std::optional<at::Tensor>& k_perm, int64_t block_q, bool causal, double scale) {
  const auto [out, lse] = empty_attention_outputs(q);
  const mmi_attention_problem problem =
      make_attention_problem(q, k, v, kv_ranges, kv_range_count, kv_columns, kv_column_count,
                             q_perm, k_perm, block_q, causal, scale, out, lse);
  mmi_error err;
  raise_on_error(mmi_sparse_attention_forward_cpu(&problem, at::get_num_threads(), &err), err);
  return {out, lse};
}

at::TensorOptions int32_cpu() { return at::TensorOptions().dtype(at::kInt).device(at::kCPU); }

std::tuple<at::Tensor, at::Tensor> build_a_shape_index_cpu(int64_t seq_q, int64_t seq_k,
                                                           int64_t block_q, int64_t block_k,
                                                           int64_t sink, int64_t local) {
  TORCH_CHECK_VALUE(seq_q >= 1, "seq_q must be >= 1, got ", seq_q);
  TORCH_CHECK_VALUE(block_q >= 1, "block_q must be >= 1, got ", block_q);
  const int64_t nqb = mmi_num_q_blocks(seq_q, block_q);
  at::Tensor ranges = at::empty({1, 1, nqb, MMI_A_SHAPE_MAX_RANGES, 2}, int32_cpu());
  at::Tensor count = at::empty({1, 1, nqb}, int32_cpu());
  mmi_error err;
  raise_on_error(mmi_build_a_shape_index(seq_q, seq_k, block_q, block_k, sink, local,
                                         ranges.data_ptr<int32_t>(), count.data_ptr<int32_t>(),
                                         &err),
                 err);
  return {ranges, count};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> build_vertical_slash_index_cpu(
    const at::Tensor& vertical, const at::Tensor& slash, int64_t seq_q, int64_t seq_k,
    int64_t block_q, int64_t block_k, int64_t max_ranges) {
  check_vertical_slash_lists(vertical, slash, max_ranges);
  const at::Tensor v = vertical.contiguous(), s = slash.contiguous();
  const int64_t batch = v.size(0), heads = v.size(1), nv = v.size(2), ns = s.size(2);
  const int64_t nqb = mmi_num_q_blocks(seq_q, block_q);
  at::Tensor ranges = at::empty({batch, heads, nqb, max_ranges, 2}, int32_cpu());
  at::Tensor range_count = at::empty({batch, heads, nqb}, int32_cpu());
  at::Tensor columns = at::empty({batch, heads, nqb, nv}, int32_cpu());
  at::Tensor column_count = at::empty({batch, heads, nqb}, int32_cpu());
  mmi_error err;
  raise_on_error(mmi_build_vertical_slash_index(
                     batch, heads, seq_q, seq_k, block_q, block_k, v.data_ptr<int32_t>(), nv,
                     s.data_ptr<int32_t>(), ns, max_ranges, ranges.data_ptr<int32_t>(),
                     range_count.data_ptr<int32_t>(), columns.data_ptr<int32_t>(),
                     column_count.data_ptr<int32_t>(), &err),
                 err);
  return {ranges, range_count, columns, column_count};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> build_grid_index_cpu(
    const at::Tensor& stride, const at::Tensor& phase, int64_t seq, int64_t block_q,
    int64_t block_k, int64_t span_start, int64_t span_end, int64_t sink, int64_t local,
    bool use_hlines, bool use_vlines) {
  check_grid_parameters(stride, phase);
  const at::Tensor st = stride.contiguous(), ph = phase.contiguous();
  const int64_t batch = st.size(0), heads = st.size(1);
  const int64_t nqb = mmi_num_q_blocks(seq, block_q);
  at::Tensor q_perm = at::empty({batch, heads, seq}, int32_cpu());
  at::Tensor k_perm = at::empty({batch, heads, seq}, int32_cpu());
  at::Tensor ranges = at::empty({batch, heads, nqb, MMI_GRID_MAX_RANGES, 2}, int32_cpu());
  at::Tensor range_count = at::empty({batch, heads, nqb}, int32_cpu());
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
  mmi_error err;
  raise_on_error(mmi_build_grid_index(batch, heads, &options, st.data_ptr<int32_t>(),
                                      ph.data_ptr<int32_t>(), q_perm.data_ptr<int32_t>(),
                                      k_perm.data_ptr<int32_t>(), ranges.data_ptr<int32_t>(),
                                      range_count.data_ptr<int32_t>(), &err),
                 err);
  return {q_perm, k_perm, ranges, range_count};
}

// Vertical scores, and slash scores when `with_slash` (otherwise an undefined tensor).
std::tuple<at::Tensor, at::Tensor> estimate_scores_cpu(const at::Tensor& q, const at::Tensor& k,
                                                       int64_t last, int64_t query_end,
                                                       double scale, bool with_slash) {
  const mmi_estimate_problem problem = make_estimate_problem(q, k, last, query_end, scale);
  at::Tensor vertical = at::empty({q.size(0), q.size(1), k.size(2)}, q.options().dtype(at::kFloat));
  at::Tensor slash = with_slash ? at::empty_like(vertical) : at::Tensor();
  mmi_estimate_problem with_outputs = problem;
  with_outputs.vertical_score = vertical.data_ptr<float>();
  with_outputs.slash_score = with_slash ? slash.data_ptr<float>() : nullptr;
  mmi_error err;
  raise_on_error(
      mmi_estimate_vertical_slash_scores_cpu(&with_outputs, at::get_num_threads(), &err), err);
  return {vertical, slash};
}

std::tuple<at::Tensor, at::Tensor> estimate_vertical_slash_scores_cpu(const at::Tensor& q,
                                                                      const at::Tensor& k,
                                                                      int64_t last,
                                                                      int64_t query_end,
                                                                      double scale) {
  return estimate_scores_cpu(q, k, last, query_end, scale, true);
}

at::Tensor estimate_vertical_scores_cpu(const at::Tensor& q, const at::Tensor& k, int64_t last,
                                        int64_t query_end, double scale) {
  return std::get<0>(estimate_scores_cpu(q, k, last, query_end, scale, false));
}

std::tuple<at::Tensor, at::Tensor> build_modality_permutation_cpu(const at::Tensor& modality,
                                                                  int64_t num_modalities) {
  TORCH_CHECK_TYPE(modality.scalar_type() == at::kInt, "modality: dtype must be int32, got ",
                   modality.scalar_type());
  TORCH_CHECK_VALUE(modality.dim() == 2, "modality: expected 2 dims (batch, seq), got shape ",
                    modality.sizes());
  TORCH_CHECK_VALUE(modality.size(0) >= 1 && modality.size(1) >= 1,
                    "modality: batch and seq must be >= 1, got shape ", modality.sizes());
  TORCH_CHECK_VALUE(num_modalities >= 1 && num_modalities <= 256,
                    "num_modalities must be in [1, 256], got ", num_modalities);
  const at::Tensor mod = modality.contiguous();
  at::Tensor perm = at::empty({mod.size(0), mod.size(1)}, int32_cpu());
  at::Tensor offsets = at::empty({mod.size(0), num_modalities + 1}, int32_cpu());
  mmi_error err;
  raise_on_error(mmi_build_modality_permutation(mod.size(0), mod.size(1), mod.data_ptr<int32_t>(),
                                                num_modalities, perm.data_ptr<int32_t>(),
                                                offsets.data_ptr<int32_t>(), &err),
                 err);
  return {perm, offsets};
}

// dtype, device and rank of a per-(batch, head) input, checked before the head count is known.
void check_boundary_input(const at::Tensor& t, const char* name, int64_t rank, const char* dims) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kInt, name, ": dtype must be int32, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, ": expected a CPU tensor, got ", t.device());
  TORCH_CHECK_VALUE(t.dim() == rank, name, ": expected ", rank, " dims ", dims, ", got shape ",
                    t.sizes());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
build_boundary_index_cpu(const at::Tensor& modality, const at::Tensor& grid_stride,
                         const at::Tensor& grid_phase, const at::Tensor& pair_pattern,
                         const at::Tensor& vertical, const at::Tensor& slash,
                         int64_t num_modalities, int64_t block_q, int64_t block_k,
                         int64_t max_ranges, int64_t max_columns) {
  check_boundary_input(modality, "modality", 2, "(batch, seq)");
  TORCH_CHECK_VALUE(modality.size(0) >= 1 && modality.size(1) >= 1,
                    "modality: batch and seq must be >= 1, got shape ", modality.sizes());
  TORCH_CHECK_VALUE(num_modalities >= 1 && num_modalities <= MMI_BOUNDARY_MAX_MODALITIES,
                    "num_modalities must be in [1, ", MMI_BOUNDARY_MAX_MODALITIES, "], got ",
                    num_modalities);
  check_boundary_input(grid_stride, "grid_stride", 3, "(batch, heads, modalities)");
  check_boundary_input(grid_phase, "grid_phase", 3, "(batch, heads, modalities)");
  check_boundary_input(pair_pattern, "pair_pattern", 5,
                       "(batch, heads, query modalities, key modalities, 4)");
  check_boundary_input(vertical, "vertical", 4, "(batch, heads, modalities, num_vertical)");
  check_boundary_input(slash, "slash", 4, "(batch, heads, modalities, num_slash)");
  TORCH_CHECK_VALUE(block_q >= 1, "block_q must be >= 1, got ", block_q);
  // max_ranges == 0 (with max_columns == 0): count mode, the counts are the exact capacities.
  const bool count_mode = max_ranges == 0;
  TORCH_CHECK_VALUE(max_ranges >= 1 || (count_mode && max_columns == 0),
                    "max_ranges must be >= 1 (or 0 with max_columns 0: count the capacities), got ",
                    max_ranges, " with max_columns ", max_columns);
  TORCH_CHECK_VALUE(max_columns >= 0, "max_columns must be >= 0, got ", max_columns);

  const int64_t batch = modality.size(0), seq = modality.size(1), M = num_modalities;
  // Heads: the largest head dim of the inputs; each one has it or 1 (broadcast).
  int64_t heads = 1;
  for (const at::Tensor* t : {&grid_stride, &grid_phase, &pair_pattern, &vertical, &slash})
    heads = std::max<int64_t>(heads, t->size(1));
  const at::Tensor mod = modality.contiguous(), st = grid_stride.contiguous(),
                   ph = grid_phase.contiguous(), pat = pair_pattern.contiguous(),
                   ve = vertical.contiguous(), sl = slash.contiguous();
  const at::Device cpu(at::kCPU);
  const int64_t nv = ve.size(3), ns = sl.size(3);
  mmi_boundary_problem p{};
  p.batch = batch;
  p.heads = heads;
  p.seq = seq;
  p.num_modalities = M;
  p.block_q = block_q;
  p.block_k = block_k;
  p.max_ranges = max_ranges;
  p.max_columns = max_columns;
  p.modality = mod.data_ptr<int32_t>();
  auto strides = check_index_tensor(st, "grid_stride", cpu, batch, heads, {M});
  p.grid_stride = st.data_ptr<int32_t>();
  p.grid_stride_stride_b = strides.first, p.grid_stride_stride_h = strides.second;
  strides = check_index_tensor(ph, "grid_phase", cpu, batch, heads, {M});
  p.grid_phase = ph.data_ptr<int32_t>();
  p.grid_phase_stride_b = strides.first, p.grid_phase_stride_h = strides.second;
  strides = check_index_tensor(pat, "pair_pattern", cpu, batch, heads,
                               {M, M, MMI_PAIR_PATTERN_FIELDS});
  p.pair_pattern = pat.data_ptr<int32_t>();
  p.pair_pattern_stride_b = strides.first, p.pair_pattern_stride_h = strides.second;
  strides = check_index_tensor(ve, "vertical", cpu, batch, heads, {M, nv});
  p.vertical = nv > 0 ? ve.data_ptr<int32_t>() : nullptr;
  p.num_vertical = nv;
  p.vertical_stride_b = strides.first, p.vertical_stride_h = strides.second;
  strides = check_index_tensor(sl, "slash", cpu, batch, heads, {M, ns});
  p.slash = ns > 0 ? sl.data_ptr<int32_t>() : nullptr;
  p.num_slash = ns;
  p.slash_stride_b = strides.first, p.slash_stride_h = strides.second;

  const int64_t nqb = mmi_num_q_blocks(seq, block_q);
  at::Tensor q_perm = at::empty({batch, heads, seq}, int32_cpu());
  at::Tensor k_perm = at::empty({batch, heads, seq}, int32_cpu());
  at::Tensor ranges = at::empty({batch, heads, nqb, max_ranges, 2}, int32_cpu());
  at::Tensor range_count = at::empty({batch, heads, nqb}, int32_cpu());
  at::Tensor columns = at::empty({batch, heads, nqb, max_columns}, int32_cpu());
  at::Tensor column_count = at::empty({batch, heads, nqb}, int32_cpu());
  at::Tensor offsets = at::empty({batch, heads, 2 * M + 1}, int32_cpu());
  mmi_boundary_output o{};
  o.q_perm = q_perm.data_ptr<int32_t>();
  o.k_perm = k_perm.data_ptr<int32_t>();
  o.kv_ranges = count_mode ? nullptr : ranges.data_ptr<int32_t>();
  o.kv_range_count = range_count.data_ptr<int32_t>();
  o.kv_columns = max_columns > 0 ? columns.data_ptr<int32_t>() : nullptr;
  o.kv_column_count = column_count.data_ptr<int32_t>();
  o.class_offsets = offsets.data_ptr<int32_t>();
  mmi_error err;
  raise_on_error(mmi_build_boundary_index(&p, &o, at::get_num_threads(), &err), err);
  return {q_perm, k_perm, ranges, range_count, columns, column_count, offsets};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> detect_grid_cpu(const at::Tensor& vertical_score,
                                                               int64_t span_start,
                                                               int64_t span_end,
                                                               at::IntArrayRef candidate_strides,
                                                               double tolerance,
                                                               int64_t max_lines) {
  at::Tensor scores;
  std::vector<int32_t> strides;
  const mmi_grid_detect_problem problem = make_grid_detect_problem(
      vertical_score, span_start, span_end, candidate_strides, tolerance, max_lines, scores,
      strides);
  const int64_t batch = scores.size(0), heads = scores.size(1);
  at::Tensor stride = at::empty({batch, heads}, int32_cpu());
  at::Tensor phase = at::empty({batch, heads}, int32_cpu());
  at::Tensor lift = at::empty({batch, heads}, scores.options());
  mmi_error err;
  raise_on_error(mmi_detect_grid(&problem, stride.data_ptr<int32_t>(), phase.data_ptr<int32_t>(),
                                 lift.data_ptr<float>(), at::get_num_threads(), &err),
                 err);
  return {stride, phase, lift};
}

at::Tensor grid_lift_cpu(const at::Tensor& vertical_score, int64_t span_start, int64_t span_end,
                         const at::Tensor& stride, const at::Tensor& phase) {
  at::Tensor scores;
  const mmi_grid_scores view = make_grid_scores(vertical_score, span_start, span_end, scores);
  check_grid_lift_parameters(scores, stride, phase);
  const at::Tensor st = stride.contiguous(), ph = phase.contiguous();
  at::Tensor lift = at::empty({scores.size(0), scores.size(1)}, scores.options());
  mmi_error err;
  raise_on_error(mmi_grid_lift(&view, st.data_ptr<int32_t>(), ph.data_ptr<int32_t>(),
                               lift.data_ptr<float>(), at::get_num_threads(), &err),
                 err);
  return lift;
}

}  // namespace

TORCH_LIBRARY_IMPL(mminference, CPU, m) {
  m.impl("sparse_attention", &sparse_attention_cpu);
  m.impl("build_vertical_slash_index", &build_vertical_slash_index_cpu);
  m.impl("build_grid_index", &build_grid_index_cpu);
  m.impl("estimate_vertical_slash_scores", &estimate_vertical_slash_scores_cpu);
  m.impl("estimate_vertical_scores", &estimate_vertical_scores_cpu);
  m.impl("build_modality_permutation", &build_modality_permutation_cpu);
  m.impl("build_boundary_index", &build_boundary_index_cpu);
  m.impl("detect_grid", &detect_grid_cpu);
  m.impl("grid_lift", &grid_lift_cpu);
}

// No tensor arguments, so no backend key: the composite kernel always builds on the CPU.
TORCH_LIBRARY_IMPL(mminference, CompositeExplicitAutograd, m) {
  m.impl("build_a_shape_index", &build_a_shape_index_cpu);
}

}  // namespace mminference
