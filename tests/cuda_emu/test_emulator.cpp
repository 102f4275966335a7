// Tests of the CUDA emulator itself (kernels/cuda/emu): barrier semantics, warp
// shuffles and votes, atomics across concurrently running blocks, dynamic shared
// memory and multi-dimensional indices. Each kernel here gives a wrong answer if the
// feature it exercises is emulated wrongly (e.g. threads run to completion one after
// another instead of meeting at the barrier).
#include <catch2/catch.hpp>
#include <numeric>
#include <vector>

#include "cuda/launch.cuh"

namespace strata::test {
namespace {

using cuda_emu::launch;

// Reverses each block's slice in shared memory in place: every thread reads its
// mirror element, waits, then writes. Run one thread after another without the
// middle barrier, the second half would read already-reversed values.
static __global__ void reverse_kernel(int* out, const int* in) {
  __shared__ int s[256];
  const int t = int(threadIdx.x), n = int(blockDim.x), base = int(blockIdx.x) * n;
  s[t] = in[base + t];
  __syncthreads();
  int v = s[n - 1 - t];
  __syncthreads();
  s[t] = v;
  __syncthreads();
  out[base + t] = s[(t + 1) % n];  // a neighbour's write: needs the last barrier too
}

static __global__ void shuffle_kernel(int* xor_out, int* down_out, int* up_out, int* idx_out, float* sum_out) {
  const int t = int(threadIdx.x);
  xor_out[t] = __shfl_xor_sync(0xffffffffu, t * 10, 5);
  down_out[t] = __shfl_down_sync(0xffffffffu, t, 3);
  up_out[t] = __shfl_up_sync(0xffffffffu, t, 2, 16);
  idx_out[t] = __shfl_sync(0xffffffffu, t * 2, 7);
  float v = float(t);
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  sum_out[t] = v;
}

static __global__ void vote_kernel(unsigned* ballot, int* any_out, int* all_out, int* none_out) {
  const int t = int(threadIdx.x);
  ballot[t] = __ballot_sync(0xffffffffu, t % 3 == 0);
  any_out[t] = __any_sync(0xffffffffu, t == 40);
  all_out[t] = __all_sync(0xffffffffu, t < 1000);
  none_out[t] = __all_sync(0xffffffffu, t != 5);
}

static __global__ void atomic_kernel(int* count, float* fsum, int* imax, unsigned long long* wide) {
  const int g = int(blockIdx.x * blockDim.x + threadIdx.x);
  atomicAdd(count, 1);
  atomicAdd(fsum, 1.0f);  // integers below 2^24 are exact in any order
  atomicMax(imax, g);
  atomicAdd(wide, (unsigned long long)g);
}

static __global__ void dynamic_shared_kernel(float* out) {
  STRATA_DYNAMIC_SHARED(float, s);
  const int t = int(threadIdx.x), n = int(blockDim.x);
  s[t] = float(t + 1);
  __syncthreads();
  float acc = 0;
  for (int i = 0; i < n; ++i) acc += s[i];
  out[blockIdx.x * n + t] = acc;
}

static __global__ void index_kernel(int* out) {
  const int bx = int(blockIdx.x), by = int(blockIdx.y);
  const int tx = int(threadIdx.x), ty = int(threadIdx.y);
  const int gx = bx * int(blockDim.x) + tx, gy = by * int(blockDim.y) + ty;
  out[gy * int(gridDim.x * blockDim.x) + gx] = gy * 1000 + gx;
}

TEST_CASE("emulator: __syncthreads is a real barrier", "[cuda_emu]") {
  const int blocks = 5, n = 256;
  std::vector<int> in(blocks * n), out(blocks * n, -1);
  std::iota(in.begin(), in.end(), 0);
  launch(reverse_kernel, blocks, n, 0, nullptr, out.data(), static_cast<const int*>(in.data()));
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < n; ++t) {
      int neighbour = (t + 1) % n;
      REQUIRE(out[b * n + t] == b * n + (n - 1 - neighbour));
    }
}

TEST_CASE("emulator: warp shuffles", "[cuda_emu]") {
  const int n = 64;  // two warps: lanes never cross a warp
  std::vector<int> x(n), down(n), up(n), idx(n);
  std::vector<float> sum(n);
  launch(shuffle_kernel, 1, n, 0, nullptr, x.data(), down.data(), up.data(), idx.data(), sum.data());
  for (int t = 0; t < n; ++t) {
    const int lane = t % 32, warp0 = t - lane;
    CHECK(x[t] == (warp0 + (lane ^ 5)) * 10);
    CHECK(down[t] == (lane + 3 < 32 ? t + 3 : t));
    CHECK(up[t] == (lane % 16 >= 2 ? t - 2 : t));
    CHECK(idx[t] == (warp0 + 7) * 2);
    CHECK(sum[t] == float(32 * warp0 + 31 * 32 / 2));
  }
}

TEST_CASE("emulator: warp votes", "[cuda_emu]") {
  const int n = 64;
  std::vector<unsigned> ballot(n);
  std::vector<int> any(n), all(n), none(n);
  launch(vote_kernel, 1, n, 0, nullptr, ballot.data(), any.data(), all.data(), none.data());
  for (int t = 0; t < n; ++t) {
    const int warp0 = t - t % 32;
    unsigned expect = 0;
    for (int l = 0; l < 32; ++l)
      if ((warp0 + l) % 3 == 0) expect |= 1u << l;
    CHECK(ballot[t] == expect);
    CHECK(any[t] == (warp0 == 32 ? 1 : 0));  // lane 40 is in the second warp
    CHECK(all[t] == 1);
    CHECK(none[t] == (warp0 == 0 ? 0 : 1));
  }
}

TEST_CASE("emulator: atomics across concurrent blocks", "[cuda_emu]") {
  const int blocks = 64, n = 128, total = blocks * n;
  int count = 0, imax = -1;
  float fsum = 0;
  unsigned long long wide = 0;
  launch(atomic_kernel, blocks, n, 0, nullptr, &count, &fsum, &imax, &wide);
  CHECK(count == total);
  CHECK(fsum == float(total));
  CHECK(imax == total - 1);
  CHECK(wide == (unsigned long long)total * (total - 1) / 2);
}

TEST_CASE("emulator: dynamic shared memory is per block", "[cuda_emu]") {
  const int blocks = 8, n = 96;
  std::vector<float> out(blocks * n);
  launch(dynamic_shared_kernel, blocks, n, n * sizeof(float), nullptr, out.data());
  for (float v : out) CHECK(v == float(n * (n + 1) / 2));
}

TEST_CASE("emulator: 2-D grids and blocks", "[cuda_emu]") {
  const dim3 grid(3, 2), block(8, 4);
  const int width = 3 * 8, height = 2 * 4;
  std::vector<int> out(width * height, -1);
  launch(index_kernel, grid, block, 0, nullptr, out.data());
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) CHECK(out[y * width + x] == y * 1000 + x);
}

}  // namespace
}  // namespace strata::test
