// mminference::search_score: tensor validation shared by every backend (search_problem.h) and the
// CPU dispatch over the C core's mmi_search_score_cpu.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "search_problem.h"
#include "tensor_checks.h"

namespace mminference {

namespace {

at::Tensor checked_contiguous(const at::Tensor& t, const char* name, at::ScalarType dtype,
                              int64_t rank, const char* dims, const at::Device& device) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, ": dtype must be ", dtype, ", got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == rank, name, ": expected ", rank, " dims ", dims, ", got shape ",
                    t.sizes());
  TORCH_CHECK_VALUE(t.device() == device, name, ": expected device ", device, ", got ", t.device());
  return t.contiguous();
}

}  // namespace

void make_search_problem(const at::Tensor& probs, const at::Tensor& row_pos,
                         const at::Tensor& modality, const std::optional<at::Tensor>& value,
                         const at::Tensor& kv_ranges, const at::Tensor& kv_range_count,
                         const at::Tensor& kv_columns, const at::Tensor& kv_column_count,
                         const std::optional<at::Tensor>& q_perm,
                         const std::optional<at::Tensor>& k_perm, int64_t block_q, int64_t block_k,
                         int64_t num_modalities, SearchInputs& in, SearchOutputs& out,
                         mmi_search_problem& p) {
  const at::Device device = probs.device();
  in.probs = checked_contiguous(probs, "probs", at::kFloat, 3, "(heads, rows, seq)", device);
  const int64_t heads = probs.size(0), rows = probs.size(1), seq = probs.size(2);
  TORCH_CHECK_VALUE(heads >= 1 && seq >= 1, "probs: heads and seq must be >= 1, got shape ",
                    probs.sizes());
  in.row_pos = checked_contiguous(row_pos, "row_pos", at::kInt, 1, "(rows,)", device);
  TORCH_CHECK_VALUE(row_pos.size(0) == rows, "row_pos: ", row_pos.size(0),
                    " entries, but probs has ", rows, " rows");
  in.modality = checked_contiguous(modality, "modality", at::kInt, 1, "(seq,)", device);
  TORCH_CHECK_VALUE(modality.size(0) == seq, "modality: ", modality.size(0),
                    " entries, but probs has seq ", seq);
  TORCH_CHECK_VALUE(num_modalities >= 1 && num_modalities <= MMI_SEARCH_MAX_MODALITIES,
                    "num_modalities must be in [1, ", MMI_SEARCH_MAX_MODALITIES, "], got ",
                    num_modalities);
  TORCH_CHECK_VALUE(block_q >= 1 && block_q <= 4096, "block_q must be in [1, 4096], got ", block_q);
  int64_t kv_heads = 1, head_dim = 0;
  if (value.has_value()) {
    in.value = checked_contiguous(*value, "value", at::kFloat, 3, "(kv_heads, seq, head_dim)", device);
    kv_heads = in.value.size(0);
    head_dim = in.value.size(2);
    TORCH_CHECK_VALUE(kv_heads >= 1 && heads % kv_heads == 0, "value: ", kv_heads,
                      " heads do not divide the ", heads, " heads of probs");
    TORCH_CHECK_VALUE(in.value.size(1) == seq, "value: seq ", in.value.size(1),
                      " differs from probs' ", seq);
  }
  const int64_t nqb = (seq + block_q - 1) / block_q;
  const int64_t max_ranges = kv_ranges.dim() == 5 ? kv_ranges.size(3) : 0;
  const int64_t max_columns = kv_columns.dim() == 4 ? kv_columns.size(3) : 0;
  in.ranges = kv_ranges.contiguous();
  in.range_count = kv_range_count.contiguous();
  in.columns = kv_columns.contiguous();
  in.column_count = kv_column_count.contiguous();
  auto st = check_index_tensor(in.ranges, "kv_ranges", device, 1, heads, {nqb, max_ranges, 2});
  p.index.kv_ranges = max_ranges > 0 ? in.ranges.data_ptr<int32_t>() : nullptr;
  p.index.kv_ranges_stride_b = 0, p.index.kv_ranges_stride_h = st.second;
  st = check_index_tensor(in.range_count, "kv_range_count", device, 1, heads, {nqb});
  p.index.kv_range_count = in.range_count.data_ptr<int32_t>();
  p.index.kv_range_count_stride_b = 0, p.index.kv_range_count_stride_h = st.second;
  st = check_index_tensor(in.columns, "kv_columns", device, 1, heads, {nqb, max_columns});
  p.index.kv_columns = max_columns > 0 ? in.columns.data_ptr<int32_t>() : nullptr;
  p.index.kv_columns_stride_b = 0, p.index.kv_columns_stride_h = st.second;
  st = check_index_tensor(in.column_count, "kv_column_count", device, 1, heads, {nqb});
  p.index.kv_column_count = in.column_count.data_ptr<int32_t>();
  p.index.kv_column_count_stride_b = 0, p.index.kv_column_count_stride_h = st.second;
  p.index.q_perm = nullptr, p.index.k_perm = nullptr;
  if (q_perm.has_value()) {
    in.q_perm = q_perm->contiguous();
    st = check_index_tensor(in.q_perm, "q_perm", device, 1, heads, {seq});
    p.index.q_perm = in.q_perm.data_ptr<int32_t>();
    p.index.q_perm_stride_b = 0, p.index.q_perm_stride_h = st.second;
  }
  if (k_perm.has_value()) {
    in.k_perm = k_perm->contiguous();
    st = check_index_tensor(in.k_perm, "k_perm", device, 1, heads, {seq});
    p.index.k_perm = in.k_perm.data_ptr<int32_t>();
    p.index.k_perm_stride_b = 0, p.index.k_perm_stride_h = st.second;
  }
  p.index.block_q = block_q;
  p.index.num_q_blocks = nqb;
  p.index.max_ranges = max_ranges;
  p.index.max_columns = max_columns;

  const at::TensorOptions f32 = in.probs.options().dtype(at::kFloat);
  out.kept_mass = at::zeros({heads, rows, num_modalities}, f32);
  out.kept_out = at::zeros({heads, rows, head_dim}, f32);
  out.block_tiles = at::zeros({heads, nqb}, f32.dtype(at::kInt));

  p.heads = heads;
  p.kv_heads = kv_heads;
  p.rows = rows;
  p.seq = seq;
  p.num_modalities = num_modalities;
  p.block_k = block_k;
  p.head_dim = head_dim;
  p.probs = rows > 0 ? in.probs.data_ptr<float>() : nullptr;
  p.row_pos = rows > 0 ? in.row_pos.data_ptr<int32_t>() : nullptr;
  p.modality = in.modality.data_ptr<int32_t>();
  p.value = value.has_value() ? in.value.data_ptr<float>() : nullptr;
  p.kept_mass = rows > 0 ? out.kept_mass.data_ptr<float>() : nullptr;
  p.kept_out = value.has_value() ? out.kept_out.data_ptr<float>() : nullptr;
  p.block_tiles = out.block_tiles.data_ptr<int32_t>();
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> search_score_cpu(
    const at::Tensor& probs, const at::Tensor& row_pos, const at::Tensor& modality,
    const std::optional<at::Tensor>& value, const at::Tensor& kv_ranges,
    const at::Tensor& kv_range_count, const at::Tensor& kv_columns,
    const at::Tensor& kv_column_count, const std::optional<at::Tensor>& q_perm,
    const std::optional<at::Tensor>& k_perm, int64_t block_q, int64_t block_k,
    int64_t num_modalities) {
  SearchInputs inputs;
  SearchOutputs outputs;
  mmi_search_problem problem{};
  make_search_problem(probs, row_pos, modality, value, kv_ranges, kv_range_count, kv_columns,
                      kv_column_count, q_perm, k_perm, block_q, block_k, num_modalities, inputs,
                      outputs, problem);
  mmi_error err;
  raise_on_error(mmi_search_score_cpu(&problem, at::get_num_threads(), &err), err);
  return {outputs.kept_mass, outputs.kept_out, outputs.block_tiles};
}

}  // namespace

TORCH_LIBRARY_IMPL(mminference, CPU, m) { m.impl("search_score", &search_score_cpu); }

}  // namespace mminference
