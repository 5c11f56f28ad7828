// Gathers of Q and K/V rows into shared memory with 16-byte cp.async copies. Rows are fetched at
// their original positions (through q_perm / k_perm); a row whose position is outside
// [0, seq) is zero-filled and never read, so a malformed index cannot fault.
#pragma once

#include <cstdint>

#include "kernel_traits.cuh"
#include "ptx_primitives.cuh"

namespace mmi_cuda {

// Thread -> chunk mapping shared by the gathers: kLanesPerRow consecutive threads copy one row, so
// each thread keeps one column for the whole tile and its row advances by a compile-time step;
// every shared-memory offset is then an immediate.
template <class Traits>
struct GatherMap {
  static constexpr int kLanesPerRow = Traits::kGatherLanes;
  static constexpr int kRowsPerPass = Traits::kThreads / kLanesPerRow;
  static_assert(Traits::kChunksPerRow <= kLanesPerRow, "a row must fit in one pass");

  int row;       // first row of this thread
  uint32_t col;  // element column of this thread's chunk (unsigned: widens for free)
  bool active;

  __device__ __forceinline__ explicit GatherMap(int tid)
      : row(tid / kLanesPerRow),
        col((tid % kLanesPerRow) * 8),
        active(tid % kLanesPerRow < Traits::kChunksPerRow) {}
};

// base + row * stride_bytes as one 32 x 32 -> 64-bit multiply-add (row >= 0; the host checks that
// sequence strides fit in 32 bits of bytes).
__device__ __forceinline__ const char* row_address(const char* base, int row,
                                                   uint32_t stride_bytes) {
  return base + static_cast<uint64_t>(static_cast<uint32_t>(row)) * stride_bytes;
}

// Copies `kRows` rows of D elements into a [kRows, kSmemStride] shared tile. Row r comes from
// `rows + pos[r] * stride_bytes` (rows: element 0 of position 0 of this batch and head).
template <class Traits, int kRows>
__device__ __forceinline__ void gather_rows(uint16_t* tile, const char* rows,
                                            uint32_t stride_bytes, const int* pos, int seq,
                                            int tid) {
  using Map = GatherMap<Traits>;
  static_assert(kRows % Map::kRowsPerPass == 0, "whole passes");
  const Map map(tid);
  if (!map.active) return;
  const uint32_t address = shared_address(tile) + (map.row * Traits::kSmemStride + map.col) * 2;
  const char* column = rows + map.col * 2;
#pragma unroll
  for (int i = 0; i < kRows / Map::kRowsPerPass; ++i) {
    const int p = pos[map.row + i * Map::kRowsPerPass];
    const bool valid = static_cast<unsigned>(p) < static_cast<unsigned>(seq);
    cp_async_16(address + i * Map::kRowsPerPass * Traits::kSmemStride * 2,
                row_address(column, valid ? p : 0, stride_bytes), valid);
  }
}

// Flips the sign of the rows this thread copied with gather_rows (after its copies landed): exact
// in float16 / bfloat16, it turns a negative softmax scale into a positive one.
template <class Traits, int kRows>
__device__ __forceinline__ void negate_gathered_rows(uint16_t* tile, int tid) {
  using Map = GatherMap<Traits>;
  const Map map(tid);
  if (!map.active) return;
#pragma unroll
  for (int i = 0; i < kRows / Map::kRowsPerPass; ++i) {
    uint4* chunk = reinterpret_cast<uint4*>(
        tile + (map.row + i * Map::kRowsPerPass) * Traits::kSmemStride + map.col);
    uint4 bits = *chunk;
    bits.x ^= 0x80008000u;
    bits.y ^= 0x80008000u;
    bits.z ^= 0x80008000u;
    bits.w ^= 0x80008000u;
    *chunk = bits;
  }
}

// K and V rows of one key tile (same positions, two tensors). key_columns / value_columns hold,
// per gather column c, the address of element c of position 0 of this (b, kv head) in K / V.
template <class Traits>
__device__ __forceinline__ void gather_key_tile(uint16_t* k_tile, uint16_t* v_tile,
                                                const char* const* key_columns,
                                                uint32_t k_stride_bytes,
                                                const char* const* value_columns,
                                                uint32_t v_stride_bytes, const int* key_pos,
                                                int seq_k, int tid) {
  using Map = GatherMap<Traits>;
  static_assert(Traits::kBlockK % Map::kRowsPerPass == 0, "whole passes");
  const Map map(tid);
  if (!map.active) return;
  const char* k_column = key_columns[tid % Map::kLanesPerRow];
  const char* v_column = value_columns[tid % Map::kLanesPerRow];
  const uint32_t offset = (map.row * Traits::kSmemStride + map.col) * 2;
  const uint32_t k_address = shared_address(k_tile) + offset;
  const uint32_t v_address = shared_address(v_tile) + offset;
#pragma unroll
  for (int i = 0; i < Traits::kBlockK / Map::kRowsPerPass; ++i) {
    const int p = key_pos[map.row + i * Map::kRowsPerPass];
    const bool valid = static_cast<unsigned>(p) < static_cast<unsigned>(seq_k);
    const int row = valid ? p : 0;
    const uint32_t step = i * Map::kRowsPerPass * Traits::kSmemStride * 2;
    cp_async_16(k_address + step, row_address(k_column, row, k_stride_bytes), valid);
    cp_async_16(v_address + step, row_address(v_column, row, v_stride_bytes), valid);
  }
}

// Fills the per-column K / V addresses used by gather_key_tile.
template <class Traits>
__device__ __forceinline__ void set_key_columns(const char** key_columns,
                                                const char** value_columns, const char* k_rows,
                                                const char* v_rows, int tid) {
  if (tid < GatherMap<Traits>::kLanesPerRow) {
    const GatherMap<Traits> map(tid);
    key_columns[tid] = k_rows + map.col * 2;
    value_columns[tid] = v_rows + map.col * 2;
  }
}

}  // namespace mmi_cuda
