// Hopper (sm_90a) building blocks of the wgmma forward kernel: the 128-byte-swizzled shared-memory
// tile layout, wgmma shared-memory matrix descriptors, and the wgmma / async-proxy fences.
//
// Tile layout ("SW128 K-major", also used MN-major for V). A tile of R rows x D 16-bit elements
// (D = 64 or 128) is stored as D / 64 column blocks of [R rows x 64 elements]: block c holds
// elements [64c, 64c + 64) of every row, rows 128 bytes apart. Inside a block, the 16-byte chunk j
// (elements 8j..8j+7) of row r is stored at chunk position j ^ (r % 8). The tile base must be
// 1024-byte aligned: the hardware applies the same XOR to address bits [4, 7) from bits [7, 10)
// of the absolute shared address, which is what lets a descriptor start 32 bytes into a swizzle
// atom for the k16 steps.
//
// Descriptors (PTX ISA "matrix descriptor format"): bits 0-13 start address >> 4, 16-29 leading
// byte offset >> 4, 32-45 stride byte offset >> 4, 49-51 base offset (0: 1024-aligned atoms),
// 62-63 swizzle mode (1 = 128-byte). Canonical layouts in units of 16-byte chunks (T = 8
// elements), as documented by CUTLASS for GMMA:
//   K-major  SW128: ((8, m), (T, 2k)) : ((8T, SBO), (1, T))   SBO = 1024 B between 8-row groups,
//                   LBO unused (the k16 slice lies inside one 128-byte row of the atom)
//   MN-major SW128: ((T, 8, m), (8, k)) : ((1, T, LBO), (8T, SBO))
//                   LBO = bytes between 64-element column blocks, SBO = 1024 B between 8-row
//                   (8 k) groups.
#pragma once

#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MMI_SM90_WGMMA_AVAILABLE 1
#endif

#if defined(__CUDACC__)
#define MMI_SM90_HD __host__ __device__ __forceinline__
#else
#define MMI_SM90_HD inline
#endif

namespace mmi_cuda {
namespace sm90 {

constexpr int kSwizzleRowBytes = 128;    // one row of a swizzle atom: 64 16-bit elements
constexpr int kSwizzleAtomBytes = 1024;  // 8 rows

// Byte offset of 16-byte chunk `chunk` (elements 8 * chunk ..) of row `row` in a tile of `rows`
// rows (see the layout above).
MMI_SM90_HD uint32_t swizzled_chunk_offset(int rows, int row, int chunk) {
  return static_cast<uint32_t>((chunk >> 3) * rows * kSwizzleRowBytes + row * kSwizzleRowBytes +
                               (((chunk & 7) ^ (row & 7)) << 4));
}

// Byte offset of element (row, col) (16-bit elements).
MMI_SM90_HD uint32_t swizzled_element_offset(int rows, int row, int col) {
  return swizzled_chunk_offset(rows, row, col >> 3) + ((col & 7) << 1);
}

MMI_SM90_HD uint64_t make_descriptor(uint32_t smem_address, uint32_t leading_bytes,
                                     uint32_t stride_bytes) {
  return static_cast<uint64_t>((smem_address & 0x3FFFFu) >> 4) |
         (static_cast<uint64_t>((leading_bytes >> 4) & 0x3FFFu) << 16) |
         (static_cast<uint64_t>((stride_bytes >> 4) & 0x3FFFu) << 32) |
         (uint64_t{1} << 62);  // 128-byte swizzle, base offset 0
}

// K-major operand (A = Q rows, or B = K rows stored [n][k]) of a tile with `rows` rows: the
// descriptor of its k16 step `ks` for the 8-row groups starting at `first_row` (a multiple of 8).
MMI_SM90_HD uint64_t k_major_descriptor(uint32_t tile_address, int rows, int first_row, int ks) {
  const uint32_t address = tile_address + (ks >> 2) * rows * kSwizzleRowBytes +
                           first_row * kSwizzleRowBytes + (ks & 3) * 32;
  return make_descriptor(address, 16, kSwizzleAtomBytes);
}

// MN-major B operand (V stored [k = key][n = d]) of a tile with `rows` keys: the descriptor of k16
// step `ks` (keys 16 ks .. 16 ks + 15), all D columns.
MMI_SM90_HD uint64_t mn_major_descriptor(uint32_t tile_address, int rows, int ks) {
  return make_descriptor(tile_address + ks * 16 * kSwizzleRowBytes, rows * kSwizzleRowBytes,
                         kSwizzleAtomBytes);
}

#ifdef MMI_SM90_WGMMA_AVAILABLE
// Orders this thread's register accesses before the following wgmma.mma_async (needed whenever an
// accumulator or A-fragment register was written by other instructions).
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Sets this warpgroup's per-thread register budget (all threads of the warpgroup execute it):
// a warp-specialised kernel gives the producer's registers to the math warpgroups.
template <int kRegisters>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
template <int kRegisters>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
// Makes this thread's generic-proxy shared-memory writes (st.shared, completed cp.async copies)
// visible to later async-proxy reads (wgmma operands), once published by a barrier.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
#endif

#if defined(__CUDACC__)
// Pins a register in place across the asynchronous wgmma: the compiler may not move reads or
// writes of `x` across this point (CUTLASS's warpgroup_fence_operand).
__device__ __forceinline__ void fence_operand(float& x) { asm volatile("" : "+f"(x)::"memory"); }
__device__ __forceinline__ void fence_operand(uint32_t& x) {
  asm volatile("" : "+r"(x)::"memory");
}
#endif

}  // namespace sm90
}  // namespace mmi_cuda
