// Grid stride / phase detection and grid lift on the GPU (rules: csrc/core/mmi_grid_detect.h;
// reference: csrc/core/detect_grid.c). No host synchronisation; everything runs on `stream`.
//
// Detection is two kernels:
//   1. candidate_chunks_kernel, one CTA per (candidate, chunk of kPhaseThreads phases, head): each
//      thread owns one phase, loads its <= max_lines line values (coalesced across phases), takes
//      their lower median in registers (bitonic sort of order keys; more than kSmallLines values:
//      a 32-pass bitwise select), and the CTA writes (best median, its phase, window sum) of the
//      chunk to the workspace. Candidates reach the kernel by value, kSliceCandidates per launch.
//   2. select_kernel, one CTA per head: per candidate lift from its chunk records, the smallest
//      stride within tolerance of the best lift, then the grid lift of that (stride, phase) over the
//      whole span (median of up to n lines by a CTA radix select, 4 passes of 8 bits).
// grid_lift_kernel is step 2's last part for given strides and phases.
//
// Medians compare 32-bit order keys (integers), so they are exact selections whatever the
// floating-point flags; lifts divide with __fdiv_rn. Sums are double.
//
// Measured (H200, Sk = 131072, B = 1, H = 28, the 11 candidates of tokens_per_frame 256, cudaEvent
// median; csrc/cuda/tests/grid_detect_harness.cu): 0.05 ms when the grid wins (stride 256, span
// lift over 512 lines); 0.17 ms when stride 2 wins (no grid: the span lift's radix select over
// 65536 lines, one CTA per head, dominates; 0.29 ms for stride 1). Warp-aggregated __match_any
// counting was 0.18 ms, without load unrolling 0.195 ms.
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <vector>

#include "mmi_cuda_index.h"

extern "C" {
#include "mmi_internal.h"
}

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kPhaseThreads = 128;    // phases per CTA of candidate_chunks_kernel
constexpr int kSliceCandidates = 64;  // candidates per launch of candidate_chunks_kernel
constexpr int kSmallLines = 64;       // medians of up to this many lines are sorted in registers
constexpr int kSelectThreads = 512;   // CTA of select_kernel / grid_lift_kernel
constexpr int kSelectWarps = kSelectThreads / 32;
constexpr int kSelectUnroll = 8;      // loads in flight per thread in the CTA radix select
constexpr int kMaxGridY = 65535;
constexpr float kMinMean = 1e-30f;  // clamp of a zero mean mass

// One usable candidate, written by its first chunk's CTA for select_kernel.
struct CandidateInfo {
  int32_t stride, used_lines, chunk_begin, num_chunks;
};

// Result of one chunk of one candidate for one head.
struct ChunkRecord {
  double sum;       // of the window values of the chunk's phases
  uint32_t best;    // order key of the chunk's largest median
  int32_t phase;    // first phase reaching it (INT32_MAX: none)
};
static_assert(sizeof(ChunkRecord) == 16, "ChunkRecord is 16 bytes");

struct ScoreView {
  const float* score;  // [B, H, Sk]
  int64_t stride_b, stride_h;
  int64_t heads_total;
  int heads, span_start, n;  // n = span length
};

__device__ __forceinline__ const float* span_row(const ScoreView& v, int64_t bh) {
  return v.score + (bh / v.heads) * v.stride_b + (bh % v.heads) * v.stride_h + v.span_start;
}

struct SliceParams {
  ScoreView scores;
  int max_lines;
  int total_chunks;     // chunks per head over all usable candidates
  int num_candidates;   // in this slice
  int first_candidate;  // index of the slice's first candidate among the usable ones
  int32_t stride[kSliceCandidates];
  int32_t chunk_begin[kSliceCandidates + 1];  // per-head chunk index of each candidate; [n]: end
  CandidateInfo* table;   // [usable candidates]
  ChunkRecord* records;   // [heads_total, total_chunks]
};

struct SelectParams {
  ScoreView scores;
  int num_candidates;  // usable
  int total_chunks;
  float tolerance;
  const CandidateInfo* table;
  const ChunkRecord* records;
  int32_t* stride_out;  // [B * H]
  int32_t* phase_out;
  float* lift_out;
};

struct LiftParams {
  ScoreView scores;
  const int32_t* stride;  // [B * H]
  const int32_t* phase;
  float* lift;
  unsigned long long* first_bad;
};

// ---- order keys ---------------------------------------------------------------------------------

// Unsigned key in the order of the float; -0 is taken as +0 so that equal floats get equal keys.
__device__ __forceinline__ uint32_t order_key(float f) {
  uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) == 0) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float key_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

__device__ __forceinline__ float lift_of(float line_mass, float mean) {
  return __fdiv_rn(line_mass, mean > kMinMean ? mean : kMinMean);
}

// ---- per-thread medians -------------------------------------------------------------------------

template <int P>
__device__ __forceinline__ void bitonic_sort(uint32_t (&v)[P]) {
#pragma unroll
  for (int k = 2; k <= P; k <<= 1)
#pragma unroll
    for (int j = k >> 1; j > 0; j >>= 1)
#pragma unroll
      for (int i = 0; i < P; ++i) {
        const int l = i ^ j;
        if (l > i) {
          const uint32_t lo = min(v[i], v[l]), hi = max(v[i], v[l]);
          const bool ascending = (i & k) == 0;
          v[i] = ascending ? lo : hi;
          v[l] = ascending ? hi : lo;
        }
      }
}

// Lower median key of x[l * step], l < count <= P, and the sum of those values.
template <int P>
__device__ uint32_t sorted_median(const float* x, int count, int64_t step, double* sum) {
  uint32_t v[P];
  double s = 0.0;
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const float value = i < count ? x[i * step] : 0.0f;
    s += value;
    v[i] = i < count ? order_key(value) : UINT32_MAX;  // padding sorts last
  }
  bitonic_sort<P>(v);
  const int k = (count - 1) / 2;
  uint32_t result = v[0];
#pragma unroll
  for (int i = 1; i < P; ++i)
    if (i == k) result = v[i];  // static indices keep v in registers
  *sum = s;
  return result;
}

// Same for any count: the largest key x with fewer than k + 1 values below it, bit by bit.
__device__ uint32_t bitwise_median(const float* x, int count, int64_t step, double* sum) {
  double s = 0.0;
  for (int i = 0; i < count; ++i) s += x[i * step];
  *sum = s;
  const int k = (count - 1) / 2;
  uint32_t result = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t trial = result | (1u << bit);
    int below = 0;
    for (int i = 0; i < count; ++i) below += order_key(x[i * step]) < trial;
    if (below <= k) result = trial;
  }
  return result;
}

__device__ uint32_t lines_median(const float* x, int count, int64_t step, double* sum) {
  if (count <= 1) return sorted_median<1>(x, count, step, sum);
  if (count <= 2) return sorted_median<2>(x, count, step, sum);
  if (count <= 4) return sorted_median<4>(x, count, step, sum);
  if (count <= 8) return sorted_median<8>(x, count, step, sum);
  if (count <= 16) return sorted_median<16>(x, count, step, sum);
  if (count <= 32) return sorted_median<32>(x, count, step, sum);
  if (count <= kSmallLines) return sorted_median<kSmallLines>(x, count, step, sum);
  return bitwise_median(x, count, step, sum);
}

// ---- CTA reductions -----------------------------------------------------------------------------

// (key, phase) order: larger key first, then smaller phase.
__device__ __forceinline__ bool better(uint32_t key, int phase, uint32_t other_key, int other_phase) {
  return key > other_key || (key == other_key && phase < other_phase);
}

__device__ __forceinline__ void warp_best(uint32_t& key, int& phase, double& sum) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    const uint32_t k = __shfl_down_sync(kFullMask, key, offset);
    const int p = __shfl_down_sync(kFullMask, phase, offset);
    sum += __shfl_down_sync(kFullMask, sum, offset);
    if (better(k, p, key, phase)) {
      key = k;
      phase = p;
    }
  }
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(kFullMask, v, offset);
  return v;
}

// Sum over the CTA (kSelectThreads), returned to every thread.
__device__ double cta_sum(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < kSelectWarps ? scratch[lane] : 0.0;
    v = warp_sum(v);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  const double total = scratch[0];
  __syncthreads();
  return total;
}

// ---- kernel 1: candidate chunks -----------------------------------------------------------------

__global__ void __launch_bounds__(kPhaseThreads)
    candidate_chunks_kernel(const __grid_constant__ SliceParams p) {
  __shared__ uint32_t warp_key[kPhaseThreads / 32];
  __shared__ int warp_phase[kPhaseThreads / 32];
  __shared__ double warp_sum_shared[kPhaseThreads / 32];

  const int chunk = p.chunk_begin[0] + static_cast<int>(blockIdx.x);
  int c = 0;
  while (c + 1 < p.num_candidates && p.chunk_begin[c + 1] <= chunk) ++c;
  const int s = p.stride[c];
  const int lines = p.scores.n / s;
  const int used = min(lines, p.max_lines);
  const int chunk_in_candidate = chunk - p.chunk_begin[c];
  const int phase = chunk_in_candidate * kPhaseThreads + static_cast<int>(threadIdx.x);
  if (blockIdx.y == 0 && chunk_in_candidate == 0 && threadIdx.x == 0)
    p.table[p.first_candidate + c] = {s, used, p.chunk_begin[c],
                                      p.chunk_begin[c + 1] - p.chunk_begin[c]};
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;

  for (int64_t bh = blockIdx.y; bh < p.scores.heads_total; bh += gridDim.y) {
    const float* window = span_row(p.scores, bh) + static_cast<int64_t>(lines - used) * s;
    uint32_t key = 0;
    int best_phase = INT32_MAX;
    double sum = 0.0;
    if (phase < s) {
      key = lines_median(window + phase, used, s, &sum);
      best_phase = phase;
    }
    warp_best(key, best_phase, sum);
    if (lane == 0) {
      warp_key[warp] = key;
      warp_phase[warp] = best_phase;
      warp_sum_shared[warp] = sum;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 1; w < kPhaseThreads / 32; ++w) {
        sum += warp_sum_shared[w];
        if (better(warp_key[w], warp_phase[w], key, best_phase)) {
          key = warp_key[w];
          best_phase = warp_phase[w];
        }
      }
      p.records[bh * p.total_chunks + chunk] = {sum, key, best_phase};
    }
    __syncthreads();
  }
}

// ---- kernel 2: choice and span lift -------------------------------------------------------------

struct SelectShared {
  uint32_t warp_histogram[kSelectWarps][256];
  double sums[kSelectWarps];
  float lifts[kSelectWarps];
  long long choices[kSelectWarps];
  uint32_t digit;
  long long rank;
  int chosen_phase;
};

// Detection lift (and phase) of usable candidate c from its chunk records.
__device__ float candidate_lift(const SelectParams& p, int64_t bh, int c, int* phase) {
  const CandidateInfo info = p.table[c];
  const ChunkRecord* records = p.records + bh * p.total_chunks + info.chunk_begin;
  uint32_t best = records[0].best;
  int best_phase = records[0].phase;
  double sum = records[0].sum;
  for (int i = 1; i < info.num_chunks; ++i) {  // chunks ascend in phase: strict > keeps the first
    const ChunkRecord r = records[i];
    sum += r.sum;
    if (r.best > best) {
      best = r.best;
      best_phase = r.phase;
    }
  }
  *phase = best_phase;
  const double count = static_cast<double>(info.used_lines) * info.stride;
  return lift_of(key_value(best), static_cast<float>(sum / count));
}

// Value of 0-based rank k among x[i * step], i < count: radix select over order keys, 8 bits a
// pass. Counts go to per-warp histograms (a warp whose lanes share one digit adds once), which
// warp 0 then scans.
__device__ float cta_select(const float* x, int64_t count, int64_t step, long long k,
                            SelectShared& sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint32_t* histogram = sh.warp_histogram[warp];
  uint32_t prefix = 0, mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < kSelectWarps * 256; i += kSelectThreads)
      sh.warp_histogram[i / 256][i % 256] = 0;
    __syncthreads();
    // Warp-uniform trip count (the votes need every lane); kSelectUnroll loads in flight.
    for (int64_t base = threadIdx.x - lane; base < count; base += kSelectThreads * kSelectUnroll) {
      uint32_t keys[kSelectUnroll];
#pragma unroll
      for (int u = 0; u < kSelectUnroll; ++u) {
        const int64_t i = base + u * kSelectThreads + lane;
        keys[u] = i < count ? order_key(x[i * step]) : 0;
      }
#pragma unroll
      for (int u = 0; u < kSelectUnroll; ++u) {
        const bool counted = base + u * kSelectThreads + lane < count && (keys[u] & mask) == prefix;
        const int digit = counted ? static_cast<int>((keys[u] >> shift) & 0xffu) : -1;
        const int first = __shfl_sync(kFullMask, digit, 0);
        if (__all_sync(kFullMask, digit == first)) {
          if (lane == 0 && first >= 0) atomicAdd(&histogram[first], 32u);
        } else if (counted) {
          atomicAdd(&histogram[digit], 1u);
        }
      }
    }
    __syncthreads();
    for (int bin = threadIdx.x; bin < 256; bin += kSelectThreads) {  // merge into warp 0's row
      uint32_t total = 0;
      for (int w = 0; w < kSelectWarps; ++w) total += sh.warp_histogram[w][bin];
      sh.warp_histogram[0][bin] = total;
    }
    __syncthreads();
    if (threadIdx.x < 32) {  // warp 0 finds the digit holding rank k: lane owns bins 8 lane + j
      uint32_t bins[8];
      long long total = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        bins[j] = sh.warp_histogram[0][8 * lane + j];
        total += bins[j];
      }
      long long inclusive = total;
#pragma unroll
      for (int offset = 1; offset < 32; offset <<= 1) {
        const long long up = __shfl_up_sync(kFullMask, inclusive, offset);
        if (lane >= offset) inclusive += up;
      }
      long long below = inclusive - total;
      if (below <= k && k < inclusive) {
        long long r = k - below;
        int d = 0;
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          if (d == 0 && r < static_cast<long long>(bins[j])) d = j + 1;
          if (d == 0) r -= bins[j];
        }
        sh.digit = static_cast<uint32_t>(8 * lane + d - 1);
        sh.rank = r;
      }
    }
    __syncthreads();
    prefix |= sh.digit << shift;
    mask |= 0xffu << shift;
    k = sh.rank;
    __syncthreads();
  }
  return key_value(prefix);
}

// Grid lift of (stride, phase) over the whole span of head bh; every thread gets it.
__device__ float span_lift(const ScoreView& v, int64_t bh, int stride, int phase,
                           SelectShared& sh) {
  const float* x = span_row(v, bh);
  double sum = 0.0;
#pragma unroll 8
  for (int i = threadIdx.x; i < v.n; i += kSelectThreads) sum += x[i];
  sum = cta_sum(sum, sh.sums);
  const int lines = v.n / stride;
  float median;
  if (lines <= kSmallLines) {
    if (threadIdx.x == 0) {
      double unused;
      sh.lifts[0] = key_value(lines_median(x + phase, lines, stride, &unused));
    }
    __syncthreads();
    median = sh.lifts[0];
    __syncthreads();
  } else {
    median = cta_select(x + phase, lines, stride, (lines - 1) / 2, sh);
  }
  return lift_of(median, static_cast<float>(sum / v.n));
}

__global__ void __launch_bounds__(kSelectThreads) select_kernel(const __grid_constant__ SelectParams p) {
  __shared__ SelectShared sh;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t bh = blockIdx.x;

  // Best detection lift over the candidates.
  float max_lift = -INFINITY;
  for (int c = threadIdx.x; c < p.num_candidates; c += kSelectThreads) {
    int phase;
    max_lift = fmaxf(max_lift, candidate_lift(p, bh, c, &phase));
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    max_lift = fmaxf(max_lift, __shfl_xor_sync(kFullMask, max_lift, offset));
  if (lane == 0) sh.lifts[warp] = max_lift;
  __syncthreads();
  max_lift = sh.lifts[0];
  for (int w = 1; w < kSelectWarps; ++w) max_lift = fmaxf(max_lift, sh.lifts[w]);
  const float threshold = __fmul_rn(p.tolerance, max_lift);

  // Smallest stride within tolerance (then first in list order): min of stride << 32 | c.
  long long choice = LLONG_MAX;
  for (int c = threadIdx.x; c < p.num_candidates; c += kSelectThreads) {
    int phase;
    if (candidate_lift(p, bh, c, &phase) >= threshold)
      choice = min(choice, (static_cast<long long>(p.table[c].stride) << 32) | c);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1)
    choice = min(choice, __shfl_xor_sync(kFullMask, choice, offset));
  if (lane == 0) sh.choices[warp] = choice;
  __syncthreads();
  choice = sh.choices[0];
  for (int w = 1; w < kSelectWarps; ++w) choice = min(choice, sh.choices[w]);
  const int chosen = choice == LLONG_MAX ? 0 : static_cast<int>(choice & 0xffffffffll);  // NaN only
  if (threadIdx.x == 0) {
    int phase;
    candidate_lift(p, bh, chosen, &phase);
    sh.chosen_phase = phase;
  }
  __syncthreads();
  const int stride = p.table[chosen].stride, phase = sh.chosen_phase;
  __syncthreads();
  const float lift = span_lift(p.scores, bh, stride, phase, sh);
  if (threadIdx.x == 0) {
    p.stride_out[bh] = stride;
    p.phase_out[bh] = phase;
    p.lift_out[bh] = lift;
  }
}

// ---- grid lift of given strides and phases ------------------------------------------------------

__global__ void __launch_bounds__(kSelectThreads) grid_lift_kernel(const __grid_constant__ LiftParams p) {
  __shared__ SelectShared sh;
  const int64_t bh = blockIdx.x;
  const int stride = p.stride[bh], phase = p.phase[bh];
  if (stride < 1 || stride > p.scores.n || phase < 0 || phase >= stride) {  // uniform per CTA
    if (threadIdx.x == 0) {
      p.lift[bh] = NAN;
      atomicMin(p.first_bad, static_cast<unsigned long long>(bh));
    }
    return;
  }
  const float lift = span_lift(p.scores, bh, stride, phase, sh);
  if (threadIdx.x == 0) p.lift[bh] = lift;
}

__global__ void describe_bad_head_kernel(const int32_t* stride, const int32_t* phase,
                                         mmi_device_check* check) {
  const unsigned long long bh = check->first_bad;
  if (bh == MMI_DEVICE_CHECK_PASSED) return;
  check->value = stride[bh];
  check->other = phase[bh];
}

// ---- host side ----------------------------------------------------------------------------------

int device_error(cudaError_t status, const char* what, mmi_error* err) {
  return mmi_error_set(err, MMI_ERR_DEVICE, "%s: %s", what, cudaGetErrorString(status));
}

// Usable candidates in list order and their chunk offsets (per head).
struct Plan {
  std::vector<int32_t> strides;
  std::vector<int64_t> chunk_begin;  // size strides + 1
  size_t table_bytes = 0, record_bytes = 0;
};

Plan make_plan(const mmi_grid_detect_problem* p) {
  Plan plan;
  const int64_t n = p->scores.span_end - p->scores.span_start;
  plan.chunk_begin.push_back(0);
  for (int64_t c = 0; c < p->num_candidates; ++c) {
    const int32_t s = p->candidate_strides[c];
    if (s > n / 2) continue;
    plan.strides.push_back(s);
    plan.chunk_begin.push_back(plan.chunk_begin.back() + (s + kPhaseThreads - 1) / kPhaseThreads);
  }
  const size_t table = plan.strides.size() * sizeof(CandidateInfo);
  plan.table_bytes = (table + 15) / 16 * 16;
  plan.record_bytes = static_cast<size_t>(p->scores.batch * p->scores.heads) *
                      static_cast<size_t>(plan.chunk_begin.back()) * sizeof(ChunkRecord);
  return plan;
}

ScoreView score_view(const mmi_grid_scores& s) {
  ScoreView v;
  v.score = s.vertical_score;
  v.stride_b = s.score_stride_b;
  v.stride_h = s.score_stride_h;
  v.heads_total = s.batch * s.heads;
  v.heads = static_cast<int>(s.heads);
  v.span_start = static_cast<int>(s.span_start);
  v.n = static_cast<int>(s.span_end - s.span_start);
  return v;
}

int check_heads(const mmi_grid_scores& s, mmi_error* err) {
  if (s.batch * s.heads >= INT32_MAX || s.heads >= INT32_MAX)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "vertical_score: batch x heads = %lld exceeds the CUDA limit 2^31 - 1",
                         (long long)(s.batch * s.heads));
  return MMI_OK;
}

}  // namespace

extern "C" size_t mmi_detect_grid_cuda_workspace_bytes(const mmi_grid_detect_problem* problem) {
  mmi_error err;
  if (mmi_detect_grid_check(problem, &err) != MMI_OK || check_heads(problem->scores, &err) != MMI_OK)
    return 0;
  const Plan plan = make_plan(problem);
  return plan.table_bytes + plan.record_bytes;
}

extern "C" int mmi_detect_grid_cuda(const mmi_grid_detect_problem* problem, int32_t* stride,
                                    int32_t* phase, float* lift, void* workspace,
                                    size_t workspace_bytes, void* stream, mmi_error* err) {
  int status = mmi_detect_grid_check(problem, err);
  if (status != MMI_OK) return status;
  status = check_heads(problem->scores, err);
  if (status != MMI_OK) return status;
  if (problem->scores.vertical_score == nullptr)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "vertical_score is NULL");
  if (stride == nullptr || phase == nullptr || lift == nullptr)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "stride, phase and lift must be non-NULL");
  const Plan plan = make_plan(problem);
  const size_t needed = plan.table_bytes + plan.record_bytes;
  if (workspace == nullptr || workspace_bytes < needed ||
      reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "workspace: need %zu bytes, 16-byte aligned, got %zu bytes at %p", needed,
                         workspace_bytes, workspace);
  const int64_t total_chunks = plan.chunk_begin.back();
  if (total_chunks > INT32_MAX)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "candidate_strides: %lld phase chunks per head exceed the CUDA limit",
                         (long long)total_chunks);

  auto* table = static_cast<CandidateInfo*>(workspace);
  auto* records = reinterpret_cast<ChunkRecord*>(static_cast<char*>(workspace) + plan.table_bytes);
  const ScoreView view = score_view(problem->scores);
  const cudaStream_t cuda_stream = static_cast<cudaStream_t>(stream);
  const int num_usable = static_cast<int>(plan.strides.size());
  const unsigned grid_y =
      static_cast<unsigned>(view.heads_total < kMaxGridY ? view.heads_total : kMaxGridY);
  for (int first = 0; first < num_usable; first += kSliceCandidates) {
    SliceParams sp;
    sp.scores = view;
    sp.max_lines = static_cast<int>(mmi__min64(problem->max_lines, view.n));
    sp.total_chunks = static_cast<int>(total_chunks);
    sp.num_candidates = num_usable - first < kSliceCandidates ? num_usable - first : kSliceCandidates;
    sp.first_candidate = first;
    for (int c = 0; c <= sp.num_candidates; ++c) {
      if (c < sp.num_candidates) sp.stride[c] = plan.strides[first + c];
      sp.chunk_begin[c] = static_cast<int32_t>(plan.chunk_begin[first + c]);
    }
    sp.table = table;
    sp.records = records;
    const unsigned chunks = static_cast<unsigned>(sp.chunk_begin[sp.num_candidates] - sp.chunk_begin[0]);
    candidate_chunks_kernel<<<dim3(chunks, grid_y), kPhaseThreads, 0, cuda_stream>>>(sp);
  }
  SelectParams sel;
  sel.scores = view;
  sel.num_candidates = num_usable;
  sel.total_chunks = static_cast<int>(total_chunks);
  sel.tolerance = problem->tolerance;
  sel.table = table;
  sel.records = records;
  sel.stride_out = stride;
  sel.phase_out = phase;
  sel.lift_out = lift;
  select_kernel<<<static_cast<unsigned>(view.heads_total), kSelectThreads, 0, cuda_stream>>>(sel);
  const cudaError_t cuda_status = cudaGetLastError();
  if (cuda_status != cudaSuccess) return device_error(cuda_status, "detect_grid kernel launch", err);
  return MMI_OK;
}

extern "C" int mmi_grid_lift_cuda(const mmi_grid_scores* scores, const int32_t* stride,
                                  const int32_t* phase, float* lift, mmi_device_check* check,
                                  void* stream, mmi_error* err) {
  int status = mmi_grid_scores_check(scores, err);
  if (status != MMI_OK) return status;
  status = check_heads(*scores, err);
  if (status != MMI_OK) return status;
  if (scores->vertical_score == nullptr)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "vertical_score is NULL");
  if (stride == nullptr || phase == nullptr || lift == nullptr)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "stride, phase and lift must be non-NULL");
  if (check == nullptr) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "check is NULL");
  const cudaStream_t cuda_stream = static_cast<cudaStream_t>(stream);
  cudaError_t cuda_status = cudaMemsetAsync(check, 0xff, sizeof(mmi_device_check), cuda_stream);
  if (cuda_status != cudaSuccess) return device_error(cuda_status, "cudaMemsetAsync(check)", err);
  LiftParams lp;
  lp.scores = score_view(*scores);
  lp.stride = stride;
  lp.phase = phase;
  lp.lift = lift;
  lp.first_bad = reinterpret_cast<unsigned long long*>(&check->first_bad);
  grid_lift_kernel<<<static_cast<unsigned>(lp.scores.heads_total), kSelectThreads, 0, cuda_stream>>>(lp);
  describe_bad_head_kernel<<<1, 1, 0, cuda_stream>>>(stride, phase, check);
  cuda_status = cudaGetLastError();
  if (cuda_status != cudaSuccess) return device_error(cuda_status, "grid_lift kernel launch", err);
  return MMI_OK;
}

extern "C" int mmi_grid_lift_check_result(const mmi_device_check* check, int64_t heads,
                                          const mmi_grid_scores* scores, mmi_error* err) {
  mmi_error_clear(err);
  if (check == nullptr || scores == nullptr)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "check or scores is NULL");
  if (check->first_bad == MMI_DEVICE_CHECK_PASSED) return MMI_OK;
  if (heads < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "heads must be >= 1, got %lld",
                         (long long)heads);
  const int status = mmi_grid_lift_entry_error(static_cast<int64_t>(check->first_bad), heads,
                                               scores->span_end - scores->span_start,
                                               check->value, check->other, err);
  return status != MMI_OK ? status
                          : mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                                          "stride/phase: entry %llu failed the device check",
                                          static_cast<unsigned long long>(check->first_bad));
}
