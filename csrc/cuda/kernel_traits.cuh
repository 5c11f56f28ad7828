// Compile-time configuration of the forward kernel and its shared-memory layout.
#pragma once

#include <cstdint>

#include "key_tile_cursor.cuh"

namespace mmi_cuda {

// kHeadDim      D
// kBlockQ       query slots per CTA: the index's block_q
// kWarps        warps per CTA; warp w owns query rows [w * kRowsPerWarp, (w + 1) * kRowsPerWarp)
//               as kMTiles slices of 16 rows
// kQInRegs      keep the warp's Q fragments in registers for the whole key loop; otherwise they
//               are re-read from shared memory per key tile, which leaves the registers to a
//               second 16-row slice (more tensor work per K/V fragment read)
// kMinBlocksPerSm  __launch_bounds__ occupancy target, i.e. the register cap
template <int kHeadDim_, int kBlockQ_, int kWarps_, bool kQInRegs_, int kMinBlocksPerSm_>
struct KernelTraits {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kBlockQ = kBlockQ_;
  static constexpr int kWarps = kWarps_;
  static constexpr bool kQInRegs = kQInRegs_;
  static constexpr int kMinBlocksPerSm = kMinBlocksPerSm_;

  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBlockK = kKeyTile;
  static constexpr int kRowsPerWarp = kBlockQ / kWarps;
  static constexpr int kMTiles = kRowsPerWarp / 16;  // 16-row MMA slices per warp
  static constexpr int kKSteps = kHeadDim / 16;      // k16 steps of Q K^T
  static constexpr int kDTiles = kHeadDim / 8;       // n8 tiles of the output
  static constexpr int kKeyTiles8 = kBlockK / 8;     // n8 tiles of the score tile
  static constexpr int kChunksPerRow = kHeadDim / 8; // 16-byte chunks per row
  // Threads copying one row in the cp.async gathers (tile_loaders.cuh): a power of two >= the
  // chunks per row, the surplus lanes idle for D = 80 and 96.
  static constexpr int kGatherLanes = kChunksPerRow <= 8 ? 8 : 16;
  // Rows are padded by 16 bytes: 8 consecutive rows then start in distinct 4-bank groups for every
  // supported D (row pitch 2D + 16 bytes), so ldmatrix and the output staging are conflict-free.
  static constexpr int kSmemStride = kHeadDim + 8;   // elements

  static_assert(kHeadDim % 16 == 0 && kHeadDim <= 256, "head_dim must be a multiple of 16");
  static_assert(kBlockQ % (16 * kWarps) == 0, "every warp owns whole 16-row slices");
  static_assert(kKeyTiles8 % 2 == 0 && kDTiles % 2 == 0, "fragments are loaded in pairs");
};

// Dynamic shared memory of one CTA. Element storage is kept as raw 16-bit words.
template <class Traits>
struct SharedStorage {
  static constexpr int kTileQ = Traits::kBlockQ * Traits::kSmemStride;
  static constexpr int kTileK = Traits::kBlockK * Traits::kSmemStride;

  uint16_t q[kTileQ];     // [kBlockQ, D (+pad)]; reused as the output staging tile
  uint16_t k[2][kTileK];  // double-buffered [kBlockK, D (+pad)]
  uint16_t v[2][kTileK];
  // Ring of 3 key-tile descriptors: the tile being computed (i), being loaded (i + 1) and being
  // located (i + 2).
  KeyTileMeta tile_meta[3];
  int staged_pos[3][kKeyTile];  // positions as copied from the index (validated by the loaders)
  int key_pos[3][kKeyTile];     // validated positions, kNoKey for empty entries
  int query_pos[Traits::kBlockQ];  // original query position of each row, -1 if none
  float row_sum[Traits::kMTiles * 2][Traits::kThreads];  // running softmax sums (warp_attention)
  int2 warp_limits[Traits::kWarps];  // per warp: min / max key-position limit of its rows
  KeySource source;
  KeyCursor cursor;
  // K and V of this (b, kv head), offset by each gather column (tile_loaders.cuh): re-read per
  // tile instead of occupying registers across the math.
  const char* key_columns[Traits::kGatherLanes];
  const char* value_columns[Traits::kGatherLanes];
};

// Shape-specific defaults (registers as reported by ptxas for sm_90a, no spills):
//   block_q 128: 4 warps of 32 rows (two 16-row slices re-reading Q from shared memory, as
//                FlashAttention-2 does: each K/V fragment read feeds two MMAs). 2 CTAs per SM.
//   block_q 64:  4 warps of 16 rows; Q in registers where the register cap allows it.
// kMinBlocksPerSm is what shared memory allows (228 KB per SM on H100) within a register cap
// that does not spill.
template <int kHeadDim, int kBlockQ>
struct DefaultTraits;

template <> struct DefaultTraits<64, 128> { using type = KernelTraits<64, 128, 4, false, 2>; };
template <> struct DefaultTraits<80, 128> { using type = KernelTraits<80, 128, 4, false, 2>; };
template <> struct DefaultTraits<96, 128> { using type = KernelTraits<96, 128, 4, false, 2>; };
template <> struct DefaultTraits<128, 128> { using type = KernelTraits<128, 128, 4, false, 2>; };
template <> struct DefaultTraits<64, 64> { using type = KernelTraits<64, 64, 4, false, 4>; };
template <> struct DefaultTraits<80, 64> { using type = KernelTraits<80, 64, 4, true, 3>; };
template <> struct DefaultTraits<96, 64> { using type = KernelTraits<96, 64, 4, true, 3>; };
template <> struct DefaultTraits<128, 64> { using type = KernelTraits<128, 64, 4, true, 2>; };

}  // namespace mmi_cuda
