// Every mminference op schema, declared once. Backend files only add TORCH_LIBRARY_IMPL blocks.
// Shapes and semantics: csrc/core/mmi_sparse_index.h, csrc/core/mmi_index_builders.h and
// csrc/core/mmi_boundary_index.h.
#include <torch/library.h>

TORCH_LIBRARY(mminference, m) {
  m.def(
      "sparse_attention(Tensor q, Tensor k, Tensor v, Tensor kv_ranges, Tensor kv_range_count, "
      "Tensor kv_columns, Tensor kv_column_count, Tensor? q_perm, Tensor? k_perm, int block_q, "
      "bool causal, float scale) -> (Tensor out, Tensor lse)");
  m.def(
      "build_a_shape_index(int seq_q, int seq_k, int block_q, int block_k, int sink, int local) "
      "-> (Tensor kv_ranges, Tensor kv_range_count)");
  m.def(
      "build_vertical_slash_index(Tensor vertical, Tensor slash, int seq_q, int seq_k, "
      "int block_q, int block_k, int max_ranges) -> (Tensor kv_ranges, Tensor kv_range_count, "
      "Tensor kv_columns, Tensor kv_column_count)");
  m.def(
      "build_grid_index(Tensor stride, Tensor phase, int seq, int block_q, int block_k, "
      "int span_start, int span_end, int sink, int local, bool use_hlines, bool use_vlines) "
      "-> (Tensor q_perm, Tensor k_perm, Tensor kv_ranges, Tensor kv_range_count)");
  m.def(
      "estimate_vertical_slash_scores(Tensor q, Tensor k, int last, int query_end, float scale) "
      "-> (Tensor vertical_score, Tensor slash_score)");
  // The same column mass without the diagonal sums (slash_score NULL in mmi_estimate.h).
  m.def(
      "estimate_vertical_scores(Tensor q, Tensor k, int last, int query_end, float scale) "
      "-> Tensor vertical_score");
  m.def(
      "build_modality_permutation(Tensor modality, int num_modalities) "
      "-> (Tensor perm, Tensor segment_offsets)");
  m.def(
      "build_boundary_index(Tensor modality, Tensor grid_stride, Tensor grid_phase, "
      "Tensor pair_pattern, Tensor vertical, Tensor slash, int num_modalities, int block_q, "
      "int block_k, int max_ranges, int max_columns) -> (Tensor q_perm, Tensor k_perm, "
      "Tensor kv_ranges, Tensor kv_range_count, Tensor kv_columns, Tensor kv_column_count, "
      "Tensor class_offsets)");
  // Grid stride / phase detection and grid lift (csrc/core/mmi_grid_detect.h).
  m.def(
      "detect_grid(Tensor vertical_score, int span_start, int span_end, int[] candidate_strides, "
      "float tolerance, int max_lines) -> (Tensor stride, Tensor phase, Tensor lift)");
  m.def(
      "grid_lift(Tensor vertical_score, int span_start, int span_end, Tensor stride, "
      "Tensor phase) -> Tensor lift");
  // Pattern search scoring (csrc/core/mmi_search.h).
  m.def(
      "search_score(Tensor probs, Tensor row_pos, Tensor modality, Tensor? value, "
      "Tensor kv_ranges, Tensor kv_range_count, Tensor kv_columns, Tensor kv_column_count, "
      "Tensor? q_perm, Tensor? k_perm, int block_q, int block_k, int num_modalities) "
      "-> (Tensor kept_mass, Tensor kept_out, Tensor block_tiles)");
}
