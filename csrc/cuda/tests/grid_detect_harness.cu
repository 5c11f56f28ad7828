// Torch-free check of the CUDA grid detection and grid lift (csrc/cuda/detect_grid.cu) against the
// C core (csrc/core/detect_grid.c) on random inputs, then timings at 128K tokens. Exit status 1 on
// any mismatch, 2 on a CUDA failure. Build and run: csrc/cuda/tests/build_grid_detect_harness.sh
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "mmi_cuda_index.h"
#include "mmi_grid_detect.h"

namespace {

int g_failures = 0;

void cuda_ok(cudaError_t status, const char* what, int line) {
  if (status == cudaSuccess) return;
  std::fprintf(stderr, "grid_detect_harness.cu:%d: %s: %s\n", line, what, cudaGetErrorString(status));
  std::exit(2);
}
#define CUDA_OK(call) cuda_ok((call), #call, __LINE__)

void fail(const std::string& what) {
  ++g_failures;
  if (g_failures <= 20) std::printf("  MISMATCH %s\n", what.c_str());
}

void require_ok(int status, const mmi_error& err, const char* what) {
  if (status == MMI_OK) return;
  std::fprintf(stderr, "%s failed: %s (%s)\n", what, err.message, mmi_strerror(status));
  std::exit(2);
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

struct Case {
  int64_t batch, heads, seq_k, span_start, span_end, max_lines;
  float tolerance;
  std::vector<int32_t> candidates;
  std::vector<float> scores;  // [B, H, Sk] contiguous
};

enum class Fill { kUniform, kPlanted, kTies, kZeros };

Case random_case(std::mt19937& rng, int64_t seq_k, Fill fill) {
  auto pick = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  Case c;
  c.batch = pick(1, 2);
  c.heads = pick(1, 5);
  c.seq_k = seq_k;
  c.span_start = pick(0, seq_k / 3);
  c.span_end = pick(c.span_start + 4, seq_k);
  const int64_t n = c.span_end - c.span_start;
  const float tolerances[] = {0.3f, 0.5f, 0.9f, 1.0f};
  c.tolerance = tolerances[pick(0, 3)];
  const int64_t lines[] = {1, 2, 3, 7, 64, 65, 100, 300};
  c.max_lines = lines[pick(0, 7)];
  const int64_t num = pick(1, 80);  // > 64: several launches
  for (int64_t i = 0; i < num; ++i)
    c.candidates.push_back(static_cast<int32_t>(pick(1, i % 5 == 4 ? 2 * n : std::max<int64_t>(1, n / 2))));
  c.candidates.push_back(static_cast<int32_t>(std::max<int64_t>(1, n / 2)));
  c.scores.resize(static_cast<size_t>(c.batch * c.heads * seq_k));
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (float& v : c.scores) {
    switch (fill) {
      case Fill::kTies: v = static_cast<float>(pick(0, 3)); break;
      case Fill::kZeros: v = 0.0f; break;
      default: v = uniform(rng); break;
    }
  }
  if (fill == Fill::kPlanted) {
    for (int64_t bh = 0; bh < c.batch * c.heads; ++bh) {
      const int64_t s = pick(2, std::max<int64_t>(2, n / 3)), p = pick(0, s - 1);
      for (int64_t i = c.span_start + p; i < c.span_end; i += s) c.scores[bh * seq_k + i] += 1.0f;
    }
  }
  return c;
}

mmi_grid_detect_problem problem_of(const Case& c, const float* scores) {
  mmi_grid_detect_problem p{};
  p.scores.batch = c.batch;
  p.scores.heads = c.heads;
  p.scores.seq_k = c.seq_k;
  p.scores.vertical_score = scores;
  p.scores.score_stride_b = c.heads * c.seq_k;
  p.scores.score_stride_h = c.seq_k;
  p.scores.span_start = c.span_start;
  p.scores.span_end = c.span_end;
  p.candidate_strides = c.candidates.data();
  p.num_candidates = static_cast<int64_t>(c.candidates.size());
  p.tolerance = c.tolerance;
  p.max_lines = c.max_lines;
  return p;
}

bool lift_close(float a, float b) {
  return a == b || std::fabs(a - b) <= 1e-6f * std::max(std::fabs(a), std::fabs(b));
}

struct Outputs {
  std::vector<int32_t> stride, phase;
  std::vector<float> lift;
};

Outputs run_cuda(const mmi_grid_detect_problem& host_problem, const DeviceBuffer<float>& scores) {
  mmi_grid_detect_problem p = host_problem;
  p.scores.vertical_score = scores.ptr;
  const size_t heads = static_cast<size_t>(p.scores.batch * p.scores.heads);
  DeviceBuffer<int32_t> stride(heads), phase(heads);
  DeviceBuffer<float> lift(heads);
  const size_t bytes = mmi_detect_grid_cuda_workspace_bytes(&p);
  DeviceBuffer<char> workspace(bytes);
  mmi_error err;
  require_ok(mmi_detect_grid_cuda(&p, stride.ptr, phase.ptr, lift.ptr, workspace.ptr, bytes, nullptr,
                                  &err),
             err, "mmi_detect_grid_cuda");
  CUDA_OK(cudaDeviceSynchronize());
  return {stride.download(), phase.download(), lift.download()};
}

void compare(const Outputs& want, const Outputs& got, const std::string& label) {
  for (size_t i = 0; i < want.stride.size(); ++i) {
    if (want.stride[i] != got.stride[i] || want.phase[i] != got.phase[i] ||
        !lift_close(want.lift[i], got.lift[i])) {
      char line[256];
      std::snprintf(line, sizeof line, "%s head %zu: cpu (%d, %d, %.9g) cuda (%d, %d, %.9g)",
                    label.c_str(), i, want.stride[i], want.phase[i], want.lift[i], got.stride[i],
                    got.phase[i], got.lift[i]);
      fail(line);
    }
  }
}

void test_detect(std::mt19937& rng) {
  const int64_t lengths[] = {8, 64, 333, 1000, 4096, 20000};
  const Fill fills[] = {Fill::kUniform, Fill::kPlanted, Fill::kTies, Fill::kZeros};
  int cases = 0;
  for (int rep = 0; rep < 4; ++rep)
    for (int64_t seq_k : lengths)
      for (Fill fill : fills) {
        const Case c = random_case(rng, seq_k, fill);
        const mmi_grid_detect_problem p = problem_of(c, c.scores.data());
        const size_t heads = static_cast<size_t>(c.batch * c.heads);
        Outputs want{std::vector<int32_t>(heads), std::vector<int32_t>(heads), std::vector<float>(heads)};
        mmi_error err;
        require_ok(mmi_detect_grid(&p, want.stride.data(), want.phase.data(), want.lift.data(), 0, &err),
                   err, "mmi_detect_grid");
        const DeviceBuffer<float> scores(c.scores);
        compare(want, run_cuda(p, scores),
                "detect Sk=" + std::to_string(seq_k) + " fill=" + std::to_string(static_cast<int>(fill)) +
                    " max_lines=" + std::to_string(c.max_lines));
        ++cases;
      }
  std::printf("detect: %d random cases compared\n", cases);
}

void test_lift(std::mt19937& rng) {
  int cases = 0;
  for (int64_t seq_k : {50, 999, 4096, 70000}) {
    Case c = random_case(rng, seq_k, Fill::kUniform);
    const int64_t n = c.span_end - c.span_start;
    const size_t heads = static_cast<size_t>(c.batch * c.heads);
    std::vector<int32_t> stride(heads), phase(heads);
    const int64_t choices[] = {1, 2, 3, std::max<int64_t>(1, n / 65), std::max<int64_t>(1, n / 64), n};
    for (size_t i = 0; i < heads; ++i) {
      stride[i] = static_cast<int32_t>(choices[rng() % 6]);
      phase[i] = static_cast<int32_t>(rng() % stride[i]);
    }
    const mmi_grid_detect_problem p = problem_of(c, c.scores.data());
    std::vector<float> want(heads);
    mmi_error err;
    require_ok(mmi_grid_lift(&p.scores, stride.data(), phase.data(), want.data(), 0, &err), err,
               "mmi_grid_lift");
    const DeviceBuffer<float> scores(c.scores);
    const DeviceBuffer<int32_t> d_stride(stride), d_phase(phase);
    DeviceBuffer<float> lift(heads);
    DeviceBuffer<mmi_device_check> check(1);
    mmi_grid_scores view = p.scores;
    view.vertical_score = scores.ptr;
    require_ok(mmi_grid_lift_cuda(&view, d_stride.ptr, d_phase.ptr, lift.ptr, check.ptr, nullptr, &err),
               err, "mmi_grid_lift_cuda");
    const mmi_device_check verdict = check.download()[0];
    require_ok(mmi_grid_lift_check_result(&verdict, c.heads, &view, &err), err, "check result");
    const std::vector<float> got = lift.download();
    for (size_t i = 0; i < heads; ++i)
      if (!lift_close(want[i], got[i]))
        fail("grid lift Sk=" + std::to_string(seq_k) + " head " + std::to_string(i) + ": " +
             std::to_string(want[i]) + " vs " + std::to_string(got[i]));
    // A bad phase is reported with the C core's message.
    phase[heads - 1] = stride[heads - 1];
    const DeviceBuffer<int32_t> bad_phase(phase);
    require_ok(mmi_grid_lift_cuda(&view, d_stride.ptr, bad_phase.ptr, lift.ptr, check.ptr, nullptr, &err),
               err, "mmi_grid_lift_cuda");
    const mmi_device_check bad = check.download()[0];
    mmi_error cpu_err, cuda_err;
    const int cpu_status = mmi_grid_lift(&p.scores, stride.data(), phase.data(), want.data(), 0, &cpu_err);
    const int cuda_status = mmi_grid_lift_check_result(&bad, c.heads, &view, &cuda_err);
    if (cpu_status == MMI_OK || cpu_status != cuda_status || std::strcmp(cpu_err.message, cuda_err.message) != 0)
      fail(std::string("bad phase report: cpu '") + cpu_err.message + "' cuda '" + cuda_err.message + "'");
    ++cases;
  }
  std::printf("grid lift: %d cases compared (bad entries reported)\n", cases);
}

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
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Sk = 131072, B = 1, H = 28; tokens_per_frame 256 candidates (attention.candidate_strides).
void time_detect(std::mt19937& rng, bool planted, const std::vector<int32_t>& candidates,
                 const char* label) {
  Case c;
  c.batch = 1;
  c.heads = 28;
  c.seq_k = 131072;
  c.span_start = 0;
  c.span_end = c.seq_k;
  c.max_lines = 64;
  c.tolerance = 0.5f;
  c.candidates = candidates;
  c.scores.resize(static_cast<size_t>(c.heads * c.seq_k));
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (float& v : c.scores) v = uniform(rng) * (planted ? 0.1f : 1.0f);
  if (planted)
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t i = 5; i < c.seq_k; i += 256) c.scores[h * c.seq_k + i] += 1.0f;
  const mmi_grid_detect_problem p = problem_of(c, c.scores.data());
  Outputs want{std::vector<int32_t>(28), std::vector<int32_t>(28), std::vector<float>(28)};
  mmi_error err;
  const auto t0 = std::chrono::steady_clock::now();
  require_ok(mmi_detect_grid(&p, want.stride.data(), want.phase.data(), want.lift.data(), 0, &err), err,
             "mmi_detect_grid");
  const double cpu_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const DeviceBuffer<float> scores(c.scores);
  compare(want, run_cuda(p, scores), label);
  mmi_grid_detect_problem dp = p;
  dp.scores.vertical_score = scores.ptr;
  DeviceBuffer<int32_t> stride(28), phase(28);
  DeviceBuffer<float> lift(28);
  const size_t bytes = mmi_detect_grid_cuda_workspace_bytes(&dp);
  DeviceBuffer<char> workspace(bytes);
  const float ms = median_ms(
      [&] {
        mmi_error e;
        require_ok(mmi_detect_grid_cuda(&dp, stride.ptr, phase.ptr, lift.ptr, workspace.ptr, bytes, nullptr,
                                        &e),
                   e, "mmi_detect_grid_cuda");
      },
      20);
  std::printf("  %-58s %8.3f ms (C core, all CPU threads: %.1f ms; chose stride %d phase %d)\n", label, ms,
              cpu_ms, want.stride[0], want.phase[0]);
}

// Grid lift alone at Sk = 131072, B = 1, H = 28 for one stride (n / stride lines per head).
void time_lift(std::mt19937& rng, int32_t stride_value) {
  const int64_t heads = 28, seq = 131072;
  std::vector<float> host(static_cast<size_t>(heads * seq));
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (float& v : host) v = uniform(rng);
  const DeviceBuffer<float> scores(host);
  const DeviceBuffer<int32_t> stride(std::vector<int32_t>(heads, stride_value));
  const DeviceBuffer<int32_t> phase(std::vector<int32_t>(heads, 0));
  DeviceBuffer<float> lift(heads);
  DeviceBuffer<mmi_device_check> check(1);
  mmi_grid_scores view{1, heads, seq, scores.ptr, heads * seq, seq, 0, seq};
  const float ms = median_ms(
      [&] {
        mmi_error e;
        require_ok(mmi_grid_lift_cuda(&view, stride.ptr, phase.ptr, lift.ptr, check.ptr, nullptr, &e), e,
                   "mmi_grid_lift_cuda");
      },
      20);
  std::printf("  grid lift alone, stride %-6d (%7lld lines per head)           %8.3f ms\n", stride_value,
              static_cast<long long>(seq / stride_value), ms);
}

}  // namespace

int main() {
  int device = 0;
  CUDA_OK(cudaGetDevice(&device));
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, device));
  std::printf("device %d: %s (sm_%d%d, %d SMs)\n", device, prop.name, prop.major, prop.minor,
              prop.multiProcessorCount);
  std::mt19937 rng(4321);
  test_detect(rng);
  test_lift(rng);
  const std::vector<int32_t> tpf256 = {2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024};
  std::printf("timings at Sk=131072, B=1, H=28 (median of 20 after 3 warm-ups, cudaEvent):\n");
  time_detect(rng, true, tpf256, "planted stride 256, 11 candidates (tpf 256)");
  time_detect(rng, false, tpf256, "no grid (stride 2 wins: span lift over 65536 lines)");
  std::vector<int32_t> many;
  for (int32_t s = 1; s <= 1024; s *= 2) many.push_back(s);
  time_detect(rng, false, many, "no grid, stride 1 candidate (span lift over 131072)");
  for (int32_t s : {1, 2, 8, 256, 4096}) time_lift(rng, s);
  if (g_failures > 0) {
    std::printf("FAILED: %d mismatches\n", g_failures);
    return 1;
  }
  std::printf("all CUDA outputs match the C core\n");
  return 0;
}
