// Timing mode: full-density causal attention (one range per query block up to its causal limit),
// B = 1, Hq = 28, Hkv = 4, D = 128, bfloat16, block_q 128, q/k/v/out stored (B, S, H, D); then the
// entry point alone on the A-shape index of benchmarks/kernels.py at S = 128K (sink 1024 + local
// 4096 keys, causal), where each query block has few tiles and per-block overheads show, and on
// its grid index (permuted queries and keys) at 32K and 128K.
// Times the C entry point (the kernel it picks is printed) and, launched directly: the mma.sync
// kernel's shipped configuration (what MMI_CUDA_FORCE_MMA_SYNC=1 runs), an alternative tile
// configuration of it, and the sm_90a wgmma kernel (csrc/cuda/sm90/; only on compute capability 9.0
// with sm_90a code in the binary).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <vector>

#include "device_run.h"
#include "mmi.h"
#include "sm90/sm90_attention_launch.cuh"
#include "sparse_attention_launch.cuh"

namespace harness {

// Deterministic pseudo-random bf16 values in about [-2, 2), never zero.
__global__ void fill_bf16(uint16_t* data, int64_t n, uint32_t seed) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
    x ^= x >> 15;
    x *= 2246822519u;
    x ^= x >> 13;
    const float value = (static_cast<float>(x >> 8) + 0.5f) * (4.f / 16777216.f) - 2.f;
    const __nv_bfloat16 b = __float2bfloat16(value);
    data[i] = *reinterpret_cast<const uint16_t*>(&b);
  }
}

inline double median_ms(const std::function<void()>& launch, int warmup, int repeats) {
  cudaEvent_t start, stop;
  HARNESS_CUDA_CHECK(cudaEventCreate(&start));
  HARNESS_CUDA_CHECK(cudaEventCreate(&stop));
  for (int i = 0; i < warmup; ++i) launch();
  HARNESS_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> times;
  for (int i = 0; i < repeats; ++i) {
    HARNESS_CUDA_CHECK(cudaEventRecord(start));
    launch();
    HARNESS_CUDA_CHECK(cudaEventRecord(stop));
    HARNESS_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    HARNESS_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// One candidate launch of a problem: returns the CUDA status.
using Launcher = std::function<cudaError_t(const mmi_attention_problem&)>;

template <class Traits>
Launcher direct_launcher() {
  return [](const mmi_attention_problem& p) {
    int device = 0;
    cudaGetDevice(&device);
    return mmi_cuda::launch_sparse_attention<Traits, mmi_cuda::Bfloat16>(p, device, nullptr);
  };
}

// Direct launch of the sm90 kernel. The dynamic shared-memory limit is raised here on every call
// (not through prepare_sm90_kernel's once-per-device cache): this translation unit's kernel is a
// different registered function from the library's (sparse_attention_fwd.cu), but the cache bit is
// shared between them, so after the entry point ran, the direct launch went out without the
// attribute and failed with "invalid argument".
inline Launcher sm90_launcher() {
  return [](const mmi_attention_problem& p) {
    using Traits = mmi_cuda::sm90::Sm90Traits<128>;
    using Element = mmi_cuda::Bfloat16;
    int device = 0;
    cudaGetDevice(&device);
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
    if (major != 9 || minor != 0) return cudaErrorNoKernelImageForDevice;
    cudaFuncAttributes attributes{};
    if (cudaFuncGetAttributes(&attributes, mmi_cuda::sm90::sm90_attention_fwd_kernel<Traits, Element>) !=
            cudaSuccess ||
        attributes.binaryVersion != 90 || attributes.numRegs < 64) {
      (void)cudaGetLastError();
      return cudaErrorNoKernelImageForDevice;
    }
    const cudaError_t status = cudaFuncSetAttribute(
        mmi_cuda::sm90::sm90_attention_fwd_kernel<Traits, Element>,
        cudaFuncAttributeMaxDynamicSharedMemorySize, mmi_cuda::sm90::sm90_shared_bytes<Traits>());
    if (status != cudaSuccess) return status;
    const int64_t ctas = p.batch * p.q_heads * p.index.num_q_blocks;
    mmi_cuda::sm90::sm90_attention_fwd_kernel<Traits, Element>
        <<<static_cast<unsigned>(ctas), Traits::kThreads, mmi_cuda::sm90::sm90_shared_bytes<Traits>(),
           nullptr>>>(p);
    return cudaGetLastError();
  };
}

inline int run_bench() {
  constexpr int64_t kHeads = 28, kKvHeads = 4, kBlockQ = 128;
  struct Variant {
    const char* name;
    Launcher launch;
  };
  const Variant variants[] = {
      {"entry point",
       [](const mmi_attention_problem& p) {
         mmi_error err;
         return mmi_sparse_attention_forward_cuda(&p, nullptr, &err) == MMI_OK
                    ? cudaSuccess
                    : cudaErrorInvalidValue;
       }},
      {"mma.sync shipped (4 warps x 32 rows)",
       direct_launcher<mmi_cuda::DefaultTraits<128, 128>::type>()},
      {"mma.sync 8 warps x 16 rows, Q regs",
       direct_launcher<mmi_cuda::KernelTraits<128, 128, 8, true, 1>>()},
      {"sm90 wgmma (3 K/V stages)", sm90_launcher()},
  };

  cudaDeviceProp prop;
  int device = 0;
  HARNESS_CUDA_CHECK(cudaGetDevice(&device));
  HARNESS_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  std::printf("B=1 Hq=%lld Hkv=%lld bf16 block_q=%lld, median of 20\n",
              (long long)kHeads, (long long)kKvHeads, (long long)kBlockQ);

  // D = 128 dense: every variant; D = 64 and the sparse patterns: the entry point only (the
  // direct launchers are D = 128's and take no permutation).
  enum class Pattern { kDense, kAShape, kGrid };
  struct Case {
    int64_t dim, seq;
    bool causal;
    Pattern pattern;
  };
  const Case cases[] = {{128, 16384, true, Pattern::kDense},   {128, 16384, false, Pattern::kDense},
                        {128, 32768, true, Pattern::kDense},   {64, 32768, true, Pattern::kDense},
                        {128, 131072, true, Pattern::kAShape}, {128, 32768, true, Pattern::kGrid},
                        {128, 131072, true, Pattern::kGrid}};
  for (const Case& c : cases) {
    {
      const int64_t kDim = c.dim, seq = c.seq;
      const bool causal = c.causal;
      const TensorLayout q_layout = TensorLayout::make(1, kHeads, seq, kDim, true);
      const TensorLayout kv_layout = TensorLayout::make(1, kKvHeads, seq, kDim, true);
      DeviceBuffer<uint16_t> q, k, v, out;
      DeviceBuffer<float> lse;
      q.allocate(q_layout.elements);
      k.allocate(kv_layout.elements);
      v.allocate(kv_layout.elements);
      out.allocate(q_layout.elements);
      lse.allocate(kHeads * seq);
      fill_bf16<<<1024, 256>>>(q.get(), q_layout.elements, 1);
      fill_bf16<<<1024, 256>>>(k.get(), kv_layout.elements, 2);
      fill_bf16<<<1024, 256>>>(v.get(), kv_layout.elements, 3);
      HARNESS_CUDA_CHECK(cudaGetLastError());

      // Index shared by all heads (strides 0). Dense: one range per query block, [0, causal
      // limit of its last row). A-shape (benchmarks/kernels.py's): [0, 1024) and the 64-key-aligned
      // window reaching 4096 keys back from the block's first row, merged when they touch. Grid
      // (kernels.py's): the C core's builder, 256 tokens per frame, phase 0, horizontal and
      // vertical lines, local 1024, no sink; q/k permutations put the lines first.
      constexpr int64_t kSink = 1024, kLocal = 4096, kBlockK = 64;
      const int64_t nqb = (seq + kBlockQ - 1) / kBlockQ;
      const int64_t max_ranges = c.pattern == Pattern::kGrid ? 4 : 2;
      std::vector<int32_t> ranges(nqb * max_ranges * 2), counts(nqb, 1), q_perm, k_perm;
      if (c.pattern == Pattern::kGrid) {
        mmi_grid_options options{};
        options.seq = seq;
        options.block_q = kBlockQ;
        options.block_k = kBlockK;
        options.span_start = 0;
        options.span_end = seq;
        options.sink = 0;
        options.local = 1024;
        options.use_hlines = 1;
        options.use_vlines = 1;
        const int32_t stride = 256, phase = 0;
        q_perm.resize(seq);
        k_perm.resize(seq);
        mmi_error err{};
        if (mmi_build_grid_index(1, 1, &options, &stride, &phase, q_perm.data(), k_perm.data(),
                                 ranges.data(), counts.data(), &err) != MMI_OK) {
          std::printf("grid index: %s\n", err.message);
          return 1;
        }
      }
      double kept_pairs = 0;  // (query, key) pairs of the listed ranges, causality not subtracted
      for (int64_t qb = 0; qb < nqb; ++qb) {
        int32_t* r = &ranges[2 * max_ranges * qb];
        if (c.pattern != Pattern::kGrid) {
          const int64_t end = causal ? std::min((qb + 1) * kBlockQ, seq) : seq;
          const int64_t local = std::max<int64_t>(0, (qb * kBlockQ - kLocal) / kBlockK * kBlockK);
          r[0] = 0;
          r[1] = static_cast<int32_t>(end);
          if (c.pattern == Pattern::kAShape && local > kSink) {
            r[1] = static_cast<int32_t>(kSink);
            r[2] = static_cast<int32_t>(local);
            r[3] = static_cast<int32_t>(end);
            counts[qb] = 2;
          }
        }
        const int64_t rows = std::min<int64_t>(kBlockQ, seq - qb * kBlockQ);
        for (int32_t i = 0; i < counts[qb]; ++i) kept_pairs += double(r[2 * i + 1] - r[2 * i]) * rows;
      }
      DeviceBuffer<int32_t> d_ranges(ranges), d_counts(counts), d_q_perm(q_perm), d_k_perm(k_perm);

      mmi_attention_problem p{};
      p.dtype = MMI_DTYPE_BFLOAT16;
      p.batch = 1;
      p.q_heads = kHeads;
      p.kv_heads = kKvHeads;
      p.seq_q = p.seq_k = seq;
      p.head_dim = kDim;
      p.q = q.get();
      p.k = k.get();
      p.v = v.get();
      p.out = out.get();
      p.lse = lse.get();
      p.q_stride_b = p.out_stride_b = q_layout.stride_b;
      p.q_stride_h = p.out_stride_h = q_layout.stride_h;
      p.q_stride_s = p.out_stride_s = q_layout.stride_s;
      p.k_stride_b = p.v_stride_b = kv_layout.stride_b;
      p.k_stride_h = p.v_stride_h = kv_layout.stride_h;
      p.k_stride_s = p.v_stride_s = kv_layout.stride_s;
      p.scale = 1.f / std::sqrt(static_cast<float>(kDim));
      p.causal = causal ? 1 : 0;
      p.index.block_q = kBlockQ;
      p.index.num_q_blocks = nqb;
      p.index.max_ranges = max_ranges;
      p.index.kv_ranges = d_ranges.get();
      p.index.kv_range_count = d_counts.get();
      p.index.q_perm = q_perm.empty() ? nullptr : d_q_perm.get();
      p.index.k_perm = k_perm.empty() ? nullptr : d_k_perm.get();

      // Dense: the causal half; sparse: every listed pair (the kept tiles' work).
      const bool sparse = c.pattern != Pattern::kDense;
      const double flops = sparse ? 4.0 * kept_pairs * kDim * kHeads
                                  : (causal ? 2.0 : 4.0) * seq * seq * kDim * kHeads;
      const char* pattern = c.pattern == Pattern::kAShape ? "A-shape"
                            : c.pattern == Pattern::kGrid ? "grid"
                            : causal                       ? "causal"
                                                           : "non-causal";
      std::printf("S=%-6lld %-10s D=%lld entry point runs: %s\n", (long long)seq, pattern,
                  (long long)kDim, mmi_sparse_attention_cuda_kernel_name(&p));
      for (const Variant& variant : variants) {
        if ((kDim != 128 || sparse) && &variant != &variants[0]) continue;
        const cudaError_t launched = variant.launch(p);
        if (launched != cudaSuccess) {
          (void)cudaGetLastError();
          std::printf("  %-40s not run: %s\n", variant.name, cudaGetErrorString(launched));
          continue;
        }
        const double ms = median_ms([&] { variant.launch(p); }, 3, 20);
        HARNESS_CUDA_CHECK(cudaGetLastError());
        std::printf("S=%-6lld %-10s D=%-3lld %-40s %9.3f ms %7.1f TFLOP/s\n", (long long)seq,
                    pattern, (long long)kDim, variant.name, ms, flops / (ms * 1e-3) / 1e12);
      }
    }
  }
  return 0;
}

}  // namespace harness
