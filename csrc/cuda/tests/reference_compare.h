// The CPU reference of one harness case and the comparison of a result against it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "host_problem.h"

namespace harness {

template <class T>
const T* host_or_null(const std::vector<T>& v) {
  return v.empty() ? nullptr : v.data();
}

struct Reference {
  std::vector<float> out;  // hp.out_layout
  std::vector<float> lse;  // [B, Hq, Sq]
};

inline Reference cpu_reference(const HostProblem& hp) {
  Reference ref;
  ref.out.assign(hp.out_layout.elements, 0.f);
  ref.lse.assign(hp.spec.batch * hp.spec.q_heads * hp.spec.seq_q, 0.f);
  mmi_attention_problem p = hp.problem(MMI_DTYPE_FLOAT32);
  p.q = hp.qf.data();
  p.k = hp.kf.data();
  p.v = hp.vf.data();
  p.out = ref.out.data();
  p.lse = ref.lse.data();
  p.index.kv_ranges = host_or_null(hp.kv_ranges);
  p.index.kv_range_count = host_or_null(hp.kv_range_count);
  p.index.kv_columns = host_or_null(hp.kv_columns);
  p.index.kv_column_count = host_or_null(hp.kv_column_count);
  p.index.q_perm = host_or_null(hp.q_perm);
  p.index.k_perm = host_or_null(hp.k_perm);
  mmi_error err;
  if (mmi_sparse_attention_forward_cpu(&p, 0, &err) != MMI_OK) {
    std::fprintf(stderr, "%s: the harness built an invalid problem: %s\n", hp.spec.name.c_str(),
                 err.message);
    std::exit(2);
  }
  return ref;
}

struct Comparison {
  double rel_error = 0;      // ||out - ref|| / ||ref|| over the whole output
  double lse_error = 0;      // max |lse - ref lse| over rows with an allowed key
  int64_t nan_out = 0;       // NaN elements in out (unwritten rows stay NaN)
  int64_t nan_lse = 0;
  int64_t empty_rows = 0;    // rows with no allowed key (reference lse = -inf)
  int64_t bad_empty_rows = 0;  // of those, rows not exactly zeros with lse = -inf
  bool pass = false;
};

inline Comparison compare(const HostProblem& hp, const Reference& ref,
                          const std::vector<uint16_t>& out16, const std::vector<float>& lse,
                          double tolerance) {
  const CaseSpec& s = hp.spec;
  Comparison c;
  double err2 = 0, ref2 = 0;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.q_heads; ++h)
      for (int64_t i = 0; i < s.seq_q; ++i) {
        const int64_t row = b * hp.out_layout.stride_b + h * hp.out_layout.stride_h +
                            i * hp.out_layout.stride_s;
        const int64_t lse_index = (b * s.q_heads + h) * s.seq_q + i;
        const bool empty = std::isinf(ref.lse[lse_index]) && ref.lse[lse_index] < 0;
        bool row_zero = true;
        for (int64_t d = 0; d < s.head_dim; ++d) {
          const float x = from_storage(out16[row + d], s.dtype);
          const float r = ref.out[row + d];
          if (std::isnan(x)) ++c.nan_out;
          row_zero = row_zero && x == 0.f;
          err2 += (static_cast<double>(x) - r) * (static_cast<double>(x) - r);
          ref2 += static_cast<double>(r) * r;
        }
        const float l = lse[lse_index];
        if (std::isnan(l)) ++c.nan_lse;
        if (empty) {
          ++c.empty_rows;
          if (!row_zero || !(std::isinf(l) && l < 0)) ++c.bad_empty_rows;
        } else if (!std::isnan(l)) {
          c.lse_error = std::max(c.lse_error, std::fabs(static_cast<double>(l) - ref.lse[lse_index]));
        } else {
          c.lse_error = INFINITY;
        }
      }
  c.rel_error = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  c.pass = c.rel_error <= tolerance && c.lse_error <= tolerance && c.nan_out == 0 &&
           c.nan_lse == 0 && c.bad_empty_rows == 0;
  return c;
}

}  // namespace harness
