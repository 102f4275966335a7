// Helpers shared by the CUDA kernels: dtype dispatch for launchers, warp and block
// reductions, the second pass of column reductions, grid-stride loops.
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

// Keeps a parameter out of template deduction (std::type_identity, which nvcc's C++17 lacks).
template <class T>
struct NonDeduced {
  using type = T;
};

// Sum of v over a block of up to 1024 threads (a multiple of 32), returned to every
// thread. `buf` is 32 elements of shared memory. The leading barrier lets a second
// call reuse buf: without it a fast warp's write of buf would race with a slow
// warp's read from the previous call (the emulator's race check catches it).
// (buf's type is not deduced: nvcc builds C++17, without std::type_identity.)
template <class Acc>
__device__ __forceinline__ Acc block_sum(Acc v, typename NonDeduced<SharedPtr<Acc>>::type buf) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  v = lane < warps ? buf[lane] : Acc(0);
  return warp_sum(v);
}

// Max of v over the block, as block_sum. NaN inputs are skipped by fmaxf.
__device__ __forceinline__ float block_max(float v, SharedPtr<float> buf) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) buf[warp] = v;
  __syncthreads();
  v = lane < warps ? buf[lane] : -INFINITY;
  return warp_max(v);
}

// The second pass of a column reduction (bias and norm parameter gradients): grad[i]
// += the sum over chunks k of partials[k, i] (chunks, c) f32, in a fixed order — warp
// w of a block sums chunks w, w + 8, ... in order, then warps 0..7 add in order — so
// the bits depend on neither the grid's timing nor the launch. Block: 32 columns x 8
// warps (kPartialThreads), grid: ceil(c / 32).
constexpr int kPartialThreads = 256;
template <class G>
static __global__ void add_partials_kernel(G* grad, const float* partials, int64_t chunks, int64_t c) {
  __shared__ Shared<float[kPartialThreads / 32][32]> sums;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = kPartialThreads / 32;
  const int64_t col = int64_t(blockIdx.x) * 32 + lane;
  float acc = 0.0f;
  if (col < c)
    for (int64_t k = warp; k < chunks; k += warps) acc += partials[k * c + col];
  sums[warp][lane] = acc;
  __syncthreads();
  if (warp != 0 || col >= c) return;
  for (int w = 1; w < warps; ++w) acc += sums[w][lane];
  grad[col] = store<G>(load(grad[col]) + acc);
}

// Launches add_partials_kernel for grad (c) of dtype f32 or T.
template <class T>
static void add_partials(const TensorView& grad, const float* partials, int64_t chunks, int64_t c, const Context& ctx) {
  const unsigned grid = unsigned((c + 31) / 32);
  if (grad.dtype == DType::f32)
    launch(add_partials_kernel<float>, grid, kPartialThreads, 0, ctx.stream, grad.ptr<float>(), partials, chunks, c);
  else
    launch(add_partials_kernel<T>, grid, kPartialThreads, 0, ctx.stream, grad.ptr<T>(), partials, chunks, c);
}

// First index and stride of a grid-stride loop over a 1-D grid.
__device__ __forceinline__ int64_t grid_first() { return int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return int64_t(gridDim.x) * blockDim.x; }

}  // namespace strata::STRATA_CUDA_NS
