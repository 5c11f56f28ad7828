// Host side of one harness case: random data, sparse index and permutations, plus the
// mmi_attention_problem views over them (16-bit data for the GPU, float32 copies for the CPU
// reference).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dtype_convert.h"
#include "mmi.h"

namespace harness {

// splitmix64: small, seedable, good enough for test data.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
  double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
  // Standard normal (Box-Muller); never exactly zero in practice.
  float normal() {
    const double u1 = 1.0 - uniform(), u2 = uniform();
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }

 private:
  uint64_t state_;
};

enum class IndexKind {
  kRandom,         // random disjoint ranges (some 64-aligned) + columns outside them, empty blocks
  kDense,          // every key (clipped to the causal limit when slots are positions)
  kAShape,         // mmi_build_a_shape_index, one index for all batches and heads (strides 0)
  kVerticalSlash,  // mmi_build_vertical_slash_index from random verticals and slashes
  kEmpty,          // no key at all: every row is zeros with lse = -inf
};

enum class PermKind {
  kNone,
  kQuery,     // random q_perm only
  kKey,       // random k_perm only
  kBoth,      // random q_perm and k_perm, per (b, h)
  kModality,  // mmi_build_modality_permutation for both, one per batch (head stride 0)
};

struct CaseSpec {
  std::string name;
  mmi_dtype dtype;
  int64_t batch, q_heads, kv_heads, seq_q, seq_k, head_dim, block_q;
  bool causal;
  IndexKind index;
  PermKind perm;
  bool seq_major;        // q/k/v/out stored (B, S, H, D) like transformers, else (B, H, S, D)
  bool share_index;      // kRandom / kDense: one index for all heads (head stride 0)
  float scale;           // 0 means 1/sqrt(D)
  bool zero_scale;       // use scale = 0 exactly (uniform weights)
  uint64_t seed;
};

// A [B, H, S, D] tensor stored either head-major or sequence-major.
struct TensorLayout {
  int64_t stride_b, stride_h, stride_s;
  int64_t elements;
  static TensorLayout make(int64_t b, int64_t h, int64_t s, int64_t d, bool seq_major) {
    TensorLayout t;
    t.elements = b * h * s * d;
    t.stride_b = h * s * d;
    t.stride_h = seq_major ? d : s * d;
    t.stride_s = seq_major ? h * d : d;
    return t;
  }
};

struct HostProblem {
  CaseSpec spec;
  TensorLayout q_layout, kv_layout, out_layout;
  std::vector<uint16_t> q16, k16, v16;  // what the GPU reads
  std::vector<float> qf, kf, vf;        // the same values as float32, for the CPU reference

  int64_t num_q_blocks = 0, max_ranges = 0, max_columns = 0;
  int64_t index_batch = 1, index_heads = 1;  // 1: broadcast (stride 0) over that dim
  std::vector<int32_t> kv_ranges, kv_range_count, kv_columns, kv_column_count;
  std::vector<int32_t> q_perm, k_perm;  // empty: identity
  int64_t perm_batch = 1, perm_heads = 1;
  float scale = 1.f;

  // Problem over host pointers; data/out/lse pointers are filled by the caller.
  mmi_attention_problem problem(mmi_dtype dtype) const {
    mmi_attention_problem p{};
    p.dtype = dtype;
    p.batch = spec.batch;
    p.q_heads = spec.q_heads;
    p.kv_heads = spec.kv_heads;
    p.seq_q = spec.seq_q;
    p.seq_k = spec.seq_k;
    p.head_dim = spec.head_dim;
    p.q_stride_b = q_layout.stride_b, p.q_stride_h = q_layout.stride_h;
    p.q_stride_s = q_layout.stride_s;
    p.k_stride_b = kv_layout.stride_b, p.k_stride_h = kv_layout.stride_h;
    p.k_stride_s = kv_layout.stride_s;
    p.v_stride_b = kv_layout.stride_b, p.v_stride_h = kv_layout.stride_h;
    p.v_stride_s = kv_layout.stride_s;
    p.out_stride_b = out_layout.stride_b, p.out_stride_h = out_layout.stride_h;
    p.out_stride_s = out_layout.stride_s;
    p.scale = scale;
    p.causal = spec.causal ? 1 : 0;
    mmi_sparse_index& ix = p.index;
    ix.block_q = spec.block_q;
    ix.num_q_blocks = num_q_blocks;
    ix.max_ranges = max_ranges;
    ix.max_columns = max_columns;
    const int64_t cells = num_q_blocks;
    ix.kv_ranges_stride_b = index_batch > 1 ? index_heads * cells * max_ranges * 2 : 0;
    ix.kv_ranges_stride_h = index_heads > 1 ? cells * max_ranges * 2 : 0;
    ix.kv_range_count_stride_b = index_batch > 1 ? index_heads * cells : 0;
    ix.kv_range_count_stride_h = index_heads > 1 ? cells : 0;
    ix.kv_columns_stride_b = index_batch > 1 ? index_heads * cells * max_columns : 0;
    ix.kv_columns_stride_h = index_heads > 1 ? cells * max_columns : 0;
    ix.kv_column_count_stride_b = ix.kv_range_count_stride_b;
    ix.kv_column_count_stride_h = ix.kv_range_count_stride_h;
    ix.q_perm_stride_b = perm_batch > 1 ? perm_heads * spec.seq_q : 0;
    ix.q_perm_stride_h = perm_heads > 1 ? spec.seq_q : 0;
    ix.k_perm_stride_b = perm_batch > 1 ? perm_heads * spec.seq_k : 0;
    ix.k_perm_stride_h = perm_heads > 1 ? spec.seq_k : 0;
    return p;
  }
};

inline uint16_t to_storage(float x, mmi_dtype dtype) {
  return dtype == MMI_DTYPE_BFLOAT16 ? mmi__float_to_bf16(x) : mmi__float_to_f16(x);
}

inline float from_storage(uint16_t x, mmi_dtype dtype) {
  return dtype == MMI_DTYPE_BFLOAT16 ? mmi__bf16_to_float(x) : mmi__f16_to_float(x);
}

inline void fill_tensor(Rng& rng, mmi_dtype dtype, int64_t n, std::vector<uint16_t>& storage,
                        std::vector<float>& values) {
  storage.resize(n);
  values.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    storage[i] = to_storage(rng.normal(), dtype);
    values[i] = from_storage(storage[i], dtype);
  }
}

inline std::vector<int32_t> random_permutation(Rng& rng, int64_t n) {
  std::vector<int32_t> perm(n);
  for (int64_t i = 0; i < n; ++i) perm[i] = static_cast<int32_t>(i);
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(i + 1)]);
  return perm;
}

// Alternating runs of modality 0 (text) and 1 (image) of random lengths, grouped stably.
inline std::vector<int32_t> modality_permutation(Rng& rng, int64_t batch, int64_t seq) {
  std::vector<int32_t> modality(batch * seq);
  for (int64_t b = 0; b < batch; ++b) {
    int32_t m = 0;
    for (int64_t s = 0; s < seq;) {
      const int64_t run = 1 + rng.below(m == 0 ? 40 : 300);
      for (int64_t i = 0; i < run && s < seq; ++i, ++s) modality[b * seq + s] = m;
      m = 1 - m;
    }
  }
  std::vector<int32_t> perm(batch * seq), offsets(batch * 3);
  mmi_error err;
  if (mmi_build_modality_permutation(batch, seq, modality.data(), 2, perm.data(), offsets.data(),
                                     &err) != MMI_OK) {
    std::fprintf(stderr, "modality permutation: %s\n", err.message);
    std::exit(2);
  }
  return perm;
}

// One block of a random index: disjoint sorted ranges (a few empty), then columns outside them.
inline void random_block(Rng& rng, int64_t seq_k, int64_t max_ranges, int64_t max_columns,
                         int32_t* ranges, int32_t* range_count, int32_t* columns,
                         int32_t* column_count) {
  *range_count = 0;
  *column_count = 0;
  if (rng.below(12) == 0) return;  // an empty block
  const int64_t n_ranges = rng.below(max_ranges + 1);
  const bool aligned = rng.below(2) == 0;
  std::vector<int64_t> points;
  for (int64_t i = 0; i < 2 * n_ranges; ++i) {
    int64_t x = rng.below(seq_k + 1);
    if (aligned) x = std::min<int64_t>(x / 64 * 64, seq_k);
    points.push_back(x);
  }
  std::sort(points.begin(), points.end());
  points.erase(std::unique(points.begin(), points.end()), points.end());
  if (points.size() % 2 == 1) points.pop_back();
  const int64_t kept = static_cast<int64_t>(points.size()) / 2;
  for (int64_t r = 0; r < kept; ++r) {
    ranges[2 * r] = static_cast<int32_t>(points[2 * r]);
    // Now and then an empty range [start, start): legal, and it must be skipped.
    ranges[2 * r + 1] = static_cast<int32_t>(rng.below(6) == 0 ? points[2 * r] : points[2 * r + 1]);
  }
  *range_count = static_cast<int32_t>(kept);

  const int64_t wanted = rng.below(max_columns + 1);
  std::vector<int32_t> picked;
  for (int64_t i = 0; i < 4 * wanted && static_cast<int64_t>(picked.size()) < wanted; ++i) {
    const int32_t c = static_cast<int32_t>(rng.below(seq_k));
    bool inside = false;
    for (int64_t r = 0; r < kept; ++r) inside = inside || (c >= ranges[2 * r] && c < ranges[2 * r + 1]);
    if (!inside && std::find(picked.begin(), picked.end(), c) == picked.end()) picked.push_back(c);
  }
  std::sort(picked.begin(), picked.end());
  for (size_t i = 0; i < picked.size(); ++i) columns[i] = picked[i];
  *column_count = static_cast<int32_t>(picked.size());
}

inline void build_index(Rng& rng, HostProblem& hp) {
  const CaseSpec& s = hp.spec;
  const int64_t nqb = hp.num_q_blocks;
  const bool slots_are_positions = s.perm == PermKind::kNone;
  switch (s.index) {
    case IndexKind::kAShape: {
      hp.max_ranges = MMI_A_SHAPE_MAX_RANGES;
      hp.max_columns = 0;
      hp.index_batch = hp.index_heads = 1;
      hp.kv_ranges.assign(nqb * hp.max_ranges * 2, 0);
      hp.kv_range_count.assign(nqb, 0);
      mmi_error err;
      if (mmi_build_a_shape_index(s.seq_q, s.seq_k, s.block_q, 64, 100, 300, hp.kv_ranges.data(),
                                  hp.kv_range_count.data(), &err) != MMI_OK) {
        std::fprintf(stderr, "%s: a-shape builder: %s\n", s.name.c_str(), err.message);
        std::exit(2);
      }
      break;
    }
    case IndexKind::kVerticalSlash: {
      const int64_t nv = 40, ns = 12, cap = 6;
      hp.index_batch = s.batch;
      hp.index_heads = s.q_heads;
      hp.max_ranges = cap;
      hp.max_columns = nv;
      const int64_t heads = s.batch * s.q_heads;
      std::vector<int32_t> vertical, slash;
      for (int64_t bh = 0; bh < heads; ++bh) {
        std::vector<int32_t> v = random_permutation(rng, s.seq_k);
        std::vector<int32_t> d = random_permutation(rng, s.seq_k);
        v.resize(nv);
        d.resize(ns);
        if (std::find(d.begin(), d.end(), 0) == d.end()) d[0] = 0;  // always the diagonal
        std::sort(v.begin(), v.end());
        std::sort(d.begin(), d.end());
        vertical.insert(vertical.end(), v.begin(), v.end());
        slash.insert(slash.end(), d.begin(), d.end());
      }
      hp.kv_ranges.assign(heads * nqb * cap * 2, 0);
      hp.kv_range_count.assign(heads * nqb, 0);
      hp.kv_columns.assign(heads * nqb * nv, 0);
      hp.kv_column_count.assign(heads * nqb, 0);
      mmi_error err;
      if (mmi_build_vertical_slash_index(s.batch, s.q_heads, s.seq_q, s.seq_k, s.block_q, 64,
                                         vertical.data(), nv, slash.data(), ns, cap,
                                         hp.kv_ranges.data(), hp.kv_range_count.data(),
                                         hp.kv_columns.data(), hp.kv_column_count.data(),
                                         &err) != MMI_OK) {
        std::fprintf(stderr, "%s: vertical-slash builder: %s\n", s.name.c_str(), err.message);
        std::exit(2);
      }
      break;
    }
    case IndexKind::kRandom:
    case IndexKind::kDense:
    case IndexKind::kEmpty: {
      hp.index_batch = s.share_index ? 1 : s.batch;
      hp.index_heads = s.share_index ? 1 : s.q_heads;
      hp.max_ranges = s.index == IndexKind::kRandom ? 5 : 1;
      hp.max_columns = s.index == IndexKind::kRandom ? 150 : 0;
      const int64_t cells = hp.index_batch * hp.index_heads * nqb;
      hp.kv_ranges.assign(cells * hp.max_ranges * 2, 0);
      hp.kv_range_count.assign(cells, 0);
      hp.kv_columns.assign(cells * hp.max_columns, 0);
      hp.kv_column_count.assign(cells, 0);
      for (int64_t cell = 0; cell < cells; ++cell) {
        int32_t* ranges = hp.kv_ranges.data() + cell * hp.max_ranges * 2;
        if (s.index == IndexKind::kRandom) {
          random_block(rng, s.seq_k, hp.max_ranges, hp.max_columns, ranges,
                       &hp.kv_range_count[cell], hp.kv_columns.data() + cell * hp.max_columns,
                       &hp.kv_column_count[cell]);
        } else if (s.index == IndexKind::kDense) {
          const int64_t qb = cell % nqb;
          int64_t end = s.seq_k;
          if (s.causal && slots_are_positions)
            end = std::min(s.seq_k, std::min((qb + 1) * s.block_q, s.seq_q) + s.seq_k - s.seq_q);
          ranges[0] = 0;
          ranges[1] = static_cast<int32_t>(end);
          hp.kv_range_count[cell] = 1;
        }
      }
      break;
    }
  }
}

inline void build_permutations(Rng& rng, HostProblem& hp) {
  const CaseSpec& s = hp.spec;
  if (s.perm == PermKind::kNone) return;
  if (s.perm == PermKind::kModality) {
    hp.perm_batch = s.batch;
    hp.perm_heads = 1;
    hp.q_perm = modality_permutation(rng, s.batch, s.seq_q);
    hp.k_perm = s.seq_k == s.seq_q ? hp.q_perm : modality_permutation(rng, s.batch, s.seq_k);
    return;
  }
  hp.perm_batch = s.batch;
  hp.perm_heads = s.q_heads;
  for (int64_t bh = 0; bh < s.batch * s.q_heads; ++bh) {
    if (s.perm == PermKind::kQuery || s.perm == PermKind::kBoth) {
      const std::vector<int32_t> p = random_permutation(rng, s.seq_q);
      hp.q_perm.insert(hp.q_perm.end(), p.begin(), p.end());
    }
    if (s.perm == PermKind::kKey || s.perm == PermKind::kBoth) {
      const std::vector<int32_t> p = random_permutation(rng, s.seq_k);
      hp.k_perm.insert(hp.k_perm.end(), p.begin(), p.end());
    }
  }
}

inline HostProblem make_host_problem(const CaseSpec& spec) {
  HostProblem hp;
  hp.spec = spec;
  Rng rng(spec.seed);
  hp.q_layout = TensorLayout::make(spec.batch, spec.q_heads, spec.seq_q, spec.head_dim, spec.seq_major);
  hp.kv_layout =
      TensorLayout::make(spec.batch, spec.kv_heads, spec.seq_k, spec.head_dim, spec.seq_major);
  hp.out_layout = TensorLayout::make(spec.batch, spec.q_heads, spec.seq_q, spec.head_dim, spec.seq_major);
  fill_tensor(rng, spec.dtype, hp.q_layout.elements, hp.q16, hp.qf);
  fill_tensor(rng, spec.dtype, hp.kv_layout.elements, hp.k16, hp.kf);
  fill_tensor(rng, spec.dtype, hp.kv_layout.elements, hp.v16, hp.vf);
  hp.num_q_blocks = mmi_num_q_blocks(spec.seq_q, spec.block_q);
  build_index(rng, hp);
  build_permutations(rng, hp);
  hp.scale = spec.zero_scale ? 0.f
             : spec.scale != 0.f ? spec.scale
                                 : 1.f / std::sqrt(static_cast<float>(spec.head_dim));
  return hp;
}

}  // namespace harness
