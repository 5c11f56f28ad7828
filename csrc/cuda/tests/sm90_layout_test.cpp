// Host-only check (no GPU) of the sm_90a kernel's shared-memory layout, wgmma descriptors and
// fragment bookkeeping (csrc/cuda/sm90/), against an independent model of the wgmma operand
// addressing: the canonical GMMA layouts (as documented by the PTX ISA / CUTLASS) followed by the
// 128-byte swizzle of absolute shared addresses, and the m64nNk16 register fragment layouts
// (accumulator: thread (warp w, lane = 4 g + t) holds d[4 j + 2 i + e] = D[16 w + g + 8 i][8 j + 2 t + e];
// A from registers: a0 = (g, 2t..), a1 = (g + 8, 2t..), a2 = (g, 2t + 8..), a3 = (g + 8, 2t + 8..)).
//
// It emulates, for both warpgroups and D = 64 / 128: the cp.async gather placement (thread ->
// row/chunk mapping with per-pass increments), S = Q K^T through the descriptors the kernel
// builds, the S -> P register repacking, O = P V through the transposed-B descriptors, and the
// epilogue staging round trip; compares with plain matrix products.
//   g++ -std=c++17 -O2 -I csrc/cuda csrc/cuda/tests/sm90_layout_test.cpp -o /tmp/sm90_layout_test
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "sm90/wgmma_primitives.cuh"

using namespace mmi_cuda::sm90;

namespace {

int failures = 0;
#define EXPECT(cond, ...)                    \
  do {                                       \
    if (!(cond)) {                           \
      if (failures < 20) {                   \
        std::printf("FAIL %s: ", #cond);     \
        std::printf(__VA_ARGS__);            \
        std::printf("\n");                   \
      }                                      \
      ++failures;                            \
    }                                        \
  } while (0)

struct Desc {
  uint32_t start, lbo, sbo, base_offset, swizzle;
};

Desc decode(uint64_t d) {
  return {static_cast<uint32_t>(d & 0x3FFF) << 4, static_cast<uint32_t>((d >> 16) & 0x3FFF) << 4,
          static_cast<uint32_t>((d >> 32) & 0x3FFF) << 4, static_cast<uint32_t>((d >> 49) & 7),
          static_cast<uint32_t>(d >> 62)};
}

uint32_t swizzle128(uint32_t address) { return address ^ (((address >> 7) & 7) << 4); }

// Byte address of element (mn, k) (k in [0, 16)) of a K-major SW128 operand:
// ((8, m), (T, 2)) : ((8T, SBO), (1, T)) in elements, T = 8.
uint32_t k_major_address(const Desc& d, int mn, int k) {
  EXPECT(d.swizzle == 1 && d.base_offset == 0, "descriptor mode");
  return swizzle128(d.start + (mn / 8) * d.sbo + (mn % 8) * 128 + (k / 8) * 16 + (k % 8) * 2);
}

// Byte address of element (k, n) (k in [0, 16)) of an MN-major SW128 operand:
// ((T, 8, m), (8, k)) : ((1, T, LBO), (8T, SBO)).
uint32_t mn_major_address(const Desc& d, int k, int n) {
  EXPECT(d.swizzle == 1 && d.base_offset == 0, "descriptor mode");
  return swizzle128(d.start + (n % 8) * 2 + ((n / 8) % 8) * 16 + (n / 64) * d.lbo +
                    (k % 8) * 128 + (k / 8) * d.sbo);
}

struct Smem {
  std::vector<float> value;  // one float per 2-byte slot (index = byte address / 2)
  std::vector<int> written;
  explicit Smem(size_t bytes) : value(bytes / 2, NAN), written(bytes / 2, 0) {}
  void store(uint32_t address, float x) {
    EXPECT(address % 2 == 0 && address / 2 < value.size(), "address %u", address);
    EXPECT(written[address / 2] == 0, "slot %u written twice", address);
    written[address / 2] = 1;
    value[address / 2] = x;
  }
  float load(uint32_t address) const {
    EXPECT(written[address / 2] == 1, "read of unwritten slot %u", address);
    return value[address / 2];
  }
};

// The kernel's gather: thread tid copies chunk tid % C of rows tid / C + i * (256 / C).
void gather(Smem& smem, uint32_t tile, int rows, int d, const std::vector<float>& m) {
  const int chunks = d / 8, pass = 256 / chunks;
  for (int tid = 0; tid < 256; ++tid) {
    const int chunk = tid % chunks, row0 = tid / chunks;
    const uint32_t address = tile + swizzled_chunk_offset(rows, row0, chunk);
    for (int i = 0; i < rows / pass; ++i) {
      const int row = row0 + i * pass;
      for (int e = 0; e < 8; ++e)
        smem.store(address + i * pass * 128 + e * 2, m[row * d + chunk * 8 + e]);
    }
  }
}

void check_head_dim(int d) {
  const int kBlockQ = 128, kBlockK = 64;
  const uint32_t q_tile = 2048, k_tile = q_tile + kBlockQ * d * 2, v_tile = k_tile + kBlockK * d * 2;
  Smem smem(v_tile + kBlockK * d * 2);
  std::vector<float> q(kBlockQ * d), k(kBlockK * d), v(kBlockK * d);
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>((i * 37) % 17) - 8.f;
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<float>((i * 11) % 13) - 6.f;
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 7) % 19) - 9.f;
  gather(smem, q_tile, kBlockQ, d, q);
  gather(smem, k_tile, kBlockK, d, k);
  gather(smem, v_tile, kBlockK, d, v);

  // Descriptor fields.
  {
    const Desc a = decode(k_major_descriptor(q_tile, kBlockQ, 64, 5 % (d / 16)));
    EXPECT(a.sbo == 1024 && a.swizzle == 1 && a.base_offset == 0, "Q descriptor fields");
    const Desc b = decode(mn_major_descriptor(v_tile, kBlockK, 3));
    EXPECT(b.lbo == static_cast<uint32_t>(kBlockK * 128) && b.sbo == 1024 &&
               b.start == v_tile + 3 * 16 * 128,
           "V descriptor fields lbo %u sbo %u start %u", b.lbo, b.sbo, b.start);
  }

  for (int wg = 0; wg < 2; ++wg) {
    // Per thread of the warpgroup: s registers from the emulated wgmma SS.
    std::vector<std::vector<float>> s(128, std::vector<float>(32, 0.f));
    for (int ks = 0; ks < d / 16; ++ks) {
      const Desc a = decode(k_major_descriptor(q_tile, kBlockQ, wg * 64, ks));
      const Desc b = decode(k_major_descriptor(k_tile, kBlockK, 0, ks));
      for (int wt = 0; wt < 128; ++wt) {
        const int w = wt / 32, lane = wt % 32, g = lane / 4, t = lane % 4;
        for (int j = 0; j < 8; ++j)
          for (int i = 0; i < 2; ++i)
            for (int e = 0; e < 2; ++e) {
              const int row = 16 * w + g + 8 * i, col = 8 * j + 2 * t + e;
              float acc = 0.f;
              for (int kk = 0; kk < 16; ++kk)
                acc += smem.load(k_major_address(a, row, kk)) * smem.load(k_major_address(b, col, kk));
              s[wt][4 * j + 2 * i + e] += acc;
            }
      }
    }
    // The kernel's reading of s: s[4 j + 2 hf + e] = S[warp row g + 8 hf][key 8 j + 2 t + e].
    for (int wt = 0; wt < 128; ++wt) {
      const int w = wt / 32, lane = wt % 32, g = lane / 4, t = lane % 4;
      for (int j = 0; j < 8; ++j)
        for (int hf = 0; hf < 2; ++hf)
          for (int e = 0; e < 2; ++e) {
            const int qrow = wg * 64 + 16 * w + g + 8 * hf, key = 8 * j + 2 * t + e;
            float ref = 0.f;
            for (int c = 0; c < d; ++c) ref += q[qrow * d + c] * k[key * d + c];
            EXPECT(s[wt][4 * j + 2 * hf + e] == ref, "D=%d wg=%d S[%d][%d] %g vs %g", d, wg,
                   qrow, key, s[wt][4 * j + 2 * hf + e], ref);
          }
    }
    // P = S (no softmax: the repacking is what is checked), packed as the kernel does, then read
    // back with the hardware's A-fragment layout.
    std::vector<float> p(64 * 64, NAN);
    for (int wt = 0; wt < 128; ++wt) {
      const int w = wt / 32, lane = wt % 32, g = lane / 4, t = lane % 4;
      for (int kk = 0; kk < 4; ++kk) {
        const float* x = &s[wt][8 * kk];
        const float pa[4][2] = {{x[0], x[1]}, {x[2], x[3]}, {x[4], x[5]}, {x[6], x[7]}};
        const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
        for (int r = 0; r < 4; ++r)
          for (int e = 0; e < 2; ++e)
            p[(16 * w + rows[r]) * 64 + 16 * kk + cols[r] + e] = pa[r][e];
      }
    }
    // O = P V through the transposed-B descriptors; o[4 j + 2 hf + e] = O[g + 8 hf][8 j + 2 t + e].
    for (int wt = 0; wt < 128; ++wt) {
      const int w = wt / 32, lane = wt % 32, g = lane / 4, t = lane % 4;
      for (int j = 0; j < d / 8; ++j)
        for (int hf = 0; hf < 2; ++hf)
          for (int e = 0; e < 2; ++e) {
            const int row = 16 * w + g + 8 * hf, col = 8 * j + 2 * t + e;
            float acc = 0.f, ref = 0.f;
            for (int kk = 0; kk < 4; ++kk) {
              const Desc b = decode(mn_major_descriptor(v_tile, kBlockK, kk));
              for (int x = 0; x < 16; ++x)
                acc += p[row * 64 + 16 * kk + x] * smem.load(mn_major_address(b, x, col));
            }
            for (int key = 0; key < 64; ++key) {
              float sref = 0.f;
              for (int c = 0; c < d; ++c) sref += q[(wg * 64 + row) * d + c] * k[key * d + c];
              ref += sref * v[key * d + col];
            }
            EXPECT(acc == ref, "D=%d wg=%d O[%d][%d] %g vs %g", d, wg, row, col, acc, ref);
          }
    }
  }

  // Epilogue staging: element writes (4 bytes at col 8 j + 2 t) then 16-byte chunk reads.
  Smem stage(kBlockQ * d * 2);
  for (int row = 0; row < kBlockQ; ++row)
    for (int col = 0; col < d; ++col)
      stage.store(swizzled_element_offset(kBlockQ, row, col), static_cast<float>(row * 1000 + col));
  const int chunks = d / 8, pass = 256 / chunks;
  for (int tid = 0; tid < 256; ++tid)
    for (int i = 0; i < kBlockQ / pass; ++i) {
      const int row = tid / chunks + i * pass, chunk = tid % chunks;
      for (int e = 0; e < 8; ++e)
        EXPECT(stage.load(swizzled_chunk_offset(kBlockQ, row, chunk) + 2 * e) ==
                   static_cast<float>(row * 1000 + chunk * 8 + e),
               "staging row %d chunk %d", row, chunk);
    }
  // Bank-conflict freedom of the staging writes: per warp and (j, hf), 32 distinct banks.
  for (int j = 0; j < d / 8; ++j) {
    bool bank_used[32] = {};
    for (int lane = 0; lane < 32; ++lane) {
      const uint32_t a = swizzled_element_offset(kBlockQ, lane / 4, 8 * j + 2 * (lane % 4));
      EXPECT(!bank_used[(a / 4) % 32], "staging bank conflict j=%d", j);
      bank_used[(a / 4) % 32] = true;
    }
  }
}

}  // namespace

int main() {
  for (int d : {64, 128}) check_head_dim(d);
  std::printf("%s (%d failures)\n", failures == 0 ? "sm90 layout test passed" : "FAILED", failures);
  return failures == 0 ? 0 : 1;
}
