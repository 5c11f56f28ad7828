// Tensor Memory Accelerator (TMA) loads of K / V tiles for the warp-specialised sm_90a kernel:
// the host-side tensor maps and the device-side bulk-copy and barrier instructions.
//
// A key tile whose 64 slots hold 64 consecutive key positions (a full tile of a contiguous
// range) is loaded with four TMA copies (K and V, two 64-column halves of D = 128) issued by one
// thread, instead of 2048 16-byte cp.async spread over the producer warpgroup. TMA writes the
// 128-byte-swizzled layout wgmma reads (swizzled_chunk_offset in wgmma_primitives.cuh is that
// layout), and completes a transaction count on the stage's mbarrier.
//
// The tensor map views K (or V) as a 4-D tensor {D, S, H, B} of 16-bit elements in the caller's
// strides, its three outer dimensions ordered by stride; the box is {64 elements, 64 rows, 1, 1}.
// cuTensorMapEncodeTiled is looked up through the runtime (no link against libcuda).
#pragma once

#include <cuda.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "ptx_primitives.cuh"

namespace mmi_cuda {
namespace sm90 {

constexpr int kTmaBoxColumns = 64;  // 128 bytes: one swizzle row
constexpr int kTmaBoxRows = 64;     // one key tile

// Tensor maps of K and V and where the sequence / head / batch coordinates go in them.
struct KvTensorMaps {
  CUtensorMap k, v;
  int seq_dim, head_dim, batch_dim;  // index (1..3) of S, H and B among the map's dimensions
  int enabled;                       // 0: the kernel gathers every tile with cp.async
};

#if defined(__CUDACC__)

// One arrival that also expects `bytes` more transaction bytes in the current phase.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* barrier, uint32_t bytes) {
  asm volatile(
      "{\n.reg .b64 state;\nmbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(
          shared_address(barrier)),
      "r"(bytes)
      : "memory");
}

// The box at coordinates {c0, c1, c2, c3} of `map` into shared memory at dst (1024-byte aligned);
// its bytes complete on `barrier`.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                            int c2, int c3, uint64_t* barrier) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3),
      "r"(shared_address(barrier))
      : "memory");
}

// Rows [row, row + 64) of (batch, head) of one tensor into a [64 rows, D] swizzled tile.
template <int kHeadDim>
__device__ __forceinline__ void tma_load_rows(uint32_t tile, const CUtensorMap* map,
                                              const KvTensorMaps& maps, int row, int head,
                                              int batch, uint64_t* barrier) {
  // Coordinate of map dimension d (1..3), chosen with selects (an indexed array would live in
  // local memory).
  auto coordinate = [&](int d) {
    return d == maps.seq_dim ? row : (d == maps.head_dim ? head : batch);
  };
  const int c1 = coordinate(1), c2 = coordinate(2), c3 = coordinate(3);
#pragma unroll
  for (int half = 0; half < kHeadDim / kTmaBoxColumns; ++half)
    tma_load_4d(tile + half * kTmaBoxRows * kTmaBoxColumns * 2, map, half * kTmaBoxColumns, c1, c2,
                c3, barrier);
}

#endif  // __CUDACC__

// Host: the map of one (B, H, S, D) tensor with element strides (stride_b, stride_h, stride_s)
// and unit stride along D. Returns false (map unusable) when the driver lacks the function or
// rejects the layout (strides not multiples of 16 bytes, ...).
inline bool encode_kv_tensor_map(CUtensorMap* map, const void* base, int64_t batch, int64_t heads,
                                 int64_t seq, int64_t dim, int64_t stride_b, int64_t stride_h,
                                 int64_t stride_s, int* seq_dim, int* head_dim, int* batch_dim) {
  using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                              const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                              const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                              CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  // Looked up once per process (thread-safe static initialisation); null when unavailable.
  static const Encode encode = []() -> Encode {
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    // The by-version lookup pins the 12.0 ABI of the function; it exists from CUDA 12.5 on, where
    // the unversioned lookup is deprecated, so only older toolkits use the unversioned one.
#if CUDART_VERSION >= 12050
    const cudaError_t looked_up = cudaGetDriverEntryPointByVersion(
        "cuTensorMapEncodeTiled", &function, 12000, cudaEnableDefault, &found);
#else
    const cudaError_t looked_up =
        cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &function, cudaEnableDefault, &found);
#endif
    if (looked_up != cudaSuccess || found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return nullptr;
    }
    return reinterpret_cast<Encode>(function);
  }();
  if (encode == nullptr) return false;
  // Outer dimensions by increasing stride; a size-1 dimension's stride is never used, so it
  // gets one past the largest extent (TMA wants non-decreasing strides, multiples of 16 bytes).
  struct Outer {
    int64_t size, stride;
    int which;  // 0 = S, 1 = H, 2 = B
  } outer[3] = {{seq, stride_s, 0}, {heads, stride_h, 1}, {batch, stride_b, 2}};
  int64_t extent = dim;
  for (const Outer& o : outer)
    if (o.size > 1) extent = std::max(extent, o.stride * o.size);
  for (Outer& o : outer)
    if (o.size == 1) o.stride = (extent + 7) / 8 * 8;
  std::stable_sort(outer, outer + 3,
                   [](const Outer& a, const Outer& b) { return a.stride < b.stride; });
  cuuint64_t sizes[4] = {static_cast<cuuint64_t>(dim), 0, 0, 0};
  cuuint64_t strides[3];
  cuuint32_t box[4] = {kTmaBoxColumns, 1, 1, 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  for (int i = 0; i < 3; ++i) {
    sizes[i + 1] = static_cast<cuuint64_t>(outer[i].size);
    strides[i] = static_cast<cuuint64_t>(outer[i].stride) * 2;
    if (outer[i].which == 0) {
      box[i + 1] = kTmaBoxRows;
      *seq_dim = i + 1;
    } else if (outer[i].which == 1) {
      *head_dim = i + 1;
    } else {
      *batch_dim = i + 1;
    }
  }
  const CUresult status = encode(
      map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 4, const_cast<void*>(base), sizes, strides, box,
      element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return status == CUDA_SUCCESS;
}

}  // namespace sm90
}  // namespace mmi_cuda
