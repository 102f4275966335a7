// Asking for a CUDA device where there is none (no GPU, or a build without CUDA)
// gives a clear "no CUDA device" error and leaves the CPU path working.
#include <catch2/catch.hpp>

#include "ops.h"
#include "strata/device.h"
#include "strata/error.h"
#include "support/skip.h"

namespace strata {
namespace {

TEST_CASE("Device::cuda without a usable GPU throws 'no CUDA device'", "[cpu][cuda]") {
  if (cuda_device_count() > 0) {
    test::skip_test("a CUDA device is present: the no-device error cannot be exercised here");
    return;
  }
  REQUIRE_THROWS_AS(Device::cuda(0), Error);
  REQUIRE_THROWS_WITH(Device::cuda(0), Catch::StartsWith("no CUDA device: ") && Catch::Contains("cuda:0"));
  REQUIRE_THROWS_WITH(Device::cuda(3, size_t(1) << 30), Catch::StartsWith("no CUDA device: ") &&
                                                            Catch::Contains("cuda:3"));

  // The CPU path is unaffected.
  auto cpu = Device::cpu();
  float a[3] = {1, 2, 3}, b[3] = {10, 20, 30}, out[3] = {};
  ops::add({TensorView(out, DType::f32, {3}, cpu.get()), TensorView(a, DType::f32, {3}, cpu.get()),
            TensorView(b, DType::f32, {3}, cpu.get())},
           cpu->stream());
  CHECK(out[0] == 11.0f);
  CHECK(out[2] == 33.0f);
}

TEST_CASE("the op registry lists a CUDA implementation exactly when built with CUDA", "[cpu][cuda]") {
  for (const ops::OpInfo& info : ops::op_registry()) {
    INFO(info.name);
    CHECK(info.cuda == built_with_cuda());
  }
}

}  // namespace
}  // namespace strata
