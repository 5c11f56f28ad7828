// Vertical-slash index builder on the GPU (rule: csrc/core/mmi_index_builders.h; reference:
// csrc/core/build_vertical_slash.c). One warp per (b, h, query block); a CTA covers a run of query
// blocks of one (b, h) and stages that head's slash list in shared memory once.
//
// Per query block, visiting slashes from the largest causal distance down gives ranges whose starts
// and ends both never decrease, so the C core's sort + merge is a single pass: a range opens a new
// merged range exactly when its start exceeds the previous range's end. The warp handles 32
// slashes per step with ballots. Coverage of a vertical v is decided without the merged ranges:
// v lies in the aligned range of slash d iff a_lo - (v/bk + 1) * bk < d <= a_hi - (v/bk) * bk,
// one binary search in the sorted slash list, plus the capacity cap's extended last range.
//
// Slash runs: in a full query block (block_q rows) the key ranges of two slashes d1 < d2 overlap or
// touch iff d2 - d1 <= block_q, whatever the block. A CTA therefore first groups its head's
// slash list into runs (consecutive gaps <= block_q); a full block then visits one range per causal
// run (its union, aligned) instead of one per slash: a few steps where 4096 slashes took 128. The
// merged ranges are the same, since aligning a union of touching ranges gives the union of the
// aligned ones. The last, partial block of a sequence keeps the per-slash visit.
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "mmi_cuda_index.h"

extern "C" {
#include "mmi_internal.h"
}

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kQueryBlocksPerCta = 32;         // 4 per warp: the staged slash list is reused
constexpr int64_t kSharedSlashCapacity = 12288;  // 48 KB of int32; longer lists stay in global
constexpr int64_t kSharedRunCapacity = 4096;     // slash list + run bounds: 48 KB of int32
// The builder's dynamic shared memory ceiling: the larger of the two staging layouts.
constexpr int64_t kMaxStagedBytes = 4 * (kSharedSlashCapacity > 3 * kSharedRunCapacity
                                             ? kSharedSlashCapacity
                                             : 3 * kSharedRunCapacity);
static_assert(kSharedRunCapacity <= kSharedSlashCapacity,
              "a list short enough for runs must also fit the plain staging");
static_assert(kMaxStagedBytes <= 99 * 1024 - 1024,
              "staging must fit the smallest opt-in shared memory of sm_80+ (99 KB, sm_86/89)");
constexpr int kCheckThreads = 256;
constexpr int kMaxCheckBlocks = 1024;

// Rounding down to a multiple of block_k; a power of two (the usual case) needs no division.
struct BlockRounding {
  unsigned size;
  bool power_of_two;
  __device__ __forceinline__ unsigned floor(unsigned x) const {
    return power_of_two ? x & ~(size - 1) : x / size * size;
  }
};

struct VerticalSlashParams {
  const int32_t* vertical;  // [B*H, NV]
  const int32_t* slash;     // [B*H, NS]
  int32_t* ranges;          // [B*H, NQB, R, 2]
  int32_t* range_count;     // [B*H, NQB]
  int32_t* columns;         // [B*H, NQB, NV]
  int32_t* column_count;    // [B*H, NQB]
  int num_vertical, num_slash, max_ranges;
  int num_q_blocks, ctas_per_head;
  int seq_q, block_q, offset;
  BlockRounding block_k;
  bool slash_in_shared;
  bool use_runs;  // slash runs staged in shared memory too (num_slash <= kSharedRunCapacity)
};

// A head's slash runs (shared memory): run r spans distances [first[r], last[r]].
struct SlashRuns {
  const int32_t* first;
  const int32_t* last;
  int count;
};

struct KeyRange {
  int start, end;  // empty when start >= end
};

// align(a_lo - d, a_hi - d + 1, block_k, limit) of the C core, for one slash distance d, or the
// union over the slashes of a run spanning distances [d_lo, d_hi].
__device__ __forceinline__ KeyRange slash_key_range(int d_lo, int d_hi, int a_lo, int a_hi,
                                                    int limit, BlockRounding block_k) {
  const long long lo = max(static_cast<long long>(a_lo) - d_hi, 0LL);
  const long long hi = min(static_cast<long long>(a_hi) - d_lo + 1, static_cast<long long>(limit));
  if (lo >= hi) return {0, 0};
  // lo < hi <= limit < 2^31, so hi + block_k - 1 fits in 32 unsigned bits.
  const unsigned start = block_k.floor(static_cast<unsigned>(lo));
  const unsigned end = block_k.floor(static_cast<unsigned>(hi) + block_k.size - 1);
  return {static_cast<int>(start), static_cast<int>(min(end, static_cast<unsigned>(limit)))};
}

// Number of entries of the ascending list[0, n) that are <= bound.
__device__ __forceinline__ int count_at_most(const int32_t* list, int n, long long bound) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (list[mid] <= bound) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

// Is key v inside the aligned range of some slash among the causal ones, slash[0, n_causal)?
__device__ __forceinline__ bool covered_by_slash(const int32_t* slash, int n_causal, int v,
                                                 int a_lo, int a_hi, BlockRounding block_k) {
  const long long v_block_start = block_k.floor(static_cast<unsigned>(v));  // 0 <= v < 2^31
  const long long d_lo = static_cast<long long>(a_lo) - v_block_start - block_k.size + 1;
  const long long d_hi = static_cast<long long>(a_hi) - v_block_start;
  const int first = count_at_most(slash, n_causal, d_lo - 1);  // first entry >= d_lo
  return first < n_causal && slash[first] <= d_hi;
}

// Groups the CTA's slash list slash[0, n) into runs of consecutive gaps <= gap (all threads of
// the CTA; first / last hold n entries). Returns the run count.
__device__ int build_slash_runs(const int32_t* slash, int n, int gap, int32_t* first,
                                int32_t* last) {
  __shared__ int warp_totals[kWarps];
  const int per_thread = (n + kThreads - 1) / kThreads;
  const int begin = min(static_cast<int>(threadIdx.x) * per_thread, n);
  const int end = min(begin + per_thread, n);
  auto opens_run = [&](int i) {
    return i == 0 || static_cast<long long>(slash[i]) - slash[i - 1] > gap;
  };
  int heads = 0;
  for (int i = begin; i < end; ++i) heads += opens_run(i) ? 1 : 0;
  // Exclusive prefix sum of heads over the CTA's threads.
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int inclusive = heads;
  for (int offset = 1; offset < 32; offset <<= 1) {
    const int other = __shfl_up_sync(kFullMask, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  int before = inclusive - heads;
  int total = 0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += warp_totals[w];
    total += warp_totals[w];
  }
  for (int i = begin, r = before; i < end; ++i) {
    if (!opens_run(i)) continue;
    first[r] = slash[i];
    if (r > 0) last[r - 1] = slash[i - 1];
    ++r;
  }
  if (threadIdx.x == 0 && total > 0) last[total - 1] = slash[n - 1];
  __syncthreads();
  return total;
}

// The whole index of one (b, h, query block), by one warp.
__device__ void build_query_block(const VerticalSlashParams& p, int64_t bh, int qb,
                                  const int32_t* slash, const SlashRuns& runs) {
  const int lane = threadIdx.x & 31;
  const unsigned lanes_below = (1u << lane) - 1u;
  const int64_t cell = bh * p.num_q_blocks + qb;
  const int a_lo = qb * p.block_q + p.offset;
  const int limit =
      static_cast<int>(min(static_cast<long long>(qb + 1) * p.block_q, 1LL * p.seq_q)) + p.offset;
  const int a_hi = limit - 1;
  const int max_ranges = p.max_ranges;
  int32_t* out_ranges = p.ranges + cell * max_ranges * 2;

  // Slashes with d > a_hi give empty ranges; the causal ones are slash[0, n_causal). A full
  // block visits the causal runs instead (the last one cut at the largest causal slash).
  const int n_causal = count_at_most(slash, p.num_slash, a_hi);
  const bool by_runs = p.use_runs && limit - a_lo == p.block_q;
  const int n_items = by_runs ? count_at_most(runs.first, runs.count, a_hi) : n_causal;
  const int largest_causal = n_causal > 0 ? slash[n_causal - 1] : 0;
  int merged = 0;        // merged ranges opened so far
  int open_end = -1;     // end of the last merged range (still open), -1 before the first
  int capped_start = 0;  // start of merged range max_ranges - 1 (the one the cap extends)
  for (int step = 0; step < n_items; step += 32) {
    const int t = step + lane;  // visit order: t-th largest causal distance (or run)
    KeyRange r{0, 0};
    if (t < n_items) {
      const int item = n_items - 1 - t;
      const int d_lo = by_runs ? runs.first[item] : slash[item];
      const int d_hi = by_runs ? min(runs.last[item], largest_causal) : d_lo;
      r = slash_key_range(d_lo, d_hi, a_lo, a_hi, limit, p.block_k);
    }
    int previous_end = __shfl_up_sync(kFullMask, r.end, 1);
    if (lane == 0) previous_end = open_end;
    const bool opens = r.start < r.end && r.start > previous_end;
    const unsigned openers = __ballot_sync(kFullMask, opens);
    const int index = merged + __popc(openers & lanes_below);
    // A merged range closes at the lane before the next opener; the last one stays open.
    const unsigned later = openers & ~(lanes_below | (1u << lane));
    const int close_end = __shfl_sync(kFullMask, r.end, later != 0 ? __ffs(later) - 2 : 31);
    const int first_opener = openers != 0 ? __ffs(openers) - 1 : 0;
    const int end_before_first = __shfl_sync(kFullMask, r.end, max(first_opener - 1, 0));
    if (opens) {
      if (index < max_ranges) out_ranges[2 * index] = r.start;
      if (later != 0 && index < max_ranges - 1) out_ranges[2 * index + 1] = close_end;
    }
    // The range left open by the previous step closes at this step's first opener.
    if (lane == 0 && openers != 0 && merged > 0 && merged - 1 < max_ranges - 1)
      out_ranges[2 * (merged - 1) + 1] = first_opener > 0 ? end_before_first : open_end;
    const unsigned cap_opener = __ballot_sync(kFullMask, opens && index == max_ranges - 1);
    if (cap_opener != 0) capped_start = __shfl_sync(kFullMask, r.start, __ffs(cap_opener) - 1);
    const int last_lane = min(31, n_items - 1 - step);
    open_end = max(open_end, __shfl_sync(kFullMask, r.end, last_lane));
    merged += __popc(openers);
  }
  // Over capacity, range max_ranges - 1 runs to the end of the last merged range.
  const int n_ranges = min(merged, max_ranges);
  if (lane == 0 && n_ranges > 0) out_ranges[2 * (n_ranges - 1) + 1] = open_end;
  const bool capped = merged > max_ranges;
  for (int r = n_ranges + lane; r < max_ranges; r += 32)
    reinterpret_cast<int2*>(out_ranges)[r] = make_int2(0, 0);

  // Columns: causal verticals (v <= a_hi) in no range, in order.
  const int32_t* vertical = p.vertical + bh * p.num_vertical;
  int32_t* out_columns = p.columns + cell * p.num_vertical;
  int n_columns = 0;
  for (int step = 0; step < p.num_vertical; step += 32) {
    const int i = step + lane;
    const int v = i < p.num_vertical ? vertical[i] : INT_MAX;
    const bool causal = v <= a_hi;
    const bool in_cap = capped && v >= capped_start && v < open_end;
    const bool keep =
        causal && !in_cap && !covered_by_slash(slash, n_causal, v, a_lo, a_hi, p.block_k);
    const unsigned keepers = __ballot_sync(kFullMask, keep);
    if (keep) out_columns[n_columns + __popc(keepers & lanes_below)] = v;
    n_columns += __popc(keepers);
    if (__ballot_sync(kFullMask, causal) != kFullMask) break;  // sorted: the rest are later
  }
  for (int c = n_columns + lane; c < p.num_vertical; c += 32) out_columns[c] = 0;
  if (lane == 0) {
    p.range_count[cell] = n_ranges;
    p.column_count[cell] = n_columns;
  }
}

__global__ void __launch_bounds__(kThreads) build_vertical_slash_kernel(const VerticalSlashParams p) {
  // [NS] when p.slash_in_shared, then run firsts [NS] and lasts [NS] when p.use_runs
  extern __shared__ int32_t staged_slash[];
  const int64_t bh = blockIdx.x / p.ctas_per_head;
  const int first_qb = static_cast<int>(blockIdx.x % p.ctas_per_head) * kQueryBlocksPerCta;
  const int32_t* slash = p.slash + bh * p.num_slash;
  if (p.slash_in_shared) {
    for (int i = threadIdx.x; i < p.num_slash; i += kThreads) staged_slash[i] = slash[i];
    __syncthreads();
    slash = staged_slash;
  }
  SlashRuns runs{nullptr, nullptr, 0};
  if (p.use_runs) {
    int32_t* first = staged_slash + p.num_slash;
    int32_t* last = first + p.num_slash;
    runs = {first, last, build_slash_runs(slash, p.num_slash, p.block_q, first, last)};
  }
  const int end_qb = min(first_qb + kQueryBlocksPerCta, p.num_q_blocks);
  for (int qb = first_qb + static_cast<int>(threadIdx.x >> 5); qb < end_qb; qb += kWarps)
    build_query_block(p, bh, qb, slash, runs);
}

// Device-side version of the C core's list validation: key (bh * 2 + list) << 32 | i orders
// entries as the core visits them (per head, vertical before slash, ascending i).
__global__ void __launch_bounds__(kCheckThreads) check_lists_kernel(
    const int32_t* vertical, int64_t num_vertical, const int32_t* slash, int64_t num_slash,
    int64_t lists, int seq_k, unsigned long long* first_bad) {
  const int64_t per_head = num_vertical + num_slash;
  const int64_t total = lists * per_head;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t bh = e / per_head;
    const int64_t j = e - bh * per_head;
    const bool is_slash = j >= num_vertical;
    const int64_t i = is_slash ? j - num_vertical : j;
    const int32_t* list = is_slash ? slash + bh * num_slash : vertical + bh * num_vertical;
    const int32_t v = list[i];
    if (v < 0 || v >= seq_k || (i > 0 && v <= list[i - 1])) {
      const unsigned long long key =
          (static_cast<unsigned long long>(bh * 2 + (is_slash ? 1 : 0)) << 32) |
          static_cast<unsigned long long>(i);
      atomicMin(first_bad, key);
    }
  }
}

// Copies the first bad entry and its predecessor next to the key, for the host's message.
__global__ void describe_first_bad_kernel(const int32_t* vertical, int64_t num_vertical,
                                          const int32_t* slash, int64_t num_slash,
                                          mmi_device_check* check) {
  const unsigned long long key = check->first_bad;
  if (key == MMI_DEVICE_CHECK_PASSED) return;
  const int64_t bh = static_cast<int64_t>(key >> 33);
  const bool is_slash = ((key >> 32) & 1u) != 0;
  const int64_t i = static_cast<int64_t>(key & 0xffffffffu);
  const int32_t* list = is_slash ? slash + bh * num_slash : vertical + bh * num_vertical;
  check->value = list[i];
  check->other = i > 0 ? list[i - 1] : 0;
}

int device_error(cudaError_t status, const char* what, mmi_error* err) {
  return mmi_error_set(err, MMI_ERR_DEVICE, "%s: %s", what, cudaGetErrorString(status));
}

// The C core's argument checks (shared), its pointer checks, plus the CUDA size limits.
int check_arguments(int64_t batch, int64_t heads, int64_t seq_q, int64_t seq_k, int64_t block_q,
                    int64_t block_k, const int32_t* vertical, int64_t num_vertical,
                    const int32_t* slash, int64_t num_slash, int64_t max_ranges,
                    const int32_t* kv_ranges, const int32_t* kv_range_count,
                    const int32_t* kv_columns, const int32_t* kv_column_count,
                    const mmi_device_check* check, mmi_error* err) {
  const int status = mmi_vertical_slash_check_args(batch, heads, seq_q, seq_k, block_q, block_k,
                                                   num_vertical, num_slash, max_ranges, err);
  if (status != MMI_OK) return status;
  if (num_vertical > 0 && vertical == nullptr)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "vertical is NULL");
  if (num_slash > 0 && slash == nullptr)
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "slash is NULL");
  if (kv_range_count == nullptr || kv_column_count == nullptr ||
      (max_ranges > 0 && kv_ranges == nullptr) || (num_vertical > 0 && kv_columns == nullptr))
    return mmi_error_set(err, MMI_ERR_NULL_POINTER, "an output buffer is NULL");
  if (check == nullptr) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "check is NULL");
  if (batch * heads >= INT32_MAX)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "batch x heads = %lld exceeds the CUDA builder's limit 2^31 - 1",
                         (long long)(batch * heads));
  if (num_vertical >= INT32_MAX || num_slash >= INT32_MAX || max_ranges >= INT32_MAX)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "num_vertical (%lld), num_slash (%lld) and max_ranges (%lld) must be "
                         "< 2^31 - 1 for the CUDA builder",
                         (long long)num_vertical, (long long)num_slash, (long long)max_ranges);
  return MMI_OK;
}

}  // namespace

extern "C" int mmi_build_vertical_slash_index_cuda(
    int64_t batch, int64_t heads, int64_t seq_q, int64_t seq_k, int64_t block_q, int64_t block_k,
    const int32_t* vertical, int64_t num_vertical, const int32_t* slash, int64_t num_slash,
    int64_t max_ranges, int32_t* kv_ranges, int32_t* kv_range_count, int32_t* kv_columns,
    int32_t* kv_column_count, mmi_device_check* check, void* stream, mmi_error* err) {
  mmi_error_clear(err);
  int status = check_arguments(batch, heads, seq_q, seq_k, block_q, block_k, vertical,
                               num_vertical, slash, num_slash, max_ranges, kv_ranges,
                               kv_range_count, kv_columns, kv_column_count, check, err);
  if (status != MMI_OK) return status;
  const cudaStream_t cuda_stream = static_cast<cudaStream_t>(stream);

  cudaError_t cuda_status = cudaMemsetAsync(check, 0xff, sizeof(mmi_device_check), cuda_stream);
  if (cuda_status != cudaSuccess) return device_error(cuda_status, "cudaMemsetAsync(check)", err);
  const int64_t lists = batch * heads;
  const int64_t entries = lists * (num_vertical + num_slash);
  if (entries > 0) {
    const int64_t blocks = (entries + kCheckThreads - 1) / kCheckThreads;
    check_lists_kernel<<<static_cast<unsigned>(blocks < kMaxCheckBlocks ? blocks : kMaxCheckBlocks),
                         kCheckThreads, 0, cuda_stream>>>(
        vertical, num_vertical, slash, num_slash, lists, static_cast<int>(seq_k),
        reinterpret_cast<unsigned long long*>(&check->first_bad));
    describe_first_bad_kernel<<<1, 1, 0, cuda_stream>>>(vertical, num_vertical, slash, num_slash,
                                                        check);
    cuda_status = cudaGetLastError();
    if (cuda_status != cudaSuccess)
      return device_error(cuda_status, "vertical-slash check kernel launch", err);
  }

  VerticalSlashParams p;
  p.vertical = vertical;
  p.slash = slash;
  p.ranges = kv_ranges;
  p.range_count = kv_range_count;
  p.columns = kv_columns;
  p.column_count = kv_column_count;
  p.num_vertical = static_cast<int>(num_vertical);
  p.num_slash = static_cast<int>(num_slash);
  p.max_ranges = static_cast<int>(max_ranges);
  p.num_q_blocks = static_cast<int>(mmi_num_q_blocks(seq_q, block_q));
  p.ctas_per_head = (p.num_q_blocks + kQueryBlocksPerCta - 1) / kQueryBlocksPerCta;
  p.seq_q = static_cast<int>(seq_q);
  p.block_q = static_cast<int>(block_q);
  p.block_k.size = static_cast<unsigned>(block_k);
  p.block_k.power_of_two = (block_k & (block_k - 1)) == 0;
  p.offset = static_cast<int>(seq_k - seq_q);
  p.slash_in_shared = num_slash > 0 && num_slash <= kSharedSlashCapacity;
  p.use_runs = num_slash > 0 && num_slash <= kSharedRunCapacity;
  const int64_t ctas = lists * p.ctas_per_head;
  if (ctas > INT32_MAX)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE,
                         "batch x heads x query blocks is too large for the CUDA grid (%lld CTAs)",
                         (long long)ctas);
  const size_t shared_bytes =
      sizeof(int32_t) * num_slash * (p.use_runs ? 3 : p.slash_in_shared ? 1 : 0);
  // The staged lists plus the kernel's static scan slots can pass the 48 KB default. The limit
  // is a process-wide attribute of the kernel, so it is always set to the ceiling: a concurrent
  // call on another stream never lowers it below what this launch needs.
  cuda_status = cudaFuncSetAttribute(build_vertical_slash_kernel,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(kMaxStagedBytes));
  if (cuda_status != cudaSuccess)
    return device_error(cuda_status, "cudaFuncSetAttribute(vertical-slash builder)", err);
  build_vertical_slash_kernel<<<static_cast<unsigned>(ctas), kThreads, shared_bytes,
                                cuda_stream>>>(p);
  cuda_status = cudaGetLastError();
  if (cuda_status != cudaSuccess)
    return device_error(cuda_status, "vertical-slash builder kernel launch", err);
  return MMI_OK;
}

extern "C" int mmi_vertical_slash_check_result(const mmi_device_check* check, int64_t heads,
                                               int64_t seq_k, mmi_error* err) {
  mmi_error_clear(err);
  if (check == nullptr) return mmi_error_set(err, MMI_ERR_NULL_POINTER, "check is NULL");
  if (check->first_bad == MMI_DEVICE_CHECK_PASSED) return MMI_OK;
  if (heads < 1)
    return mmi_error_set(err, MMI_ERR_INVALID_SHAPE, "heads must be >= 1, got %lld",
                         (long long)heads);
  const int64_t bh = static_cast<int64_t>(check->first_bad >> 33);
  const char* name = ((check->first_bad >> 32) & 1u) != 0 ? "slash" : "vertical";
  const long long b = bh / heads, h = bh % heads;
  const long long i = static_cast<long long>(check->first_bad & 0xffffffffu);
  if (check->value < 0 || check->value >= seq_k)
    return mmi_error_set(err, MMI_ERR_INVALID_VALUE, "%s[%lld, %lld, %lld] = %d is outside [0, %lld)",
                         name, b, h, i, check->value, (long long)seq_k);
  return mmi_error_set(err, MMI_ERR_UNSORTED,
                       "%s[%lld, %lld, :] must be strictly increasing, but entry %lld (%d) follows %d",
                       name, b, h, i, check->value, check->other);
}
