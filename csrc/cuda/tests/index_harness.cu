// Torch-free check of the CUDA index builders and estimation (csrc/cuda/mmi_cuda_index.h) against
// the C core on random inputs, then timings at 128K-token shapes. Exit status 1 on any mismatch,
// 2 on a CUDA failure. Build and run: csrc/cuda/tests/build_index_harness.sh
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "mmi.h"
#include "mmi_cuda_index.h"

extern "C" {
#include "dtype_convert.h"
}

namespace {

int g_failures = 0;

void cuda_ok(cudaError_t status, const char* what, int line) {
  if (status == cudaSuccess) return;
  std::fprintf(stderr, "index_harness.cu:%d: %s: %s\n", line, what, cudaGetErrorString(status));
  std::exit(2);
}
#define CUDA_OK(call) cuda_ok((call), #call, __LINE__)

void fail(const std::string& what) {
  ++g_failures;
  if (g_failures <= 20) std::printf("  MISMATCH %s\n", what.c_str());
}

template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;
  explicit DeviceBuffer(size_t n) : count(n) {
    CUDA_OK(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) {
    if (count > 0) CUDA_OK(cudaMemcpy(ptr, host.data(), count * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  std::vector<T> download() const {
    std::vector<T> host(count);
    if (count > 0) CUDA_OK(cudaMemcpy(host.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
};

mmi_device_check download_check(const DeviceBuffer<mmi_device_check>& check) {
  return check.download()[0];
}

// n distinct values of [0, upper), ascending, always containing `forced` values below upper.
std::vector<int32_t> sorted_sample(std::mt19937& rng, int64_t upper, int64_t n, int64_t forced) {
  std::set<int32_t> chosen;
  for (int64_t i = 0; i < std::min(forced, upper); ++i) chosen.insert(static_cast<int32_t>(i));
  n = std::min(n, upper);
  if (n * 2 > upper) {
    std::vector<int32_t> all(static_cast<size_t>(upper));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    for (int64_t i = 0; static_cast<int64_t>(chosen.size()) < n; ++i) chosen.insert(all[i]);
  } else {
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(upper - 1));
    while (static_cast<int64_t>(chosen.size()) < n) chosen.insert(pick(rng));
  }
  return std::vector<int32_t>(chosen.begin(), chosen.end());
}

template <class T>
int64_t count_differences(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return -1;
  int64_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

float median(std::vector<float> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median milliseconds of `launch` over `reps` timed runs after 3 warm-ups.
float median_ms(const std::function<void()>& launch, int reps) {
  for (int i = 0; i < 3; ++i) launch();
  CUDA_OK(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  std::vector<float> times;
  for (int i = 0; i < reps; ++i) {
    CUDA_OK(cudaEventRecord(start));
    launch();
    CUDA_OK(cudaEventRecord(stop));
    CUDA_OK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CUDA_OK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  CUDA_OK(cudaEventDestroy(start));
  CUDA_OK(cudaEventDestroy(stop));
  return median(times);
}

void require_ok(int status, const mmi_error& err, const char* what) {
  if (status == MMI_OK) return;
  std::fprintf(stderr, "%s failed: %s (%s)\n", what, err.message, mmi_strerror(status));
  std::exit(2);
}

// ---- Vertical-slash ---------------------------------------------------------------------------

struct VerticalSlashCase {
  int64_t batch, heads, seq_q, seq_k, block_q, block_k, num_vertical, num_slash, max_ranges;
};

struct VerticalSlashInput {
  std::vector<int32_t> vertical, slash;
};

VerticalSlashInput random_lists(std::mt19937& rng, const VerticalSlashCase& c, int64_t forced) {
  VerticalSlashInput in;
  for (int64_t bh = 0; bh < c.batch * c.heads; ++bh) {
    const std::vector<int32_t> v = sorted_sample(rng, c.seq_k, c.num_vertical, forced);
    const std::vector<int32_t> s = sorted_sample(rng, c.seq_k, c.num_slash, forced);
    in.vertical.insert(in.vertical.end(), v.begin(), v.end());
    in.slash.insert(in.slash.end(), s.begin(), s.end());
  }
  return in;
}

struct VerticalSlashOutput {
  std::vector<int32_t> ranges, range_count, columns, column_count;
};

struct VerticalSlashDevice {
  DeviceBuffer<int32_t> vertical, slash, ranges, range_count, columns, column_count;
  DeviceBuffer<mmi_device_check> check;
  VerticalSlashDevice(const VerticalSlashCase& c, const VerticalSlashInput& in, int64_t nqb)
      : vertical(in.vertical),
        slash(in.slash),
        ranges(static_cast<size_t>(c.batch * c.heads * nqb * c.max_ranges * 2)),
        range_count(static_cast<size_t>(c.batch * c.heads * nqb)),
        columns(static_cast<size_t>(c.batch * c.heads * nqb * c.num_vertical)),
        column_count(static_cast<size_t>(c.batch * c.heads * nqb)),
        check(1) {}
  int launch(const VerticalSlashCase& c, mmi_error* err) {
    return mmi_build_vertical_slash_index_cuda(
        c.batch, c.heads, c.seq_q, c.seq_k, c.block_q, c.block_k, vertical.ptr, c.num_vertical,
        slash.ptr, c.num_slash, c.max_ranges, ranges.ptr, range_count.ptr, columns.ptr,
        column_count.ptr, check.ptr, nullptr, err);
  }
};

VerticalSlashOutput cpu_vertical_slash(const VerticalSlashCase& c, const VerticalSlashInput& in,
                                       int64_t nqb) {
  VerticalSlashOutput out;
  out.ranges.resize(static_cast<size_t>(c.batch * c.heads * nqb * c.max_ranges * 2));
  out.range_count.resize(static_cast<size_t>(c.batch * c.heads * nqb));
  out.columns.resize(static_cast<size_t>(c.batch * c.heads * nqb * c.num_vertical));
  out.column_count.resize(static_cast<size_t>(c.batch * c.heads * nqb));
  mmi_error err;
  require_ok(mmi_build_vertical_slash_index(c.batch, c.heads, c.seq_q, c.seq_k, c.block_q,
                                            c.block_k, in.vertical.data(), c.num_vertical,
                                            in.slash.data(), c.num_slash, c.max_ranges,
                                            out.ranges.data(), out.range_count.data(),
                                            out.columns.data(), out.column_count.data(), &err),
             err, "CPU vertical-slash builder");
  return out;
}

void check_vertical_slash(const VerticalSlashCase& c, const VerticalSlashInput& in,
                          const std::string& name) {
  const int64_t nqb = mmi_num_q_blocks(c.seq_q, c.block_q);
  const VerticalSlashOutput want = cpu_vertical_slash(c, in, nqb);
  VerticalSlashDevice dev(c, in, nqb);
  mmi_error err;
  require_ok(dev.launch(c, &err), err, "CUDA vertical-slash builder");
  const mmi_device_check verdict = download_check(dev.check);
  if (mmi_vertical_slash_check_result(&verdict, c.heads, c.seq_k, &err) != MMI_OK)
    fail(name + ": device check rejected valid lists: " + err.message);
  const int64_t d_ranges = count_differences(dev.ranges.download(), want.ranges);
  const int64_t d_rcount = count_differences(dev.range_count.download(), want.range_count);
  const int64_t d_columns = count_differences(dev.columns.download(), want.columns);
  const int64_t d_ccount = count_differences(dev.column_count.download(), want.column_count);
  if (d_ranges || d_rcount || d_columns || d_ccount)
    fail(name + ": differing entries: ranges " + std::to_string(d_ranges) + ", range counts " +
         std::to_string(d_rcount) + ", columns " + std::to_string(d_columns) +
         ", column counts " + std::to_string(d_ccount));
}

void test_vertical_slash(std::mt19937& rng) {
  std::uniform_int_distribution<int> coin(0, 1);
  const int64_t block_qs[] = {1, 16, 64, 100, 128};
  const int64_t block_ks[] = {1, 7, 32, 64, 128};
  int cases = 0;
  for (int i = 0; i < 120; ++i) {
    VerticalSlashCase c;
    c.batch = 1 + coin(rng);
    c.heads = 1 + rng() % 3;
    c.seq_q = 1 + rng() % 3000;
    c.seq_k = c.seq_q + (coin(rng) ? 0 : rng() % 2000);
    c.block_q = block_qs[rng() % 5];
    c.block_k = block_ks[rng() % 5];
    c.num_vertical = rng() % 300;
    c.num_slash = rng() % 700;
    const VerticalSlashInput in = random_lists(rng, c, coin(rng) ? 64 : 0);
    c.num_vertical = static_cast<int64_t>(in.vertical.size()) / (c.batch * c.heads);
    c.num_slash = static_cast<int64_t>(in.slash.size()) / (c.batch * c.heads);
    const int64_t key_blocks = (c.seq_k + c.block_k - 1) / c.block_k;
    if (c.num_slash == 0) c.max_ranges = rng() % 2;
    else if (coin(rng)) c.max_ranges = std::min(c.num_slash, key_blocks);  // never overflows
    else c.max_ranges = 1 + rng() % 4;                                      // usually overflows
    check_vertical_slash(c, in, "vertical-slash random case " + std::to_string(i));
    ++cases;
  }
  // A slash list longer than the shared-memory staging capacity (read from global memory).
  VerticalSlashCase big{1, 2, 20000, 40000, 128, 64, 500, 13000, 13000};
  check_vertical_slash(big, random_lists(rng, big, 128), "vertical-slash long slash list");
  ++cases;
  std::printf("vertical-slash: %d random cases compared with the C core\n", cases);

  // Bad lists: same status and message as the C core.
  VerticalSlashCase c{2, 3, 500, 600, 64, 32, 20, 30, 8};
  for (int kind = 0; kind < 3; ++kind) {
    VerticalSlashInput in = random_lists(rng, c, 0);
    const char* what = kind == 0 ? "unsorted slash" : kind == 1 ? "vertical out of range"
                                                                : "repeated vertical";
    if (kind == 0) std::swap(in.slash[(1 * 3 + 2) * 30 + 5], in.slash[(1 * 3 + 2) * 30 + 6]);
    if (kind == 1) in.vertical[(1 * 3 + 0) * 20 + 19] = 600;
    if (kind == 2) in.vertical[(0 * 3 + 2) * 20 + 4] = in.vertical[(0 * 3 + 2) * 20 + 3];
    const int64_t nqb = mmi_num_q_blocks(c.seq_q, c.block_q);
    std::vector<int32_t> r(static_cast<size_t>(c.batch * c.heads * nqb * c.max_ranges * 2)),
        rc(static_cast<size_t>(c.batch * c.heads * nqb)),
        col(static_cast<size_t>(c.batch * c.heads * nqb * c.num_vertical)), cc(rc.size());
    mmi_error cpu_err, gpu_err;
    const int cpu_status = mmi_build_vertical_slash_index(
        c.batch, c.heads, c.seq_q, c.seq_k, c.block_q, c.block_k, in.vertical.data(),
        c.num_vertical, in.slash.data(), c.num_slash, c.max_ranges, r.data(), rc.data(),
        col.data(), cc.data(), &cpu_err);
    VerticalSlashDevice dev(c, in, nqb);
    require_ok(dev.launch(c, &gpu_err), gpu_err, "CUDA vertical-slash builder");
    const mmi_device_check verdict = download_check(dev.check);
    const int gpu_status = mmi_vertical_slash_check_result(&verdict, c.heads, c.seq_k, &gpu_err);
    if (cpu_status == MMI_OK || gpu_status != cpu_status ||
        std::strcmp(cpu_err.message, gpu_err.message) != 0)
      fail(std::string("vertical-slash ") + what + ": CPU '" + cpu_err.message + "' vs CUDA '" +
           gpu_err.message + "'");
  }
  std::printf("vertical-slash: bad lists give the C core's messages\n");
}

// ---- Grid -------------------------------------------------------------------------------------

struct GridCase {
  int64_t batch, heads;
  mmi_grid_options options;
};

void check_grid(const GridCase& c, const std::vector<int32_t>& stride,
                const std::vector<int32_t>& phase, const std::string& name) {
  const int64_t seq = c.options.seq;
  const int64_t nqb = mmi_num_q_blocks(seq, c.options.block_q);
  const size_t perm_size = static_cast<size_t>(c.batch * c.heads * seq);
  const size_t range_size = static_cast<size_t>(c.batch * c.heads * nqb * MMI_GRID_MAX_RANGES * 2);
  const size_t count_size = static_cast<size_t>(c.batch * c.heads * nqb);
  std::vector<int32_t> q_perm(perm_size), k_perm(perm_size), ranges(range_size), count(count_size);
  mmi_error err;
  require_ok(mmi_build_grid_index(c.batch, c.heads, &c.options, stride.data(), phase.data(),
                                  q_perm.data(), k_perm.data(), ranges.data(), count.data(), &err),
             err, "CPU grid builder");
  DeviceBuffer<int32_t> d_stride(stride), d_phase(phase), d_q(perm_size), d_k(perm_size),
      d_ranges(range_size), d_count(count_size);
  DeviceBuffer<mmi_device_check> check(1);
  require_ok(mmi_build_grid_index_cuda(c.batch, c.heads, &c.options, d_stride.ptr, d_phase.ptr,
                                       d_q.ptr, d_k.ptr, d_ranges.ptr, d_count.ptr, check.ptr,
                                       nullptr, &err),
             err, "CUDA grid builder");
  const mmi_device_check verdict = download_check(check);
  if (mmi_grid_check_result(&verdict, c.heads, &c.options, &err) != MMI_OK)
    fail(name + ": device check rejected valid strides: " + err.message);
  const int64_t dq = count_differences(d_q.download(), q_perm);
  const int64_t dk = count_differences(d_k.download(), k_perm);
  const int64_t dr = count_differences(d_ranges.download(), ranges);
  const int64_t dc = count_differences(d_count.download(), count);
  if (dq || dk || dr || dc)
    fail(name + ": differing entries: q_perm " + std::to_string(dq) + ", k_perm " +
         std::to_string(dk) + ", ranges " + std::to_string(dr) + ", counts " + std::to_string(dc));
}

GridCase random_grid_case(std::mt19937& rng, std::vector<int32_t>& stride,
                          std::vector<int32_t>& phase) {
  const int64_t block_qs[] = {1, 5, 64, 128};
  const int64_t block_ks[] = {1, 3, 32, 64};
  GridCase c;
  c.batch = 1 + rng() % 2;
  c.heads = 1 + rng() % 3;
  mmi_grid_options& o = c.options;
  o.seq = 1 + rng() % 5000;
  o.span_start = rng() % o.seq;
  o.span_end = o.span_start + 1 + rng() % (o.seq - o.span_start);
  o.block_q = block_qs[rng() % 4];
  o.block_k = block_ks[rng() % 4];
  const int64_t sinks[] = {0, 1, 64, 100000};
  const int64_t locals[] = {1, 7, 300, 100000};
  o.sink = sinks[rng() % 4];
  o.local = locals[rng() % 4];
  o.use_hlines = static_cast<int>(rng() % 2);
  o.use_vlines = static_cast<int>(rng() % 2);
  const int64_t span = o.span_end - o.span_start;
  stride.clear();
  phase.clear();
  for (int64_t bh = 0; bh < c.batch * c.heads; ++bh) {
    const int32_t s = static_cast<int32_t>(1 + rng() % std::min<int64_t>(span, 300));
    stride.push_back(s);
    phase.push_back(static_cast<int32_t>(rng() % s));
  }
  return c;
}

void test_grid(std::mt19937& rng) {
  std::vector<int32_t> stride, phase;
  for (int i = 0; i < 150; ++i) {
    const GridCase c = random_grid_case(rng, stride, phase);
    check_grid(c, stride, phase, "grid random case " + std::to_string(i));
  }
  std::printf("grid: 150 random cases compared with the C core\n");

  const GridCase c = random_grid_case(rng, stride, phase);
  for (int kind = 0; kind < 2; ++kind) {
    std::vector<int32_t> bad_stride = stride, bad_phase = phase;
    const size_t at = bad_stride.size() - 1;
    if (kind == 0) bad_stride[at] = 0;
    else bad_phase[at] = bad_stride[at];
    const int64_t seq = c.options.seq, nqb = mmi_num_q_blocks(seq, c.options.block_q);
    const size_t perm_size = static_cast<size_t>(c.batch * c.heads * seq);
    const size_t count_size = static_cast<size_t>(c.batch * c.heads * nqb);
    std::vector<int32_t> q(perm_size), k(perm_size), r(count_size * MMI_GRID_MAX_RANGES * 2),
        n(count_size);
    mmi_error cpu_err, gpu_err;
    const int cpu_status = mmi_build_grid_index(c.batch, c.heads, &c.options, bad_stride.data(),
                                                bad_phase.data(), q.data(), k.data(), r.data(),
                                                n.data(), &cpu_err);
    DeviceBuffer<int32_t> d_stride(bad_stride), d_phase(bad_phase), d_q(perm_size),
        d_k(perm_size), d_r(r.size()), d_n(count_size);
    DeviceBuffer<mmi_device_check> check(1);
    require_ok(mmi_build_grid_index_cuda(c.batch, c.heads, &c.options, d_stride.ptr, d_phase.ptr,
                                         d_q.ptr, d_k.ptr, d_r.ptr, d_n.ptr, check.ptr, nullptr,
                                         &gpu_err),
               gpu_err, "CUDA grid builder");
    const mmi_device_check verdict = download_check(check);
    const int gpu_status = mmi_grid_check_result(&verdict, c.heads, &c.options, &gpu_err);
    if (cpu_status == MMI_OK || gpu_status != cpu_status ||
        std::strcmp(cpu_err.message, gpu_err.message) != 0)
      fail(std::string("grid bad ") + (kind == 0 ? "stride" : "phase") + ": CPU '" +
           cpu_err.message + "' vs CUDA '" + gpu_err.message + "'");
  }
  std::printf("grid: bad strides and phases give the C core's messages\n");
}

// ---- Estimation -------------------------------------------------------------------------------

struct EstimateCase {
  mmi_dtype dtype;
  int64_t batch, q_heads, kv_heads, seq_q, seq_k, head_dim, last, query_end;
  bool seq_major;  // (B, S, H, D) storage seen as (B, H, S, D): non-contiguous strides
};

uint16_t to_storage(float x, mmi_dtype dtype) {
  return dtype == MMI_DTYPE_BFLOAT16 ? mmi__float_to_bf16(x) : mmi__float_to_f16(x);
}

struct EstimateTensors {
  std::vector<uint16_t> q, k;
  int64_t q_stride[3], k_stride[3];
};

// Random q (only the estimation rows are filled) and k; a few keys get larger norms (attention
// sinks) so the softmax is not flat.
EstimateTensors random_tensors(std::mt19937& rng, const EstimateCase& c) {
  EstimateTensors t;
  const int64_t d = c.head_dim;
  auto strides = [&](int64_t heads, int64_t seq, int64_t* s) {
    if (c.seq_major) {
      s[0] = seq * heads * d, s[1] = d, s[2] = heads * d;
    } else {
      s[0] = heads * seq * d, s[1] = seq * d, s[2] = d;
    }
  };
  strides(c.q_heads, c.seq_q, t.q_stride);
  strides(c.kv_heads, c.seq_k, t.k_stride);
  t.q.assign(static_cast<size_t>(c.batch * c.q_heads * c.seq_q * d), 0);
  t.k.assign(static_cast<size_t>(c.batch * c.kv_heads * c.seq_k * d), 0);
  std::uniform_real_distribution<float> uniform(-1.7320508f, 1.7320508f);  // unit variance
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.q_heads; ++h)
      for (int64_t s = c.query_end - c.last; s < c.query_end; ++s)
        for (int64_t i = 0; i < d; ++i)
          t.q[b * t.q_stride[0] + h * t.q_stride[1] + s * t.q_stride[2] + i] =
              to_storage(uniform(rng), c.dtype);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t h = 0; h < c.kv_heads; ++h)
      for (int64_t s = 0; s < c.seq_k; ++s) {
        const float gain = s % 997 == 3 ? 4.0f : 1.0f;
        for (int64_t i = 0; i < d; ++i)
          t.k[b * t.k_stride[0] + h * t.k_stride[1] + s * t.k_stride[2] + i] =
              to_storage(gain * uniform(rng), c.dtype);
      }
  return t;
}

mmi_estimate_problem make_problem(const EstimateCase& c, const EstimateTensors& t, const void* q,
                                  const void* k, float* vertical, float* slash) {
  mmi_estimate_problem p{};
  p.dtype = c.dtype;
  p.batch = c.batch, p.q_heads = c.q_heads, p.kv_heads = c.kv_heads;
  p.seq_q = c.seq_q, p.seq_k = c.seq_k, p.head_dim = c.head_dim;
  p.q = q, p.q_stride_b = t.q_stride[0], p.q_stride_h = t.q_stride[1], p.q_stride_s = t.q_stride[2];
  p.k = k, p.k_stride_b = t.k_stride[0], p.k_stride_h = t.k_stride[1], p.k_stride_s = t.k_stride[2];
  p.last = c.last;
  p.query_end = c.query_end;
  p.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  p.vertical_score = vertical;
  p.slash_score = slash;
  return p;
}

struct DeviceEstimate {
  DeviceBuffer<uint16_t> q, k;
  DeviceBuffer<float> vertical, slash;
  DeviceBuffer<unsigned char> workspace;
  mmi_estimate_problem problem;
  DeviceEstimate(const EstimateCase& c, const EstimateTensors& t)
      : q(t.q),
        k(t.k),
        vertical(static_cast<size_t>(c.batch * c.q_heads * c.seq_k)),
        slash(static_cast<size_t>(c.batch * c.q_heads * c.seq_k)),
        workspace(workspace_size(c, t)),
        problem(make_problem(c, t, q.ptr, k.ptr, vertical.ptr, slash.ptr)) {}
  static size_t workspace_size(const EstimateCase& c, const EstimateTensors& t) {
    const mmi_estimate_problem p = make_problem(c, t, nullptr, nullptr, nullptr, nullptr);
    return mmi_estimate_cuda_workspace_bytes(&p);
  }
  // with_slash false: vertical scores only (slash_score NULL; the slash buffer is not touched).
  int launch(mmi_error* err, bool with_slash = true) {
    mmi_estimate_problem p = problem;
    if (!with_slash) p.slash_score = nullptr;
    return mmi_estimate_vertical_slash_scores_cuda(&p, workspace.ptr, workspace.count, nullptr,
                                                   err);
  }
};

// Largest |gpu - cpu| over the heads [0, heads) of each batch of a [B, Hq_gpu, Sk] GPU output.
float max_difference(const std::vector<float>& gpu, const std::vector<float>& cpu, int64_t batch,
                     int64_t gpu_heads, int64_t heads, int64_t seq_k) {
  float worst = 0.0f;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t j = 0; j < seq_k; ++j) {
        const float g = gpu[(b * gpu_heads + h) * seq_k + j], r = cpu[(b * heads + h) * seq_k + j];
        const float diff = std::fabs(g - r);
        worst = std::isnan(diff) ? INFINITY : std::max(worst, diff);
      }
  return worst;
}

// Vertical scores only (slash_score NULL) on both sides, after `dev` ran the full estimation: the
// C core's must equal its full vertical scores exactly, the GPU's its full ones (same column-sum
// code, so expected exact; checked to 1e-5) and the C core's to 1e-3. The GPU output is poisoned
// first so a skipped store shows.
void check_vertical_only(const EstimateCase& c, const EstimateTensors& t, DeviceEstimate& dev,
                         const std::vector<float>& cpu_full_vertical, const std::string& name) {
  std::vector<float> vertical(cpu_full_vertical.size());
  mmi_estimate_problem cpu = make_problem(c, t, t.q.data(), t.k.data(), vertical.data(), nullptr);
  mmi_error err;
  require_ok(mmi_estimate_vertical_slash_scores_cpu(&cpu, 0, &err), err,
             "CPU estimation (vertical only)");
  const bool cpu_same = vertical == cpu_full_vertical;
  const std::vector<float> gpu_full = dev.vertical.download();
  CUDA_OK(cudaMemset(dev.vertical.ptr, 0xff, dev.vertical.count * sizeof(float)));  // NaNs
  require_ok(dev.launch(&err, false), err, "CUDA estimation (vertical only)");
  const std::vector<float> gpu = dev.vertical.download();
  const float d_full = max_difference(gpu, gpu_full, c.batch, c.q_heads, c.q_heads, c.seq_k);
  const float d_cpu = max_difference(gpu, vertical, c.batch, c.q_heads, c.q_heads, c.seq_k);
  std::printf("  %-44s vertical only: vs full %.2e, vs C core %.2e%s\n", "", d_full, d_cpu,
              cpu_same ? "" : " (C core differs from its full mode)");
  if (!(cpu_same && d_full <= 1e-5f && d_cpu <= 1e-3f))
    fail(name + ": vertical-only estimation differs from the full one or from the C core");
}

void check_estimate(const EstimateCase& c, std::mt19937& rng, const std::string& name) {
  const EstimateTensors t = random_tensors(rng, c);
  const size_t out_size = static_cast<size_t>(c.batch * c.q_heads * c.seq_k);
  std::vector<float> vertical(out_size), slash(out_size);
  mmi_estimate_problem cpu = make_problem(c, t, t.q.data(), t.k.data(), vertical.data(),
                                          slash.data());
  mmi_error err;
  require_ok(mmi_estimate_vertical_slash_scores_cpu(&cpu, 0, &err), err, "CPU estimation");
  DeviceEstimate dev(c, t);
  require_ok(dev.launch(&err), err, "CUDA estimation");
  const float dv = max_difference(dev.vertical.download(), vertical, c.batch, c.q_heads,
                                  c.q_heads, c.seq_k);
  const float ds = max_difference(dev.slash.download(), slash, c.batch, c.q_heads, c.q_heads,
                                  c.seq_k);
  std::printf("  %-44s max |diff| vertical %.2e slash %.2e\n", name.c_str(), dv, ds);
  if (!(dv <= 1e-3f && ds <= 1e-3f)) fail(name + ": estimation differs from the C core by > 1e-3");
  check_vertical_only(c, t, dev, vertical, name);
}

void test_estimate(std::mt19937& rng) {
  const EstimateCase cases[] = {
      {MMI_DTYPE_BFLOAT16, 2, 4, 2, 300, 1000, 64, 64, 300, false},
      {MMI_DTYPE_FLOAT16, 1, 7, 1, 1500, 2600, 128, 17, 900, false},
      {MMI_DTYPE_BFLOAT16, 2, 6, 3, 777, 777, 80, 1, 777, true},
      {MMI_DTYPE_FLOAT16, 1, 8, 2, 5000, 9001, 96, 40, 4999, true},
      {MMI_DTYPE_BFLOAT16, 1, 4, 4, 64, 64, 128, 64, 64, false},
      {MMI_DTYPE_BFLOAT16, 1, 28, 4, 20000, 20000, 128, 64, 20000, false},
  };
  std::printf("estimation vs the C core (atol 1e-3; each row's probabilities sum to 1), then "
              "vertical scores only (slash_score NULL) vs the full GPU run and the C core:\n");
  int i = 0;
  for (const EstimateCase& c : cases) {
    char name[160];
    std::snprintf(name, sizeof name, "%s B%lld Hq%lld Hkv%lld Sq%lld Sk%lld D%lld L%lld end%lld%s",
                  c.dtype == MMI_DTYPE_BFLOAT16 ? "bf16" : "fp16", (long long)c.batch,
                  (long long)c.q_heads, (long long)c.kv_heads, (long long)c.seq_q,
                  (long long)c.seq_k, (long long)c.head_dim, (long long)c.last,
                  (long long)c.query_end, c.seq_major ? " strided" : "");
    check_estimate(c, rng, name);
    ++i;
  }
}

// ---- Timings at 128K --------------------------------------------------------------------------

void time_vertical_slash(std::mt19937& rng, int64_t num_slash, const char* label) {
  VerticalSlashCase c{1, 28, 131072, 131072, 128, 64, 1000, num_slash, 0};
  c.max_ranges = std::min<int64_t>(num_slash, (c.seq_k + c.block_k - 1) / c.block_k);
  const VerticalSlashInput in = random_lists(rng, c, num_slash > 64 ? 64 : 0);
  check_vertical_slash(c, in, std::string("vertical-slash 128K ") + label);
  const int64_t nqb = mmi_num_q_blocks(c.seq_q, c.block_q);
  VerticalSlashDevice dev(c, in, nqb);
  mmi_error err;
  const float ms = median_ms([&] { require_ok(dev.launch(c, &err), err, "CUDA vertical-slash"); },
                             20);
  std::printf("  %-58s %8.3f ms\n", label, ms);
}

void time_grid(std::mt19937& rng) {
  GridCase c;
  c.batch = 1;
  c.heads = 28;
  c.options = mmi_grid_options{131072, 128, 64, 0, 131072, 64, 1024, 1, 1};
  std::vector<int32_t> stride, phase;
  for (int h = 0; h < 28; ++h) {
    stride.push_back(256 + 64 * (h % 4));
    phase.push_back(static_cast<int32_t>(rng() % 256));
  }
  check_grid(c, stride, phase, "grid 128K");
  const int64_t nqb = mmi_num_q_blocks(c.options.seq, c.options.block_q);
  const size_t perm = static_cast<size_t>(28 * c.options.seq), cells = static_cast<size_t>(28 * nqb);
  DeviceBuffer<int32_t> d_stride(stride), d_phase(phase), q(perm), k(perm),
      ranges(cells * MMI_GRID_MAX_RANGES * 2), count(cells);
  DeviceBuffer<mmi_device_check> check(1);
  mmi_error err;
  const float ms = median_ms(
      [&] {
        require_ok(mmi_build_grid_index_cuda(c.batch, c.heads, &c.options, d_stride.ptr,
                                             d_phase.ptr, q.ptr, k.ptr, ranges.ptr, count.ptr,
                                             check.ptr, nullptr, &err),
                   err, "CUDA grid");
      },
      20);
  std::printf("  %-58s %8.3f ms\n", "grid S=131072 H=28 (perms + ranges)", ms);
}

void time_estimate(std::mt19937& rng) {
  const EstimateCase c{MMI_DTYPE_BFLOAT16, 1, 28, 4, 131072, 131072, 128, 64, 131072, false};
  const EstimateTensors t = random_tensors(rng, c);
  DeviceEstimate dev(c, t);
  mmi_error err;
  const float ms = median_ms([&] { require_ok(dev.launch(&err), err, "CUDA estimation"); }, 20);
  const std::vector<float> gpu_vertical = dev.vertical.download(), gpu_slash = dev.slash.download();
  const float ms_vertical = median_ms(
      [&] { require_ok(dev.launch(&err, false), err, "CUDA estimation (vertical only)"); }, 20);
  const std::vector<float> gpu_vertical_only = dev.vertical.download();
  // Correctness at this size: the first kv head's 7 query heads against the C core.
  const EstimateCase part{c.dtype, 1, 7, 1, c.seq_q, c.seq_k, c.head_dim, c.last, c.query_end,
                          false};
  std::vector<float> vertical(static_cast<size_t>(7 * c.seq_k)), slash(vertical.size());
  mmi_estimate_problem cpu = make_problem(part, t, t.q.data(), t.k.data(), vertical.data(),
                                          slash.data());
  require_ok(mmi_estimate_vertical_slash_scores_cpu(&cpu, 0, &err), err, "CPU estimation");
  const float dv = max_difference(gpu_vertical, vertical, 1, 28, 7, c.seq_k);
  const float ds = max_difference(gpu_slash, slash, 1, 28, 7, c.seq_k);
  const float dv_only = max_difference(gpu_vertical_only, vertical, 1, 28, 7, c.seq_k);
  const float dv_full = max_difference(gpu_vertical_only, gpu_vertical, 1, 28, 28, c.seq_k);
  double worst_mass = 0.0;
  for (int64_t h = 0; h < 28; ++h) {
    double v = 0.0, s = 0.0;
    for (int64_t j = 0; j < c.seq_k; ++j) {
      v += gpu_vertical[h * c.seq_k + j];
      s += gpu_slash[h * c.seq_k + j];
    }
    worst_mass = std::max({worst_mass, std::fabs(v / c.last - 1.0), std::fabs(s / c.last - 1.0)});
  }
  std::printf("  estimation 128K: heads 0-6 vs C core max |diff| %.2e / %.2e; worst row-mass "
              "error %.2e\n",
              dv, ds, worst_mass);
  std::printf("  estimation 128K vertical only: heads 0-6 vs C core max |diff| %.2e, all heads vs "
              "the full run %.2e\n",
              dv_only, dv_full);
  if (!(dv <= 1e-3f && ds <= 1e-3f && worst_mass <= 1e-3))
    fail("estimation at 128K differs from the C core or loses mass");
  if (!(dv_only <= 1e-3f && dv_full <= 1e-5f))
    fail("vertical-only estimation at 128K differs from the C core or from the full run");
  std::printf("  %-58s %8.3f ms\n", "estimate Sk=131072 Hq=28 Hkv=4 D=128 L=64 bf16", ms);
  std::printf("  %-58s %8.3f ms\n", "estimate vertical only (slash_score NULL), same shape",
              ms_vertical);
}

}  // namespace

int main() {
  int device = 0;
  CUDA_OK(cudaGetDevice(&device));
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, device));
  std::printf("device %d: %s (sm_%d%d, %d SMs)\n", device, prop.name, prop.major, prop.minor,
              prop.multiProcessorCount);
  std::mt19937 rng(1234);
  test_vertical_slash(rng);
  test_grid(rng);
  test_estimate(rng);
  std::printf("timings at 128K (median of 20 after 3 warm-ups, cudaEvent; outputs also checked):\n");
  time_vertical_slash(rng, 4096, "vertical-slash B=1 H=28 NV=1000 NS=4096 bq=128 bk=64");
  time_vertical_slash(rng, 64, "vertical-slash B=1 H=28 NV=1000 NS=64 (scattered)");
  time_grid(rng);
  time_estimate(rng);
  if (g_failures > 0) {
    std::printf("FAILED: %d mismatches\n", g_failures);
    return 1;
  }
  std::printf("all CUDA outputs match the C core\n");
  return 0;
}
