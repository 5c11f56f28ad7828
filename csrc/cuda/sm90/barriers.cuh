// Synchronisation between the warp-specialised roles of the sm_90a forward kernel
// (sm90_ws_attention_kernel.cuh): shared-memory mbarriers for the producer -> consumer stage ring
// and named hardware barriers for subsets of the CTA's warps.
//
// mbarrier phases: a barrier initialised with count N completes a phase after N arrivals; a
// waiter names the parity (0 or 1) of the phase it waits for. A fresh barrier is in phase 0, so
// waiting for parity 1 returns at once ("the phase before the first has completed"), which lets
// a producer wait on "stage empty" barriers with the same formula from the first round on.
#pragma once

#include <cstdint>

#include "ptx_primitives.cuh"

namespace mmi_cuda {
namespace sm90 {

#if defined(__CUDACC__)

__device__ __forceinline__ void mbarrier_init(uint64_t* barrier, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(barrier)),
               "r"(count)
               : "memory");
}

// One arrival (release semantics at CTA scope: this thread's earlier writes are visible to a
// thread whose wait observes the completed phase).
__device__ __forceinline__ void mbarrier_arrive(uint64_t* barrier) {
  asm volatile(
      "{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(
          shared_address(barrier))
      : "memory");
}

// `count` arrivals at once by this thread (same semantics as `count` calls of mbarrier_arrive).
__device__ __forceinline__ void mbarrier_arrive_count(uint64_t* barrier, uint32_t count) {
  asm volatile(
      "{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(
          shared_address(barrier)),
      "r"(count)
      : "memory");
}

// One arrival that happens when all of this thread's earlier cp.async copies have landed; it
// counts towards the barrier's initial count (.noinc).
__device__ __forceinline__ void cp_async_mbarrier_arrive(uint64_t* barrier) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(
                   shared_address(barrier))
               : "memory");
}

// Blocks until the phase of parity `parity` has completed (acquire semantics at CTA scope).
__device__ __forceinline__ void mbarrier_wait(uint64_t* barrier, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n}\n" ::"r"(shared_address(barrier)),
      "r"(parity)
      : "memory");
}

// Named barriers (ids 1..15; 0 is __syncthreads). `threads` counts every thread that syncs or
// arrives on the barrier for one completion (a multiple of 32).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

#endif  // __CUDACC__

}  // namespace sm90
}  // namespace mmi_cuda
