// Torch-free harness of mmi_sparse_attention_forward_cuda (csrc/cuda/mmi_cuda.h).
//   harness            correctness suite: random bf16/fp16 problems against the CPU reference
//                      mmi_sparse_attention_forward_cpu (float32 on the same values); exits 1 if a
//                      case exceeds 1e-2 relative error (||out - ref|| / ||ref||) or lse error,
//                      shows a NaN, or writes anything but zeros / -inf for a row with no key
//   harness --small    a few small cases plus a malformed index (for compute-sanitizer)
//   harness --checks   host-side argument checks only (needs no GPU)
//   harness --bench    timing at full causal density (bench.h), both kernels
// Every case runs through whichever kernel the C entry point picks (printed per case: sm90-wgmma on
// an H100/H200 with sm_90a code for block_q 128 and head_dim 64/128, mma-sync otherwise); run with
// MMI_CUDA_FORCE_MMA_SYNC=1 in the environment to force the mma.sync kernel everywhere.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench.h"
#include "device_run.h"
#include "host_problem.h"
#include "mmi_cuda.h"

namespace harness {
namespace {

constexpr double kTolerance = 1e-2;

const char* dtype_label(mmi_dtype dtype) { return dtype == MMI_DTYPE_BFLOAT16 ? "bf16" : "fp16"; }

CaseSpec spec(const char* name, mmi_dtype dtype, int64_t batch, int64_t q_heads, int64_t kv_heads,
              int64_t seq_q, int64_t seq_k, int64_t head_dim, int64_t block_q, bool causal,
              IndexKind index, PermKind perm, bool seq_major, uint64_t seed) {
  CaseSpec s;
  s.name = name;
  s.dtype = dtype;
  s.batch = batch;
  s.q_heads = q_heads;
  s.kv_heads = kv_heads;
  s.seq_q = seq_q;
  s.seq_k = seq_k;
  s.head_dim = head_dim;
  s.block_q = block_q;
  s.causal = causal;
  s.index = index;
  s.perm = perm;
  s.seq_major = seq_major;
  s.share_index = false;
  s.scale = 0.f;
  s.zero_scale = false;
  s.seed = seed;
  return s;
}

std::vector<CaseSpec> full_suite() {
  constexpr mmi_dtype bf = MMI_DTYPE_BFLOAT16, fp = MMI_DTYPE_FLOAT16;
  using I = IndexKind;
  using P = PermKind;
  std::vector<CaseSpec> cases = {
      // Every (head_dim, block_q) with ranges + columns + empty blocks, GQA 1 / 4 / 7, batch 2.
      spec("random", bf, 2, 4, 4, 1000, 1000, 64, 64, true, I::kRandom, P::kNone, false, 1),
      spec("random", fp, 2, 8, 2, 1023, 1023, 64, 128, false, I::kRandom, P::kBoth, true, 2),
      spec("random", fp, 1, 7, 1, 1000, 1000, 80, 64, true, I::kRandom, P::kKey, true, 3),
      spec("random", bf, 2, 4, 1, 500, 1300, 80, 128, true, I::kRandom, P::kQuery, false, 4),
      spec("random", bf, 2, 8, 2, 1023, 1023, 96, 64, false, I::kRandom, P::kNone, true, 5),
      spec("random", fp, 1, 7, 1, 500, 1300, 96, 128, true, I::kRandom, P::kBoth, false, 6),
      spec("random", fp, 2, 4, 4, 1023, 1023, 128, 64, true, I::kRandom, P::kBoth, true, 7),
      spec("random", bf, 2, 8, 2, 1000, 1000, 128, 128, true, I::kRandom, P::kKey, false, 8),
      spec("random", bf, 1, 7, 1, 4224, 4224, 128, 128, true, I::kRandom, P::kModality, true, 9),
      // Full density: the mask-free fast path, the diagonal tiles, chunked-prefill offsets.
      spec("dense", bf, 1, 7, 1, 4224, 4224, 128, 128, true, I::kDense, P::kNone, true, 10),
      spec("dense", fp, 2, 4, 1, 1023, 1023, 64, 128, true, I::kDense, P::kNone, false, 11),
      spec("dense", bf, 2, 4, 4, 500, 1300, 96, 64, true, I::kDense, P::kNone, true, 12),
      spec("dense", fp, 1, 7, 1, 4224, 4224, 80, 64, false, I::kDense, P::kNone, false, 13),
      spec("dense", bf, 2, 4, 1, 1000, 1000, 128, 64, true, I::kDense, P::kModality, true, 14),
      spec("dense", fp, 2, 8, 2, 500, 1300, 80, 128, true, I::kDense, P::kBoth, false, 15),
      // Index builders: head-shared A-shape (strides 0), per-head vertical-slash with columns.
      spec("a-shape", fp, 2, 8, 2, 4224, 4224, 64, 128, true, I::kAShape, P::kNone, true, 16),
      spec("a-shape", bf, 1, 4, 4, 500, 1300, 128, 64, true, I::kAShape, P::kNone, false, 17),
      spec("vertical-slash", fp, 1, 7, 1, 4224, 4224, 96, 64, true, I::kVerticalSlash,
           P::kNone, true, 18),
      spec("vertical-slash", bf, 2, 4, 1, 1023, 1023, 128, 128, true, I::kVerticalSlash,
           P::kNone, false, 19),
      // Nothing to attend: zeros and lse = -inf everywhere.
      spec("empty", bf, 2, 4, 1, 1000, 1000, 64, 128, true, I::kEmpty, P::kBoth, true, 20),
  };
  CaseSpec shared = spec("random, head-shared index", bf, 2, 8, 2, 1023, 1023, 80, 128, false,
                         I::kRandom, P::kNone, true, 21);
  shared.share_index = true;
  cases.push_back(shared);
  CaseSpec negative = spec("dense, scale -0.2", fp, 1, 4, 4, 1000, 1000, 64, 64, false,
                           I::kDense, P::kQuery, false, 22);
  negative.scale = -0.2f;
  cases.push_back(negative);
  CaseSpec zero = spec("random, scale 0", bf, 1, 4, 1, 1023, 1023, 128, 128, true, I::kRandom,
                       P::kNone, true, 23);
  zero.zero_scale = true;
  cases.push_back(zero);
  // block_q 128 with head_dim 64 / 128 runs the sm_90a kernel on Hopper: its negative-scale path,
  // non-causal permuted keys and an fp16 vertical-slash index.
  CaseSpec negative128 = spec("random, scale -0.3", bf, 1, 4, 2, 1000, 1000, 128, 128, true,
                              I::kRandom, P::kBoth, false, 24);
  negative128.scale = -0.3f;
  cases.push_back(negative128);
  cases.push_back(spec("random", fp, 1, 4, 1, 777, 2100, 128, 128, false, I::kRandom, P::kKey,
                       true, 25));
  cases.push_back(spec("vertical-slash", fp, 1, 4, 4, 4224, 4224, 128, 128, true,
                       I::kVerticalSlash, P::kNone, true, 26));
  cases.push_back(spec("dense", bf, 1, 2, 1, 4224, 4224, 64, 128, true, I::kDense, P::kModality,
                       false, 27));
  return cases;
}

std::vector<CaseSpec> small_suite() {
  constexpr mmi_dtype bf = MMI_DTYPE_BFLOAT16, fp = MMI_DTYPE_FLOAT16;
  using I = IndexKind;
  using P = PermKind;
  return {
      spec("small random", bf, 2, 4, 2, 200, 200, 128, 128, true, I::kRandom, P::kBoth, true, 31),
      spec("small random", fp, 1, 3, 1, 150, 333, 80, 64, false, I::kRandom, P::kKey, false, 32),
      spec("small dense", bf, 1, 2, 1, 130, 130, 64, 128, true, I::kDense, P::kNone, true, 33),
      spec("small vertical-slash", fp, 1, 2, 2, 100, 260, 96, 64, true, I::kVerticalSlash,
           P::kNone, false, 34),
      spec("small random", fp, 1, 2, 1, 300, 300, 128, 128, false, I::kRandom, P::kQuery, false,
           35),
      // 2 x 8 x 9 = 144 work items: more than an H100 / H200 has SMs, so the persistent sm_90a
      // kernel's CTAs run several items each (Q buffers and the stage ring reused across items).
      spec("small random, multi-item", bf, 2, 8, 2, 1100, 1100, 128, 128, true, I::kRandom,
           P::kBoth, true, 36),
      // 2 x 32 x 9 = 576 items: four or five per persistent CTA, so the producer waits on the
      // Q buffer the consumers have not released yet (the item after next), and empty items
      // (nothing to attend) pass through the same ring without a key tile.
      spec("small random, 4+ items per CTA", fp, 2, 32, 4, 1100, 1100, 128, 128, true,
           I::kRandom, P::kKey, false, 37),
      spec("small empty, 4+ items per CTA", bf, 2, 32, 4, 1100, 1100, 128, 128, true, I::kEmpty,
           P::kNone, true, 38),
  };
}

void describe(const CaseSpec& s, char* buffer, size_t size) {
  static const char* kIndex[] = {"random", "dense", "a-shape", "vertical-slash", "empty"};
  static const char* kPerm[] = {"none", "q", "k", "q+k", "modality"};
  std::snprintf(buffer, size, "%s B=%lld Hq=%lld Hkv=%lld Sq=%lld Sk=%lld D=%lld bq=%lld %s %s perm=%s%s",
                dtype_label(s.dtype), (long long)s.batch, (long long)s.q_heads,
                (long long)s.kv_heads, (long long)s.seq_q, (long long)s.seq_k,
                (long long)s.head_dim, (long long)s.block_q, s.causal ? "causal" : "full",
                kIndex[static_cast<int>(s.index)], kPerm[static_cast<int>(s.perm)],
                s.seq_major ? " bshd" : "");
}

bool run_suite(const std::vector<CaseSpec>& cases) {
  int failures = 0;
  for (const CaseSpec& s : cases) {
    const HostProblem hp = make_host_problem(s);
    const Reference ref = cpu_reference(hp);
    DeviceProblem dev(hp);
    run_forward(dev, s.name);
    const Comparison c = compare(hp, ref, dev.out.download(), dev.lse.download(), kTolerance);
    char label[256];
    describe(s, label, sizeof label);
    std::printf("%-4s %-26s %-80s %-10s rel %.2e  lse %.2e  empty rows %lld%s%s\n",
                c.pass ? "ok" : "FAIL", s.name.c_str(), label,
                mmi_sparse_attention_cuda_kernel_name(&dev.problem), c.rel_error, c.lse_error,
                (long long)c.empty_rows, c.nan_out + c.nan_lse > 0 ? "  NaN!" : "",
                c.bad_empty_rows > 0 ? "  bad empty rows!" : "");
    std::fflush(stdout);
    failures += c.pass ? 0 : 1;
  }
  std::printf("%d passed, %d failed\n", static_cast<int>(cases.size()) - failures, failures);
  return failures == 0;
}

// Out-of-range counts, ranges, columns and permutation entries: the kernel must neither fault nor
// hang (memcheck checks the accesses); the numbers are not checked.
bool run_malformed_index(int64_t head_dim, int64_t block_q) {
  CaseSpec s = spec("malformed index", MMI_DTYPE_BFLOAT16, 1, 2, 1, 200, 300, head_dim, block_q,
                    true, IndexKind::kRandom, PermKind::kBoth, false, 41);
  HostProblem hp = make_host_problem(s);
  Rng rng(99);
  for (size_t i = 0; i < hp.kv_range_count.size(); ++i)
    hp.kv_range_count[i] = static_cast<int32_t>(rng.below(3) == 0 ? 1000 : rng.below(3) - 1);
  for (int32_t& x : hp.kv_ranges) x = static_cast<int32_t>(rng.below(1200)) - 600;
  for (size_t i = 0; i < hp.kv_column_count.size(); ++i)
    hp.kv_column_count[i] = static_cast<int32_t>(rng.below(2) == 0 ? 1 << 20 : -5);
  for (int32_t& x : hp.kv_columns) x = static_cast<int32_t>(rng.below(1000)) - 300;
  for (int32_t& x : hp.q_perm) x = rng.below(4) == 0 ? -7 : static_cast<int32_t>(rng.below(400));
  for (int32_t& x : hp.k_perm) x = rng.below(4) == 0 ? 1 << 30 : static_cast<int32_t>(rng.below(300));
  DeviceProblem dev(hp);
  run_forward(dev, s.name);
  std::printf("ok   malformed index (D=%lld bq=%lld, %s): no fault\n", (long long)head_dim,
              (long long)block_q, mmi_sparse_attention_cuda_kernel_name(&dev.problem));
  return true;
}

struct ErrorCase {
  const char* what;
  int expected;
  const char* message_part;
};

// Host-side checks of the C entry point; every problem here is rejected before any CUDA call.
bool run_argument_checks() {
  mmi_attention_problem base{};
  base.dtype = MMI_DTYPE_BFLOAT16;
  base.batch = 1;
  base.q_heads = 4;
  base.kv_heads = 2;
  base.seq_q = base.seq_k = 256;
  base.head_dim = 128;
  void* fake = reinterpret_cast<void*>(uintptr_t{1} << 20);  // aligned, never dereferenced
  base.q = base.k = base.v = fake;
  base.out = fake;
  base.q_stride_b = base.k_stride_b = base.v_stride_b = base.out_stride_b = 4 * 256 * 128;
  base.q_stride_h = base.k_stride_h = base.v_stride_h = base.out_stride_h = 256 * 128;
  base.q_stride_s = base.k_stride_s = base.v_stride_s = base.out_stride_s = 128;
  base.scale = 0.1f;
  base.index.block_q = 128;
  base.index.num_q_blocks = 2;
  base.index.max_ranges = 1;
  base.index.kv_ranges = static_cast<const int32_t*>(fake);
  base.index.kv_range_count = static_cast<const int32_t*>(fake);

  struct Mutation {
    ErrorCase expect;
    void (*apply)(mmi_attention_problem&);
  };
  const Mutation mutations[] = {
      {{"float32", MMI_ERR_UNSUPPORTED, "float32"},
       [](mmi_attention_problem& p) { p.dtype = MMI_DTYPE_FLOAT32; }},
      {{"block_q 32", MMI_ERR_UNSUPPORTED, "block_q 32"},
       [](mmi_attention_problem& p) { p.index.block_q = 32; p.index.num_q_blocks = 8; }},
      {{"head_dim 72", MMI_ERR_UNSUPPORTED, "head_dim 72"},
       [](mmi_attention_problem& p) { p.head_dim = 72; }},
      {{"k seq stride 100", MMI_ERR_UNSUPPORTED, "k: "},
       [](mmi_attention_problem& p) { p.k_stride_s = 100; }},
      {{"misaligned out", MMI_ERR_UNSUPPORTED, "out: "},
       [](mmi_attention_problem& p) { p.out = static_cast<char*>(p.out) + 2; }},
      {{"wrong num_q_blocks", MMI_ERR_INVALID_SHAPE, "query blocks"},
       [](mmi_attention_problem& p) { p.index.num_q_blocks = 3; }},
      {{"GQA 4 / 3", MMI_ERR_INVALID_SHAPE, "multiple"},
       [](mmi_attention_problem& p) { p.kv_heads = 3; }},
      {{"causal Sk < Sq", MMI_ERR_INVALID_SHAPE, "seq_k >= seq_q"},
       [](mmi_attention_problem& p) { p.causal = 1; p.seq_k = 100; }},
      {{"NULL kv_range_count", MMI_ERR_NULL_POINTER, "kv_range_count"},
       [](mmi_attention_problem& p) { p.index.kv_range_count = nullptr; }},
      {{"NULL kv_columns", MMI_ERR_NULL_POINTER, "kv_columns"},
       [](mmi_attention_problem& p) { p.index.max_columns = 4; }},
  };
  int failures = 0;
  for (const Mutation& m : mutations) {
    mmi_attention_problem p = base;
    m.apply(p);
    mmi_error err;
    const int status = mmi_sparse_attention_forward_cuda(&p, nullptr, &err);
    const bool ok = status == m.expect.expected && err.code == status &&
                    std::strstr(err.message, m.expect.message_part) != nullptr;
    std::printf("%-4s check %-22s -> %d: %s\n", ok ? "ok" : "FAIL", m.expect.what, status,
                err.message);
    failures += ok ? 0 : 1;
  }
  const int status = mmi_sparse_attention_forward_cuda(nullptr, nullptr, nullptr);
  if (status != MMI_ERR_NULL_POINTER) {
    std::printf("FAIL check NULL problem -> %d\n", status);
    ++failures;
  }
  return failures == 0;
}

}  // namespace
}  // namespace harness

int main(int argc, char** argv) {
  bool small = false, bench = false, checks_only = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--small") == 0) {
      small = true;
    } else if (std::strcmp(argv[i], "--bench") == 0) {
      bench = true;
    } else if (std::strcmp(argv[i], "--checks") == 0) {
      checks_only = true;
    } else {
      std::fprintf(stderr, "usage: %s [--small | --bench | --checks]\n", argv[0]);
      return 2;
    }
  }
  if (bench) return harness::run_bench();
  bool ok = harness::run_argument_checks();
  if (checks_only) return ok ? 0 : 1;
  if (small) {
    ok = harness::run_suite(harness::small_suite()) && ok;
    ok = harness::run_malformed_index(64, 64) && ok;
    ok = harness::run_malformed_index(128, 128) && ok;  // the sm_90a kernel on Hopper
  } else {
    ok = harness::run_suite(harness::full_suite()) && ok;
  }
  return ok ? 0 : 1;
}
