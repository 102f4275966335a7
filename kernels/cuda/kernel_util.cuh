// Helpers shared by the CUDA kernels: dtype dispatch for launchers, warp and block
// reductions, grid-stride loops.
// Invariant: reductions combine values in a fixed tree that depends only on the block
// size, never on timing, so a kernel's result is the same on every run (and the same
// in the emulator as on the GPU, up to fused multiply-add contraction by nvcc).
#pragma once
#include "../common/convert.h"
#include "../common/dispatch.h"
#include "../common/hd.h"
#include "cuda_ops.h"
#include "launch.cuh"

namespace strata::STRATA_CUDA_NS {

using num::bf16;
using num::f16;
using num::load;
using num::store;

using num::dispatch_float;

// Threads per block for row kernels and elementwise kernels.
constexpr int kThreads = 256;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum of v over a block of up to 1024 threads (a multiple of 32), returned to every
// thread. `buf` is 32 elements of shared memory; the call begins and ends with a
// barrier so buf can be reused by the next call.
template <class Acc>
__device__ __forceinline__ Acc block_sum(Acc v, Acc* buf) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  v = lane < warps ? buf[lane] : Acc(0);
  return warp_sum(v);
}

// Max of v over the block, as block_sum. NaN inputs are skipped by fmaxf.
__device__ __forceinline__ float block_max(float v, float* buf) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  v = lane < warps ? buf[lane] : -INFINITY;
  return warp_max(v);
}

// First index and stride of a grid-stride loop over a 1-D grid.
__device__ __forceinline__ int64_t grid_first() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

}  // namespace strata::STRATA_CUDA_NS
