#include "tensor_checks.h"

#include <c10/util/Exception.h>

#include <string>

namespace mminference {

void raise_on_error(int status, const mmi_error& err) {
  if (status == MMI_OK) return;
  const std::string message = std::string(err.message) + " (" + mmi_strerror(status) + ")";
  switch (status) {
    case MMI_ERR_INVALID_SHAPE:
    case MMI_ERR_INVALID_VALUE:
    case MMI_ERR_UNSORTED:
    case MMI_ERR_UNSUPPORTED:
      TORCH_CHECK_VALUE(false, message);
    case MMI_ERR_OUT_OF_MEMORY:
      TORCH_CHECK_WITH(OutOfMemoryError, false, message);
    default:
      TORCH_CHECK(false, message);
  }
}

mmi_dtype attention_dtype(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK_TYPE(k.scalar_type() == q.scalar_type(), "k: dtype ", k.scalar_type(),
                   " differs from q's ", q.scalar_type());
  TORCH_CHECK_TYPE(v.scalar_type() == q.scalar_type(), "v: dtype ", v.scalar_type(),
                   " differs from q's ", q.scalar_type());
  switch (q.scalar_type()) {
    case at::kFloat:
      return MMI_DTYPE_FLOAT32;
    case at::kHalf:
      return MMI_DTYPE_FLOAT16;
    case at::kBFloat16:
      return MMI_DTYPE_BFLOAT16;
    default:
      TORCH_CHECK_TYPE(false, "q: dtype ", q.scalar_type(),
                       " is not supported (float32, float16, bfloat16)");
  }
}

std::pair<int64_t, int64_t> check_index_tensor(const at::Tensor& t, const char* name,
                                               const at::Device& device, int64_t batch,
                                               int64_t heads, at::IntArrayRef trailing) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kInt, name, ": dtype must be int32, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == device, name, ": expected device ", device, ", got ",
                    t.device());
  const int64_t rank = 2 + static_cast<int64_t>(trailing.size());
  TORCH_CHECK_VALUE(t.dim() == rank, name, ": expected ", rank, " dims, got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.size(0) == batch || t.size(0) == 1, name, ": dim 0 must be ", batch,
                    " or 1, got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.size(1) == heads || t.size(1) == 1, name, ": dim 1 must be ", heads,
                    " or 1, got shape ", t.sizes());
  int64_t expected_stride = 1;
  for (int64_t d = rank - 1; d >= 2; --d) {
    TORCH_CHECK_VALUE(t.size(d) == trailing[d - 2], name, ": dim ", d, " must be ",
                      trailing[d - 2], ", got shape ", t.sizes());
    TORCH_CHECK_VALUE(t.numel() == 0 || t.size(d) <= 1 || t.stride(d) == expected_stride, name,
                      ": trailing dims must be contiguous, got strides ", t.strides());
    expected_stride *= t.size(d);
  }
  return {t.size(0) == 1 ? 0 : t.stride(0), t.size(1) == 1 ? 0 : t.stride(1)};
}

static void check_qk(const at::Tensor& q, const at::Tensor& k) {
  TORCH_CHECK_VALUE(q.dim() == 4, "q: expected 4 dims (batch, heads, seq, head_dim), got shape ",
                    q.sizes());
  TORCH_CHECK_VALUE(k.dim() == 4, "k: expected 4 dims (batch, heads, seq, head_dim), got shape ",
                    k.sizes());
  TORCH_CHECK_VALUE(k.device() == q.device(), "k: device ", k.device(), " differs from q's ",
                    q.device());
  TORCH_CHECK_VALUE(k.size(0) == q.size(0), "k: batch ", k.size(0), " differs from q's ",
                    q.size(0));
  TORCH_CHECK_VALUE(k.size(3) == q.size(3), "k: head_dim ", k.size(3), " differs from q's ",
                    q.size(3));
  TORCH_CHECK_VALUE(q.size(0) > 0, "q: batch must be > 0");
  TORCH_CHECK_VALUE(q.size(2) > 0, "q: sequence length must be > 0");
  TORCH_CHECK_VALUE(k.size(2) > 0, "k: sequence length must be > 0");
  TORCH_CHECK_VALUE(q.stride(3) == 1, "q: head_dim must be contiguous (stride 1), got strides ",
                    q.strides());
  TORCH_CHECK_VALUE(k.stride(3) == 1, "k: head_dim must be contiguous (stride 1), got strides ",
                    k.strides());
}

// Sizes, q/k pointers and strides shared by mmi_attention_problem and mmi_estimate_problem.
template <class Problem>
static void fill_qk_fields(Problem& p, const at::Tensor& q, const at::Tensor& k) {
  p.batch = q.size(0);
  p.q_heads = q.size(1);
  p.kv_heads = k.size(1);
  p.seq_q = q.size(2);
  p.seq_k = k.size(2);
  p.head_dim = q.size(3);
  p.q = q.data_ptr();
  p.q_stride_b = q.stride(0), p.q_stride_h = q.stride(1), p.q_stride_s = q.stride(2);
  p.k = k.data_ptr();
  p.k_stride_b = k.stride(0), p.k_stride_h = k.stride(1), p.k_stride_s = k.stride(2);
}

static void check_qkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  check_qk(q, k);
  TORCH_CHECK_VALUE(v.dim() == 4, "v: expected 4 dims (batch, heads, seq, head_dim), got shape ",
                    v.sizes());
  TORCH_CHECK_VALUE(v.device() == q.device(), "v: device ", v.device(), " differs from q's ",
                    q.device());
  TORCH_CHECK_VALUE(k.sizes() == v.sizes(), "v: shape ", v.sizes(), " differs from k's ",
                    k.sizes());
  TORCH_CHECK_VALUE(v.stride(3) == 1, "v: head_dim must be contiguous (stride 1), got strides ",
                    v.strides());
}

mmi_attention_problem make_attention_problem(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_ranges,
    const at::Tensor& kv_range_count, const at::Tensor& kv_columns,
    const at::Tensor& kv_column_count, const std::optional<at::Tensor>& q_perm,
    const std::optional<at::Tensor>& k_perm, int64_t block_q, bool causal, double scale,
    const at::Tensor& out, const at::Tensor& lse) {
  check_qkv(q, k, v);
  mmi_attention_problem p{};
  p.dtype = attention_dtype(q, k, v);
  fill_qk_fields(p, q, k);
  TORCH_CHECK_VALUE(p.q_heads % p.kv_heads == 0, "k: query heads (", p.q_heads,
                    ") must be a multiple of key/value heads (", p.kv_heads, ")");
  TORCH_CHECK_VALUE(mmi_head_dim_supported(p.head_dim), "q: head_dim ", p.head_dim,
                    " is not supported (64, 80, 96, 128)");
  TORCH_CHECK_VALUE(block_q >= 1 && block_q <= 4096, "block_q must be in [1, 4096], got ",
                    block_q);

  p.v = v.data_ptr();
  p.v_stride_b = v.stride(0), p.v_stride_h = v.stride(1), p.v_stride_s = v.stride(2);
  p.out = out.data_ptr();
  p.out_stride_b = out.stride(0), p.out_stride_h = out.stride(1), p.out_stride_s = out.stride(2);
  p.lse = lse.data_ptr<float>();
  p.scale = static_cast<float>(scale);
  p.causal = causal ? 1 : 0;

  const int64_t nqb = (p.seq_q + block_q - 1) / block_q;
  TORCH_CHECK_VALUE(kv_ranges.dim() == 5, "kv_ranges: expected 5 dims (batch, heads, q_blocks, ",
                    "ranges, 2), got shape ", kv_ranges.sizes());
  TORCH_CHECK_VALUE(kv_columns.dim() == 4, "kv_columns: expected 4 dims (batch, heads, q_blocks, ",
                    "columns), got shape ", kv_columns.sizes());
  const int64_t max_ranges = kv_ranges.size(3);
  const int64_t max_columns = kv_columns.size(3);
  const at::Device device = q.device();
  mmi_sparse_index& ix = p.index;
  ix.block_q = block_q;
  ix.num_q_blocks = nqb;
  ix.max_ranges = max_ranges;
  ix.max_columns = max_columns;
  auto strides = check_index_tensor(kv_ranges, "kv_ranges", device, p.batch, p.q_heads,
                                    {nqb, max_ranges, 2});
  ix.kv_ranges = kv_ranges.data_ptr<int32_t>();
  ix.kv_ranges_stride_b = strides.first, ix.kv_ranges_stride_h = strides.second;
  strides = check_index_tensor(kv_range_count, "kv_range_count", device, p.batch, p.q_heads, {nqb});
  ix.kv_range_count = kv_range_count.data_ptr<int32_t>();
  ix.kv_range_count_stride_b = strides.first, ix.kv_range_count_stride_h = strides.second;
  strides = check_index_tensor(kv_columns, "kv_columns", device, p.batch, p.q_heads,
                               {nqb, max_columns});
  ix.kv_columns = kv_columns.data_ptr<int32_t>();
  ix.kv_columns_stride_b = strides.first, ix.kv_columns_stride_h = strides.second;
  strides = check_index_tensor(kv_column_count, "kv_column_count", device, p.batch, p.q_heads,
                               {nqb});
  ix.kv_column_count = kv_column_count.data_ptr<int32_t>();
  ix.kv_column_count_stride_b = strides.first, ix.kv_column_count_stride_h = strides.second;
  if (q_perm.has_value()) {
    strides = check_index_tensor(*q_perm, "q_perm", device, p.batch, p.q_heads, {p.seq_q});
    ix.q_perm = q_perm->data_ptr<int32_t>();
    ix.q_perm_stride_b = strides.first, ix.q_perm_stride_h = strides.second;
  }
  if (k_perm.has_value()) {
    strides = check_index_tensor(*k_perm, "k_perm", device, p.batch, p.q_heads, {p.seq_k});
    ix.k_perm = k_perm->data_ptr<int32_t>();
    ix.k_perm_stride_b = strides.first, ix.k_perm_stride_h = strides.second;
  }
  return p;
}

mmi_estimate_problem make_estimate_problem(const at::Tensor& q, const at::Tensor& k, int64_t last,
                                           int64_t query_end, double scale) {
  check_qk(q, k);
  mmi_estimate_problem p{};
  p.dtype = attention_dtype(q, k, k);
  fill_qk_fields(p, q, k);
  p.last = last;
  p.query_end = query_end;
  p.scale = static_cast<float>(scale);
  p.vertical_score = nullptr;
  p.slash_score = nullptr;
  mmi_error err;
  raise_on_error(mmi_estimate_check(&p, &err), err);
  return p;
}

static void check_head_list(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kInt, name, ": dtype must be int32, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 3, name, ": expected 3 dims (batch, heads, n), got shape ",
                    t.sizes());
}

void check_vertical_slash_lists(const at::Tensor& vertical, const at::Tensor& slash,
                                int64_t max_ranges) {
  check_head_list(vertical, "vertical");
  check_head_list(slash, "slash");
  TORCH_CHECK_VALUE(slash.device() == vertical.device(), "slash: device ", slash.device(),
                    " differs from vertical's ", vertical.device());
  TORCH_CHECK_VALUE(vertical.size(0) == slash.size(0) && vertical.size(1) == slash.size(1),
                    "slash: (batch, heads) ", slash.sizes(), " differ from vertical's ",
                    vertical.sizes());
  TORCH_CHECK_VALUE(max_ranges >= 0, "max_ranges must be >= 0, got ", max_ranges);
}

void check_grid_parameters(const at::Tensor& stride, const at::Tensor& phase) {
  TORCH_CHECK_TYPE(stride.scalar_type() == at::kInt, "stride: dtype must be int32, got ",
                   stride.scalar_type());
  TORCH_CHECK_TYPE(phase.scalar_type() == at::kInt, "phase: dtype must be int32, got ",
                   phase.scalar_type());
  TORCH_CHECK_VALUE(stride.dim() == 2, "stride: expected 2 dims (batch, heads), got shape ",
                    stride.sizes());
  TORCH_CHECK_VALUE(phase.sizes() == stride.sizes(), "phase: shape ", phase.sizes(),
                    " differs from stride's ", stride.sizes());
  TORCH_CHECK_VALUE(phase.device() == stride.device(), "phase: device ", phase.device(),
                    " differs from stride's ", stride.device());
}

mmi_grid_scores make_grid_scores(const at::Tensor& vertical_score, int64_t span_start,
                                 int64_t span_end, at::Tensor& holder) {
  TORCH_CHECK_TYPE(vertical_score.scalar_type() == at::kFloat,
                   "vertical_score: dtype must be float32, got ", vertical_score.scalar_type());
  TORCH_CHECK_VALUE(vertical_score.dim() == 3,
                    "vertical_score: expected 3 dims (batch, heads, seq_k), got shape ",
                    vertical_score.sizes());
  holder = vertical_score.stride(2) == 1 ? vertical_score : vertical_score.contiguous();
  mmi_grid_scores s{};
  s.batch = holder.size(0);
  s.heads = holder.size(1);
  s.seq_k = holder.size(2);
  s.vertical_score = holder.numel() > 0 ? holder.data_ptr<float>() : nullptr;
  s.score_stride_b = holder.stride(0);
  s.score_stride_h = holder.stride(1);
  s.span_start = span_start;
  s.span_end = span_end;
  mmi_error err;
  raise_on_error(mmi_grid_scores_check(&s, &err), err);
  return s;
}

mmi_grid_detect_problem make_grid_detect_problem(const at::Tensor& vertical_score,
                                                 int64_t span_start, int64_t span_end,
                                                 at::IntArrayRef candidate_strides,
                                                 double tolerance, int64_t max_lines,
                                                 at::Tensor& score_holder,
                                                 std::vector<int32_t>& strides_holder) {
  mmi_grid_detect_problem p{};
  p.scores = make_grid_scores(vertical_score, span_start, span_end, score_holder);
  strides_holder.clear();
  for (size_t i = 0; i < candidate_strides.size(); ++i) {
    const int64_t s = candidate_strides[i];
    TORCH_CHECK_VALUE(s >= 1 && s <= INT32_MAX, "candidate_strides[", i, "] = ", s,
                      " must be in [1, 2^31)");
    strides_holder.push_back(static_cast<int32_t>(s));
  }
  p.candidate_strides = strides_holder.data();
  p.num_candidates = static_cast<int64_t>(strides_holder.size());
  p.tolerance = static_cast<float>(tolerance);
  p.max_lines = max_lines;
  mmi_error err;
  raise_on_error(mmi_detect_grid_check(&p, &err), err);
  return p;
}

void check_grid_lift_parameters(const at::Tensor& vertical_score, const at::Tensor& stride,
                                const at::Tensor& phase) {
  check_grid_parameters(stride, phase);
  TORCH_CHECK_VALUE(stride.device() == vertical_score.device(), "stride: device ",
                    stride.device(), " differs from vertical_score's ", vertical_score.device());
  TORCH_CHECK_VALUE(vertical_score.dim() == 3 && stride.size(0) == vertical_score.size(0) &&
                        stride.size(1) == vertical_score.size(1),
                    "stride: shape ", stride.sizes(), " must be vertical_score's (batch, heads), ",
                    "got vertical_score shape ", vertical_score.sizes());
}

std::pair<at::Tensor, at::Tensor> empty_attention_outputs(const at::Tensor& q) {
  TORCH_CHECK_VALUE(q.dim() == 4, "q: expected 4 dims (batch, heads, seq, head_dim), got shape ",
                    q.sizes());
  return {empty_attention_output(q),
          at::empty({q.size(0), q.size(1), q.size(2)}, q.options().dtype(at::kFloat))};
}

at::Tensor empty_attention_output(const at::Tensor& q) {
  return at::empty({q.size(0), q.size(2), q.size(1), q.size(3)}, q.options()).transpose(1, 2);
}

}  // namespace mminference
