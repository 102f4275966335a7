// The emulated CUDA device end to end: Device::cuda() in this test program runs the
// kernels/cuda sources through the emulator (tests/CMakeLists.txt, strata_emulated),
// so the op entry points, the Model and the Trainer take the CUDA dispatch path.
// The bodies are strata-selftest's (tools/selftest/gpu_vs_cpu.h): every op against
// the CPU backend, and 20 training steps against the same run on a CPU device.
#include <catch2/catch.hpp>

#include "ops.h"
#include "selftest/gpu_vs_cpu.h"
#include "strata/error.h"

namespace strata::test {
namespace {

TEST_CASE("cuda_emu: Device::cuda is an emulated CUDA device whose copies round-trip", "[cuda_emu]") {
  REQUIRE(built_with_cuda());
  auto gpu = Device::cuda();
  REQUIRE(gpu->kind() == DeviceKind::cuda);
  Buffer b(*gpu, 64, "round trip");
  const std::vector<float> in = {1.5f, -2.25f, 3.0f};
  copy_from_host_f32(TensorView(b.data(), DType::bf16, {3}, gpu.get()), in.data());
  REQUIRE(copy_to_host_f32(TensorView(b.data(), DType::bf16, {3}, gpu.get())) == in);
  // The op entry points check that tensors live on the stream's device.
  auto cpu = Device::cpu();
  REQUIRE_THROWS_WITH(ops::fill_zero(TensorView(b.data(), DType::f32, {3}, gpu.get()), cpu->stream()),
                      Catch::Contains("fill_zero"));
}

TEST_CASE("cuda_emu: every op of the registry on the emulated CUDA device matches the CPU", "[cuda_emu]") {
  auto gpu = Device::cuda();
  const std::vector<selftest::Check> checks = selftest::compare_ops(*gpu, /*small=*/true);
  REQUIRE(checks.size() > 100);
  for (const selftest::Check& c : checks) {
    INFO(c.op << " " << c.what << " " << c.dtype << ": error " << c.error << ", tolerance " << c.tolerance);
    CHECK(c.pass());
  }
  CHECK(selftest::ops_not_compared(checks).empty());
}

TEST_CASE("cuda_emu: 20 training steps on the emulated CUDA device match the CPU device", "[cuda_emu]") {
  const std::string preset = GENERATE("gpt", "llama");
  const Precision precision = GENERATE(Precision::fp32, Precision::bf16);
  auto gpu = Device::cuda();
  const selftest::TrainConfig config{preset, precision, 20, /*small=*/true};
  const selftest::TrainComparison r = selftest::compare_training(*gpu, config);
  INFO(preset << " " << precision_name(precision) << ": loss cpu " << r.loss_cpu.front() << " -> "
              << r.loss_cpu.back() << ", gpu " << r.loss_gpu.front() << " -> " << r.loss_gpu.back()
              << "; max loss diff " << r.max_loss_diff << ", weight diff (relative L2) " << r.weight_diff
              << ", max weight diff " << r.max_weight_diff);
  REQUIRE(r.loss_gpu.size() == 20);
  CHECK(r.loss_cpu.back() < r.loss_cpu.front() - 0.5);  // it learns: the comparison is not of two idle runs
  CHECK(r.max_loss_diff <= r.loss_tolerance);
  CHECK(r.weight_diff <= r.weight_tolerance);
  CHECK(r.weight_diff > 0);  // different GEMM kernels: bitwise equality would mean one device ran both
}

}  // namespace
}  // namespace strata::test
