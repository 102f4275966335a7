// Emulated CUDA elementwise kernels (kernels/cuda/elementwise.cu) against the CPU
// backend, every dtype, sizes that are not multiples of the block size.
#include <catch2/catch.hpp>

#include "emu_support.h"
#include "ops.h"

namespace strata::test {
namespace {

const std::vector<int64_t> kSizes = {1, 17, 1000, 5000};

TEST_CASE("cuda_emu: add, scale, accumulate, fill_zero", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  for (int64_t n : kSizes) {
    INFO("n = " << n);
    HostTensor x(dt, {n}), y(dt, {n});
    x.uniform(1, -3, 3);
    y.uniform(2, -3, 3);
    HostTensor want(dt, {n}), got(dt, {n});
    ops::add({want.view(), x.view(), y.view()}, cpu().stream());
    cuda_emu::add({got.view(), x.view(), y.view()}, emu());
    expect_match("add", got, want, 0.0);  // one rounding of one add: bitwise

    ops::scale({want.view(), x.view(), 0.37f}, cpu().stream());
    cuda_emu::scale({got.view(), x.view(), 0.37f}, emu());
    expect_match("scale", got, want, 0.0);

    for (DType out_dt : {dt, DType::f32}) {
      HostTensor acc_want(out_dt, {n}), acc_got(out_dt, {n});
      acc_want.uniform(3);
      acc_got.set_values(acc_want.values());
      ops::accumulate({acc_want.view(), x.view()}, cpu().stream());
      cuda_emu::accumulate({acc_got.view(), x.view()}, emu());
      expect_match("accumulate", acc_got, acc_want, 0.0);
    }
    cuda_emu::fill_zero(got.view(), emu());
    for (double v : got.values()) REQUIRE(v == 0.0);
  }
}

TEST_CASE("cuda_emu: cast between every pair of dtypes", "[cuda_emu]") {
  const DType from = GENERATE(from_range(kFloatTypes));
  const DType to = GENERATE(from_range(kFloatTypes));
  const int64_t n = 1000;
  HostTensor x(from, {n});
  x.uniform(4, -70000, 70000);  // past f16's range: overflow to Inf must agree too
  x.set(3, std::nan(""));
  HostTensor want(to, {n}), got(to, {n});
  ops::cast({want.view(), x.view()}, cpu().stream());
  cuda_emu::cast({got.view(), x.view()}, emu());
  expect_match("cast", got, want, 0.0);
}

}  // namespace
}  // namespace strata::test
