// Tests of the CUDA emulator's sanitizer (kernels/cuda/emu/sanitize.cpp): each kernel
// here has exactly the defect (or the absence of one) its test names, and the test
// asserts the finding the emulator reports, or that it reports none.
#include <catch2/catch.hpp>
#include <numeric>
#include <vector>

#include "cuda/kernel_util.cuh"
#include "emu_support.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

using Catch::Matchers::Contains;
using cuda_emu::launch;
using cuda_emu::Shared;
using cuda_emu::SharedPtr;

// Restores the emulator's settings when a test that changes them ends.
struct Settings {
  bool races = emu::race_check();
  uint64_t seed = emu::thread_order_seed();
  ~Settings() {
    emu::set_race_check(races);
    emu::set_thread_order_seed(seed);
  }
};

// The sanitizer's message for what f launches, or "" when it finds nothing.
template <class F>
std::string finding(F&& f) {
  try {
    f();
  } catch (const emu::SanitizerError& e) {
    return e.what();
  }
  return {};
}

// Each thread writes its slot and reads its neighbour's; `sync` puts the barrier between.
constexpr int kNeighbourArrayLine = __LINE__ + 2;  // where s is declared
static __global__ void neighbour_kernel(int* out, bool sync) {
  __shared__ Shared<int[128]> s;
  const int t = int(threadIdx.x), n = int(blockDim.x);
  s[t] = t;
  if (sync) __syncthreads();
  out[t] = s[(t + 1) % n];
}

// The last thread writes one element past the array.
static __global__ void past_end_kernel(int* out) {
  __shared__ Shared<int[64]> s;
  const int t = int(threadIdx.x);
  s[t + 1] = t;  // thread 63 writes s[64]
  out[t] = t;
}

static __global__ void dynamic_past_end_kernel(float* out, int n) {
  STRATA_DYNAMIC_SHARED(float, s);
  s[int(threadIdx.x)] = 1.0f;  // n floats were asked for; threads >= n are out of bounds
  out[threadIdx.x] = float(n);
}

// Warp-synchronous: reads the previous lane's write with no barrier, as if the warp
// ran in lock-step. Dynamic shared memory starts as 0xff bytes (-1) in every block.
static __global__ void lockstep_kernel(int* out) {
  STRATA_DYNAMIC_SHARED(int, s);
  const int t = int(threadIdx.x);
  s[t] = t;
  out[t] = t > 0 ? s[t - 1] : 0;
}

// As lockstep_kernel, with the __syncwarp() that makes it correct.
static __global__ void syncwarp_kernel(int* out) {
  STRATA_DYNAMIC_SHARED(int, s);
  const int t = int(threadIdx.x);
  s[t] = t;
  __syncwarp();
  out[t] = t > 0 ? s[t - 1] : 0;
}

// One warp reads s[lane * Stride] (as floats, or as doubles).
template <int Stride>
static __global__ void stride_kernel(float* out) {
  __shared__ Shared<float[32 * 33]> s;
  out[threadIdx.x] = s[int(threadIdx.x) * Stride];
}
template <int Stride>
static __global__ void stride_double_kernel(double* out) {
  __shared__ Shared<double[32 * 33]> s;
  out[threadIdx.x] = s[int(threadIdx.x) * Stride];
}
static __global__ void broadcast_kernel(float* out) {
  __shared__ Shared<float[32]> s;
  out[threadIdx.x] = s[0];
}

// Two block sums through one buffer: the case the leading barrier of block_sum exists for.
static __global__ void two_sums_kernel(float* out) {
  __shared__ Shared<float[32]> buf;
  const float t = float(threadIdx.x);
  const float a = cuda_emu::block_sum(t, buf);
  const float b = cuda_emu::block_sum(2.0f * t + 1.0f, buf);
  out[threadIdx.x] = a;
  out[blockDim.x + threadIdx.x] = b;
}

// Records its own accesses through raw pointers, as the emulated wmma does.
static __global__ void raw_record_kernel(int* out, bool past_end) {
  __shared__ Shared<int[32]> s;
  int* raw = SharedPtr<int>(s).get();
  const int t = int(threadIdx.x);
  emu::record_shared_access(raw + t, sizeof(int), true);
  raw[t] = t;
  const int other = past_end ? 32 : (t + 1) % 32;
  emu::record_shared_access(raw + other, sizeof(int), false);
  out[t] = past_end ? 0 : raw[other];
}

TEST_CASE("sanitizer: a shared-memory race is reported with the kernel, array and threads", "[cuda_emu][sanitize]") {
  std::vector<int> out(128, -1);
  REQUIRE_THROWS_AS(launch(neighbour_kernel, 2, 128, 0, nullptr, out.data(), false), emu::SanitizerError);
  const std::string m = finding([&] { launch(neighbour_kernel, 1, 128, 0, nullptr, out.data(), false); });
  CHECK_THAT(m, Contains("shared-memory race"));
  CHECK_THAT(m, Contains("neighbour_kernel"));
  CHECK_THAT(m, Contains("test_sanitize.cpp:" + std::to_string(kNeighbourArrayLine) + " (512 bytes)"));
  // Which of the two came first depends on the thread order: either is named.
  CHECK_THAT(m, Contains(" wrote and thread ") || Contains(" read and thread "));
  CHECK_THAT(m, Contains("in one barrier interval"));
  CHECK_THAT(m, Contains("block (0,0,0)"));
  // With the barrier, the same accesses are ordered: no finding, the right result.
  launch(neighbour_kernel, 2, 128, 0, nullptr, out.data(), true);
  for (int t = 0; t < 128; ++t) CHECK(out[t] == (t + 1) % 128);
}

TEST_CASE("sanitizer: a race is not reported when race checks are off", "[cuda_emu][sanitize]") {
  Settings keep;
  emu::set_race_check(false);
  std::vector<int> out(128, -1);
  CHECK_NOTHROW(launch(neighbour_kernel, 1, 128, 0, nullptr, out.data(), false));
}

TEST_CASE("sanitizer: out-of-bounds shared writes are reported and never land", "[cuda_emu][sanitize]") {
  std::vector<int> out(64, -1);
  REQUIRE_THROWS_WITH(launch(past_end_kernel, 1, 64, 0, nullptr, out.data()),
                      Contains("out-of-bounds shared-memory write: thread (63,0,0) wrote 4 bytes at byte offset 256") &&
                          Contains("(256 bytes)") && Contains("past_end_kernel"));
  for (int t = 0; t < 64; ++t) CHECK(out[t] == t);  // the block ran to its end
  std::vector<float> f(64);
  REQUIRE_THROWS_WITH(launch(dynamic_past_end_kernel, 1, 64, 48 * sizeof(float), nullptr, f.data(), 48),
                      Contains("16 shared-memory finding(s)") && Contains("of dynamic shared memory (192 bytes)"));
  CHECK_NOTHROW(launch(dynamic_past_end_kernel, 1, 64, 64 * sizeof(float), nullptr, f.data(), 64));
}

TEST_CASE("sanitizer: a warp-synchronous kernel passes in thread order and fails shuffled", "[cuda_emu][sanitize]") {
  Settings keep;
  emu::set_race_check(false);  // the order alone must expose it
  auto run = [](uint64_t seed, auto kernel) {
    emu::set_thread_order_seed(seed);
    std::vector<int> out(32, -2);
    launch(kernel, 1, 32, 32 * sizeof(int), nullptr, out.data());
    int wrong = 0;
    for (int t = 1; t < 32; ++t) wrong += out[t] != t - 1;
    return wrong;
  };
  CHECK(run(0, lockstep_kernel) == 0);  // thread order hides the missing barrier
  for (uint64_t seed : {1, 2, 3, 77}) {
    CAPTURE(seed);
    CHECK(run(seed, lockstep_kernel) > 0);
    CHECK(run(seed, syncwarp_kernel) == 0);
  }
  // With race checks on, the missing barrier is reported whatever the order, and the
  // __syncwarp() version is accepted (lanes of one warp, ordered by it).
  emu::set_race_check(true);
  std::vector<int> out(32);
  emu::set_thread_order_seed(0);
  CHECK_THROWS_WITH(launch(lockstep_kernel, 1, 32, 128, nullptr, out.data()), Contains("shared-memory race"));
  CHECK_NOTHROW(launch(syncwarp_kernel, 1, 32, 128, nullptr, out.data()));
  // A __syncwarp() orders lanes of one warp only.
  CHECK_THROWS_WITH(launch(syncwarp_kernel, 1, 64, 256, nullptr, out.data()), Contains("shared-memory race"));
}

TEST_CASE("sanitizer: bank-conflict degrees of known access patterns", "[cuda_emu][sanitize]") {
  emu::reset_stats();
  std::vector<float> f(32);
  std::vector<double> d(32);
  launch(stride_kernel<1>, 1, 32, 0, nullptr, f.data());
  launch(stride_kernel<2>, 1, 32, 0, nullptr, f.data());
  launch(stride_kernel<32>, 3, 32, 0, nullptr, f.data());
  launch(stride_kernel<33>, 1, 32, 0, nullptr, f.data());
  launch(broadcast_kernel, 1, 32, 0, nullptr, f.data());
  launch(stride_double_kernel<1>, 1, 32, 0, nullptr, d.data());
  launch(stride_double_kernel<16>, 1, 32, 0, nullptr, d.data());
  const emu::KernelStats s32 = emu::kernel_stats("stride_kernel<32>");
  CHECK(s32.launches == 1);
  CHECK(s32.shared_accesses == 3 * 32);
  CHECK(s32.instructions == 3);
  CHECK(s32.worst_degree == 32);
  CHECK(s32.mean_degree == 32.0);
  CHECK(emu::kernel_stats("stride_kernel<1>").worst_degree == 1);
  CHECK(emu::kernel_stats("stride_kernel<2>").worst_degree == 2);
  CHECK(emu::kernel_stats("stride_kernel<33>").worst_degree == 1);  // the padded row
  CHECK(emu::kernel_stats("broadcast_kernel").worst_degree == 1);
  CHECK(emu::kernel_stats("stride_double_kernel<1>").worst_degree == 1);  // two 128-byte phases
  CHECK(emu::kernel_stats("stride_double_kernel<16>").worst_degree == 16);
  // The name without template arguments sums the instances.
  const emu::KernelStats all = emu::kernel_stats("stride_kernel");
  CHECK(all.launches == 4);
  CHECK(all.worst_degree == 32);
  CHECK(all.mean_degree == Approx((1 + 2 + 3 * 32 + 1) / 6.0));
  CHECK(emu::kernel_stats("never_launched_kernel").launches == 0);
  CHECK_THAT(emu::conflict_report(), Contains("stride_kernel<32>"));
  emu::reset_stats();
  CHECK(emu::kernel_stats("stride_kernel<32>").launches == 0);
}

TEST_CASE("sanitizer: two block sums through one buffer are race-free", "[cuda_emu][sanitize]") {
  // Without the leading barrier of block_sum, the second call's write of buf races
  // with the first call's reads by other warps, and this launch throws.
  const int n = 256;
  std::vector<float> out(2 * n);
  launch(two_sums_kernel, 3, n, 0, nullptr, out.data());
  for (int t = 0; t < n; ++t) {
    CHECK(out[t] == float(n * (n - 1) / 2));
    CHECK(out[n + t] == float(n * (n - 1) + n));
  }
  // LayerNorm's forward calls block_sum twice on one buffer (mean, then variance), its
  // backward twice a row: rows of 8 warps through the real launchers.
  const int64_t rows = 6, c = 256;
  HostTensor x(DType::f32, {rows, c}), w(DType::f32, {c}), bias(DType::f32, {c}), dy(DType::f32, {rows, c});
  x.uniform(3), w.uniform(4), bias.uniform(5), dy.uniform(6);
  HostTensor y(DType::f32, {rows, c}), mean(DType::f32, {rows}), rstd(DType::f32, {rows});
  HostTensor dx(DType::f32, {rows, c}), dw(DType::f32, {c}), db(DType::f32, {c});
  dw.fill(0), db.fill(0);
  REQUIRE_NOTHROW(cuda_emu::norm_forward(
      {y.view(), mean.view(), rstd.view(), x.view(), w.view(), bias.view(), 1e-5f, false}, emu()));
  REQUIRE_NOTHROW(cuda_emu::norm_backward(
      {dx.view(), dw.view(), db.view(), dy.view(), x.view(), w.view(), mean.view(), rstd.view(), false}, emu()));
}

TEST_CASE("sanitizer: accesses recorded through raw pointers are checked too", "[cuda_emu][sanitize]") {
  std::vector<int> out(32);
  CHECK_THROWS_WITH(launch(raw_record_kernel, 1, 32, 0, nullptr, out.data(), false), Contains("shared-memory race"));
  CHECK_THROWS_WITH(launch(raw_record_kernel, 1, 32, 0, nullptr, out.data(), true),
                    Contains("out-of-bounds shared-memory read") && Contains("in no shared array of the block"));
}

}  // namespace
}  // namespace strata::test
