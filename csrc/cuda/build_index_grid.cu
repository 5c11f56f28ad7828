// Grid index builder on the GPU (rule: csrc/core/mmi_index_builders.h; reference:
// csrc/core/build_grid.c). Fully parallel: one thread per (b, h, slot) for the permutations, one
// thread per (b, h, query block) for the ranges.
//
// Per head the lines are first + m * stride (m < n). Slot s < n holds line s; slot n + j holds the
// j-th non-line position p, and p = j + (lines below p) in closed form: j itself before the first
// line, otherwise j + min((j - first) / (stride - 1) + 1, n) (each period after a line holds
// stride - 1 non-lines; past the last line every position is a non-line).
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "mmi_cuda_index.h"

extern "C" {
#include "mmi_internal.h"
}

namespace {

constexpr int kPermThreads = 256;
constexpr int kRangeThreads = 128;
constexpr int kMaxGridY = 65535;
constexpr int kCheckThreads = 256;
constexpr int kMaxCheckBlocks = 1024;

struct GridParams {
  const int32_t* stride;  // [B*H]
  const int32_t* phase;   // [B*H]
  int32_t* q_perm;        // [B*H, S]
  int32_t* k_perm;        // [B*H, S]
  int32_t* ranges;        // [B*H, NQB, 4, 2]
  int32_t* range_count;   // [B*H, NQB]
  int64_t heads_total;    // B * H
  int seq, block_q, block_k, num_q_blocks;
  int span_start, span_end, sink, local;
  bool use_hlines, use_vlines;
};

// The line set of one head; invalid stride/phase (reported by the check) fall back to 1 and 0 so
// the kernels stay well defined.
struct GridLines {
  int first, stride, count;
};

__device__ __forceinline__ GridLines head_lines(const GridParams& p, int64_t bh) {
  int stride = p.stride[bh], phase = p.phase[bh];
  if (stride < 1 || stride > p.span_end - p.span_start || phase < 0 || phase >= stride) {
    stride = 1;
    phase = 0;
  }
  GridLines g;
  g.first = p.span_start + phase;  // < span_end
  g.stride = stride;
  g.count = (p.span_end - g.first + stride - 1) / stride;
  return g;
}

// Original position held by slot `slot` (both permutations are the same).
__device__ __forceinline__ int position_of_slot(const GridLines& g, int slot) {
  if (slot < g.count) return g.first + slot * g.stride;
  const int j = slot - g.count;
  if (j < g.first) return j;
  if (g.stride == 1) return j + g.count;
  return j + min((j - g.first) / (g.stride - 1) + 1, g.count);
}

// Number of line positions < x.
__device__ __forceinline__ long long lines_below(const GridLines& g, long long x) {
  if (x <= g.first) return 0;
  return min((x - g.first + g.stride - 1) / g.stride, static_cast<long long>(g.count));
}

// Number of non-line positions < x (x clipped to [0, seq]).
__device__ __forceinline__ long long others_below(const GridLines& g, long long x, int seq) {
  x = max(0LL, min(x, static_cast<long long>(seq)));
  return x - lines_below(g, x);
}

struct SlotRange {
  long long start, end;
};

// mmi__align_range of the C core.
__device__ __forceinline__ SlotRange align_range(long long lo, long long hi, int align, int limit) {
  lo = max(lo, 0LL);
  hi = min(hi, static_cast<long long>(limit));
  if (lo >= hi) return {0, 0};
  return {lo / align * align, min((hi + align - 1) / align * align, static_cast<long long>(limit))};
}

__device__ __forceinline__ void order_by_start(SlotRange& a, SlotRange& b) {
  if (b.start < a.start) {
    const SlotRange t = a;
    a = b;
    b = t;
  }
}

__global__ void __launch_bounds__(kPermThreads) grid_permutation_kernel(const GridParams p) {
  const int slot = blockIdx.x * kPermThreads + threadIdx.x;
  if (slot >= p.seq) return;
  for (int64_t bh = blockIdx.y; bh < p.heads_total; bh += gridDim.y) {
    const int position = position_of_slot(head_lines(p, bh), slot);
    p.q_perm[bh * p.seq + slot] = position;
    p.k_perm[bh * p.seq + slot] = position;
  }
}

__global__ void __launch_bounds__(kRangeThreads) grid_ranges_kernel(const GridParams p) {
  const int64_t cell = blockIdx.x * static_cast<int64_t>(kRangeThreads) + threadIdx.x;
  if (cell >= p.heads_total * p.num_q_blocks) return;
  const int64_t bh = cell / p.num_q_blocks;
  const int qb = static_cast<int>(cell - bh * p.num_q_blocks);
  const GridLines g = head_lines(p, bh);
  const int n = g.count;
  const int a = qb * p.block_q;
  const int b = static_cast<int>(min(static_cast<long long>(a) + p.block_q, 1LL * p.seq));
  // Slots ascend within each part, so the extreme positions sit at part boundaries.
  long long pmin = position_of_slot(g, a), pmax = position_of_slot(g, b - 1);
  if (a < n && b > n) {
    pmin = min(pmin, static_cast<long long>(position_of_slot(g, n)));
    pmax = max(static_cast<long long>(position_of_slot(g, n - 1)), pmax);
  }
  const long long end = pmax + 1;
  // Five candidate ranges, unused ones empty; sorted by start then merged like the C core (the
  // order among equal starts does not change a merge).
  SlotRange r[5] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}};
  if (p.use_hlines && a < n) {
    r[0] = align_range(0, lines_below(g, end), p.block_k, p.seq);
    r[1] = align_range(n, n + others_below(g, end, p.seq), p.block_k, p.seq);
  } else {
    const long long lo = pmin - p.local + 1;
    const long long sink_end = min(static_cast<long long>(p.sink), end);
    if (p.use_vlines) r[0] = align_range(0, lines_below(g, end), p.block_k, p.seq);
    r[1] = align_range(0, lines_below(g, sink_end), p.block_k, p.seq);
    r[2] = align_range(n, n + others_below(g, sink_end, p.seq), p.block_k, p.seq);
    r[3] = align_range(lines_below(g, lo), lines_below(g, end), p.block_k, p.seq);
    r[4] = align_range(n + others_below(g, lo, p.seq), n + others_below(g, end, p.seq), p.block_k,
                       p.seq);
  }
  // Empty ranges sort last.
#pragma unroll
  for (int i = 0; i < 5; ++i)
    if (r[i].start >= r[i].end) r[i].start = r[i].end = LLONG_MAX;
#pragma unroll
  for (int pass = 0; pass < 4; ++pass)
#pragma unroll
    for (int i = 0; i < 4 - pass; ++i) order_by_start(r[i], r[i + 1]);

  int32_t* out = p.ranges + cell * MMI_GRID_MAX_RANGES * 2;
  // At most four merged ranges: with vertical lines, the sink-line range lies inside theirs.
  int count = 0;
  SlotRange current = r[0];
#pragma unroll
  for (int i = 1; i <= 5; ++i) {
    const bool flush = i == 5 || r[i].start == LLONG_MAX || r[i].start > current.end;
    if (current.start != LLONG_MAX && flush) {
      if (count < MMI_GRID_MAX_RANGES) {
        out[2 * count] = static_cast<int32_t>(current.start);
        out[2 * count + 1] = static_cast<int32_t>(current.end);
      }
      ++count;
      current.start = LLONG_MAX;
    }
    if (i < 5 && r[i].start != LLONG_MAX) {
      if (current.start == LLONG_MAX) current = r[i];
      else current.end = max(current.end, r[i].end);
    }
  }
  count = min(count, static_cast<int>(MMI_GRID_MAX_RANGES));
  for (int i = count; i < MMI_GRID_MAX_RANGES; ++i) {
    out[2 * i] = 0;
    out[2 * i + 1] = 0;
  }
  p.range_count[cell] = count;
}

// First (b, h) whose stride or phase the C core would reject.
__global__ void __launch_bounds__(kCheckThreads) check_grid_kernel(
    const int32_t* stride, const int32_t* phase, int64_t heads_total, int span,
    unsigned long long* first_bad) {
  for (int64_t bh = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; bh < heads_total;
       bh += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t s = stride[bh], ph = phase[bh];
    if (s < 1 || s > span || ph < 0 || ph >= s)
      atomicMin(first_bad, static_cast<unsigned long long>(bh));
  }
}

__global__ void describe_bad_head_kernel(const int32_t* stride, const int32_t* phase,
                                         mmi_device_check* check) {
  const unsigned long long bh = check->first_bad;
  if (bh == MMI_DEVICE_CHECK_PASSED) return;
  check->value = stride[bh];
  check->other = phase[bh];
}

int device_error(cudaError_t status, const char* what, mmi_error* err) {
  return mmi_error_set(err, MMI_ERR_DEVICE, "%s: %s", what, cudaGetErrorString(status));
}

}  // namespace

extern "C" int mmi_build_grid_index_cuda(int64_t batch, int64_t heads,
                                         const mmi_grid_options* options, const int32_t* stride,
                                         const int32_t* phase, int32_t* q_perm, int32_t* k_perm,
                                         int32_t* kv_ranges, int32_t* kv_range_count,
                                         mmi_device_check* check, void* stream, mmi_error* err) {
  int status = mmi_grid_check_options(options, err);
  if (status != MMI_OK) return status;
  if (stride == nullptr || phase == nullptr)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "stride or phase is NULL");
  if (q_perm == nullptr || k_perm == nullptr || kv_ranges == nullptr || kv_range_count == nullptr)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "an output buffer is NULL");
  if (check == nullptr) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "check is NULL");
  if (batch < 1 || heads < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "batch and heads must be >= 1, got %lld, %lld",
                         (long long)batch, (long long)heads);
  const int64_t heads_total = batch * heads;
  if (heads_total >= INT32_MAX)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "batch x heads = %lld exceeds the CUDA builder's limit 2^31 - 1",
                         (long long)heads_total);

  GridParams p;
  p.stride = stride;
  p.phase = phase;
  p.q_perm = q_perm;
  p.k_perm = k_perm;
  p.ranges = kv_ranges;
  p.range_count = kv_range_count;
  p.heads_total = heads_total;
  p.seq = static_cast<int>(options->seq);
  p.block_q = static_cast<int>(options->block_q);
  p.block_k = static_cast<int>(options->block_k);
  p.num_q_blocks = static_cast<int>(mmi_num_q_blocks(options->seq, options->block_q));
  p.span_start = static_cast<int>(options->span_start);
  p.span_end = static_cast<int>(options->span_end);
  // sink and local only enter clipped to [0, seq] positions; clamping keeps them in int range.
  p.sink = static_cast<int>(options->sink < options->seq ? options->sink : options->seq);
  p.local = static_cast<int>(options->local < options->seq + 1 ? options->local : options->seq + 1);
  p.use_hlines = options->use_hlines != 0;
  p.use_vlines = options->use_vlines != 0;

  const cudaStream_t cuda_stream = static_cast<cudaStream_t>(stream);
  cudaError_t cuda_status = cudaMemsetAsync(check, 0xff, sizeof(mmi_device_check), cuda_stream);
  if (cuda_status != cudaSuccess) return device_error(cuda_status, "cudaMemsetAsync(check)", err);
  const int64_t check_blocks = (heads_total + kCheckThreads - 1) / kCheckThreads;
  check_grid_kernel<<<static_cast<unsigned>(check_blocks < kMaxCheckBlocks ? check_blocks
                                                                             : kMaxCheckBlocks),
                      kCheckThreads, 0, cuda_stream>>>(
      stride, phase, heads_total, p.span_end - p.span_start,
      reinterpret_cast<unsigned long long*>(&check->first_bad));
  describe_bad_head_kernel<<<1, 1, 0, cuda_stream>>>(stride, phase, check);

  const dim3 perm_grid(static_cast<unsigned>((p.seq + kPermThreads - 1) / kPermThreads),
                       static_cast<unsigned>(heads_total < kMaxGridY ? heads_total : kMaxGridY));
  grid_permutation_kernel<<<perm_grid, kPermThreads, 0, cuda_stream>>>(p);
  const int64_t cells = heads_total * p.num_q_blocks;
  const int64_t range_blocks = (cells + kRangeThreads - 1) / kRangeThreads;
  if (range_blocks > INT32_MAX)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "batch x heads x query blocks is too large for the CUDA grid (%lld cells)",
                         (long long)cells);
  grid_ranges_kernel<<<static_cast<unsigned>(range_blocks), kRangeThreads, 0, cuda_stream>>>(p);
  cuda_status = cudaGetLastError();
  if (cuda_status != cudaSuccess) return device_error(cuda_status, "grid builder kernel launch", err);
  return MMI_OK;
}

extern "C" int mmi_grid_check_result(const mmi_device_check* check, int64_t heads,
                                     const mmi_grid_options* options, mmi_error* err) {
  mmi_error_clear(err);
  if (check == nullptr || options == nullptr)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "check or options is NULL");
  if (check->first_bad == MMI_DEVICE_CHECK_PASSED) return MMI_OK;
  if (heads < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "heads must be >= 1, got %lld",
                         (long long)heads);
  const long long bh = static_cast<long long>(check->first_bad);
  const long long span = options->span_end - options->span_start;
  if (check->value < 1 || check->value > span)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                         "stride[%lld, %lld] = %d must be in [1, span length %lld]", bh / heads,
                         bh % heads, check->value, span);
  return mmi_error_set(err, MMI_ERR_INVALID_VALUE,
                       "phase[%lld, %lld] = %d must be in [0, stride = %d)", bh / heads, bh % heads,
                       check->other, check->value);
}
