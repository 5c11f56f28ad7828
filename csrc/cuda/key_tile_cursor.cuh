// The walk over one query block's key set in tiles of kKeyTile key slots: first every range of
// kv_ranges (contiguous slots, the last tile of a range partial), then kv_columns in chunks
// (gathered slots). One warp (the "position warp", warp 0) runs the walk two tiles ahead of the
// math, in two steps one key tile apart:
//   key_tile_issue     advances the walk and starts the copies of the tile's original key
//                      positions (k_perm / kv_columns entries) into a shared staging row with
//                      4-byte cp.async, so no register waits on a global load across the math;
//   key_tile_finalize  once those copies have landed (after the next cp.async wait + barrier),
//                      validates the positions and publishes min/max statistics that let the
//                      compute warps take the mask-free path or skip the tile.
//
// Every index value is clamped or rejected so that a malformed index cannot make the kernel read
// outside [0, seq_k): bad slots and positions become kNoKey (masked, never loaded).
#pragma once

#include <climits>
#include <cstdint>

#include "mmi_attention.h"
#include "ptx_primitives.cuh"

namespace mmi_cuda {

constexpr int kKeyTile = 64;     // key slots per tile
constexpr int kNoKey = INT_MAX;  // position of an empty / invalid tile entry: always masked

// Where one (b, h, query block)'s keys come from. Written once by the position warp.
struct KeySource {
  const int32_t* ranges;   // [n_ranges, 2] half-open key-slot ranges
  const int32_t* columns;  // [n_columns] key slots
  const int32_t* k_perm;   // [seq_k] slot -> original position, nullptr for identity
  int n_ranges;
  int n_columns;
};

// Progress of the walk (shared memory, private to the position warp).
struct KeyCursor {
  int range;                 // index of the current range, -1 before the first
  int start, end;            // slots of the current range not walked yet, clamped to [0, seq_k)
  int next_bounds[2];        // raw bounds of range + 1, copied ahead with cp.async
  int column;                // next column index
};

// Per-tile descriptor. x: slots in the tile (0: the walk is over), y: min position, z: max
// position (kNoKey counts as a position, so a tile with any empty entry has z = kNoKey).
using KeyTileMeta = int4;

__device__ __forceinline__ int clamp_count(int32_t count, int64_t capacity) {
  return count < 0 ? 0 : (count > capacity ? static_cast<int>(capacity) : count);
}

// Lane 0 of the position warp: locates the block's index rows and starts the walk.
__device__ __forceinline__ void key_walk_init(const mmi_attention_problem& p, int b, int h, int qb,
                                              KeySource& source, KeyCursor& cursor) {
  const mmi_sparse_index& ix = p.index;
  int n_ranges = 0;
  const int32_t* ranges = nullptr;
  if (ix.max_ranges > 0 && ix.kv_ranges != nullptr) {
    n_ranges = clamp_count(__ldg(ix.kv_range_count + b * ix.kv_range_count_stride_b +
                                 h * ix.kv_range_count_stride_h + qb),
                           ix.max_ranges);
    ranges = ix.kv_ranges + b * ix.kv_ranges_stride_b + h * ix.kv_ranges_stride_h +
             static_cast<int64_t>(qb) * ix.max_ranges * 2;
  }
  int n_columns = 0;
  const int32_t* columns = nullptr;
  if (ix.max_columns > 0 && ix.kv_columns != nullptr && ix.kv_column_count != nullptr) {
    n_columns = clamp_count(__ldg(ix.kv_column_count + b * ix.kv_column_count_stride_b +
                                  h * ix.kv_column_count_stride_h + qb),
                            ix.max_columns);
    columns = ix.kv_columns + b * ix.kv_columns_stride_b + h * ix.kv_columns_stride_h +
              static_cast<int64_t>(qb) * ix.max_columns;
  }
  source.ranges = ranges;
  source.columns = columns;
  source.k_perm = ix.k_perm != nullptr
                      ? ix.k_perm + b * ix.k_perm_stride_b + h * ix.k_perm_stride_h
                      : nullptr;
  source.n_ranges = n_ranges;
  source.n_columns = n_columns;
  cursor.range = -1;
  cursor.start = 0;
  cursor.end = 0;
  cursor.next_bounds[0] = n_ranges > 0 ? __ldg(ranges) : 0;
  cursor.next_bounds[1] = n_ranges > 0 ? __ldg(ranges + 1) : 0;
  cursor.column = 0;
}

// Position warp, all lanes: advances the walk by one tile, writes its slot count to meta.x and
// starts filling staged[0:kKeyTile] with the original positions of its slots (entries past the
// count get kNoKey). The copies complete with this warp's next cp.async commit + wait, which must
// also separate two calls (the cursor's next range bounds travel the same way).
__device__ __forceinline__ void key_tile_issue(const KeySource& source_smem,
                                               KeyCursor& cursor_smem, int* staged,
                                               KeyTileMeta& meta, int seq_k, int lane) {
  const KeySource source = source_smem;
  KeyCursor c = cursor_smem;
  __syncwarp();

  // Enter the next non-empty range. The bounds of the first range entered here were copied one
  // step ahead; further ones (only after an empty range) are read directly. Exactly one copy of
  // the following range's bounds is then started (two copies in flight to one address could land
  // in either order).
  bool entered = false;
  while (c.start >= c.end && c.range + 1 < source.n_ranges) {
    c.range += 1;
    const int lo = entered ? __ldg(source.ranges + 2 * c.range) : c.next_bounds[0];
    const int hi = entered ? __ldg(source.ranges + 2 * c.range + 1) : c.next_bounds[1];
    entered = true;
    c.start = lo > 0 ? lo : 0;
    c.end = hi < seq_k ? hi : seq_k;
  }
  if (entered && c.range + 1 < source.n_ranges && lane < 2)
    cp_async_4(&cursor_smem.next_bounds[lane], source.ranges + 2 * (c.range + 1) + lane);

  int count = 0;
  if (c.start < c.end) {
    const int remaining = c.end - c.start;
    count = remaining < kKeyTile ? remaining : kKeyTile;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int j = lane + 32 * half;
      const int slot = c.start + j;
      if (j >= count)
        staged[j] = kNoKey;
      else if (source.k_perm != nullptr)
        cp_async_4(staged + j, source.k_perm + slot);
      else
        staged[j] = slot;
    }
    c.start += count;
  } else if (c.column < source.n_columns) {
    const int remaining = source.n_columns - c.column;
    count = remaining < kKeyTile ? remaining : kKeyTile;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int j = lane + 32 * half;
      if (j >= count) {
        staged[j] = kNoKey;
      } else if (source.k_perm == nullptr) {
        cp_async_4(staged + j, source.columns + c.column + j);
      } else {
        // Gathered slots through a permutation: a dependent load, the one case whose latency
        // shows (one global round trip per column tile).
        const int slot = __ldg(source.columns + c.column + j);
        if (static_cast<unsigned>(slot) < static_cast<unsigned>(seq_k))
          cp_async_4(staged + j, source.k_perm + slot);
        else
          staged[j] = kNoKey;
      }
    }
    c.column += count;
  }

  if (lane == 0) {
    cursor_smem.range = c.range;
    cursor_smem.start = c.start;
    cursor_smem.end = c.end;
    cursor_smem.column = c.column;
    meta = make_int4(count, 0, 0, 0);
  }
  __syncwarp();
}

// Position warp, all lanes, once the staged copies have landed: key_pos[0:kKeyTile] = validated
// positions (kNoKey for anything outside [0, seq_k)), meta.y / meta.z = their min / max.
__device__ __forceinline__ void key_tile_finalize(const int* staged, int* key_pos,
                                                  KeyTileMeta& meta, int seq_k, int lane) {
  int pos[2];
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int p = staged[lane + 32 * half];
    pos[half] = static_cast<unsigned>(p) < static_cast<unsigned>(seq_k) ? p : kNoKey;
    key_pos[lane + 32 * half] = pos[half];
  }
  const int lo = __reduce_min_sync(0xffffffffu, min(pos[0], pos[1]));
  const int hi = __reduce_max_sync(0xffffffffu, max(pos[0], pos[1]));
  if (lane == 0) {
    meta.y = lo;
    meta.z = hi;
  }
  __syncwarp();
}

}  // namespace mmi_cuda
