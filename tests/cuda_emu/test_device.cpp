// The emulated CUDA device end to end: Device::cuda() in this test program runs the
// kernels/cuda sources through the emulator (tests/CMakeLists.txt, strata_emulated),
// so the op entry points, the Model and the Trainer take the CUDA dispatch path.
// The bodies are strata-selftest's (tools/selftest/gpu_vs_cpu.h): every op against
// the CPU backend, and 20 training steps against the same run on a CPU device.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>

#include "data/temp_dir.h"
#include "ops.h"
#include "selftest/gpu_vs_cpu.h"
#include "strata/checkpoint.h"
#include "strata/error.h"
#include "strata/lora.h"
#include "strata/train.h"

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
  // The op entry points check that tensors live on the stream's device, and here
  // also that they are device memory, as a GPU would fault on host memory.
  auto cpu = Device::cpu();
  REQUIRE_THROWS_WITH(ops::fill_zero(TensorView(b.data(), DType::f32, {3}, gpu.get()), cpu->stream()),
                      Catch::Contains("fill_zero"));
  float host[4] = {};
  REQUIRE_THROWS_WITH(ops::fill_zero(TensorView(host, DType::f32, {4}, gpu.get()), gpu->stream()),
                      Catch::Contains("is not CUDA device memory"));
  REQUIRE_THROWS_WITH(ops::fill_zero(TensorView(b.data(), DType::f32, {17}, gpu.get()), gpu->stream()),
                      Catch::Contains("is not CUDA device memory"));  // runs past the 64-byte buffer
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

// Every parameter of a and b, as host f32: bitwise equal.
void require_same_parameters(const Model& a, const Model& b) {
  for (const ParamInfo& p : a.parameters()) {
    INFO(p.name);
    REQUIRE(copy_to_host_f32(a.parameter(p.name)) == copy_to_host_f32(b.parameter(p.name)));
  }
}

TEST_CASE("cuda_emu: init and checkpoints and sampling move bytes to and from the emulated CUDA device",
          "[cuda_emu]") {
  auto gpu = Device::cuda();
  auto cpu = Device::cpu();
  ModelConfig c = ModelConfig::preset("gpt-mini");
  c.vocab_size = 64, c.n_layers = 1, c.n_heads = 2, c.d_model = 32, c.d_mlp = 128, c.max_seq = 16;
  Model g(c, *gpu, Precision::bf16, 5), h(c, *cpu, Precision::bf16, 5);
  require_same_parameters(g, h);  // init runs on the host and is copied: bitwise the same

  Trainer trainer(g, TrainOptions{});
  std::vector<int32_t> in(32), tg(32);
  for (int i = 0; i < 32; ++i) in[size_t(i)] = (i * 7) % 64, tg[size_t(i)] = (i * 7 + 7) % 64;
  const Batch batch{TensorView(in.data(), DType::i32, {2, 16}), TensorView(tg.data(), DType::i32, {2, 16})};
  for (int step = 0; step < 3; ++step) trainer.train_step({batch});

  // Saved from the emulated device, loaded on a CPU device and on the emulated one.
  TempDir dir;
  save_checkpoint(dir.file("ck"), g, &trainer);
  Model on_cpu(c, *cpu, Precision::bf16, 99), on_gpu(c, *gpu, Precision::bf16, 99);
  Trainer cpu_trainer(on_cpu, TrainOptions{}), gpu_trainer(on_gpu, TrainOptions{});
  load_checkpoint(dir.file("ck"), on_cpu, &cpu_trainer);
  load_checkpoint(dir.file("ck"), on_gpu, &gpu_trainer);
  require_same_parameters(g, on_cpu);
  require_same_parameters(g, on_gpu);
  // Greedy sampling reads logits back from the device: the same weights give the same tokens.
  SampleOptions so;
  so.max_new_tokens = 6, so.temperature = 0;
  const std::vector<int32_t> tokens = sample(on_gpu, {1, 8, 15}, so);
  REQUIRE(tokens.size() == 6);
  CHECK(tokens == sample(on_cpu, {1, 8, 15}, so));

  // The optimizer state came along: the next step from it agrees with the device it
  // was saved from (bitwise: same device, same kernels) and with the CPU.
  const float loss_gpu = gpu_trainer.train_step({batch}).loss;
  CHECK(loss_gpu == trainer.train_step({batch}).loss);
  CHECK(loss_gpu == Approx(cpu_trainer.train_step({batch}).loss).epsilon(1e-2));
  require_same_parameters(g, on_gpu);
}

// Largest |a - b| over two host vectors of the same size.
float max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

TEST_CASE("cuda_emu: LoRA trains and saves and merges on the emulated CUDA device as on the CPU", "[cuda_emu]") {
  auto gpu = Device::cuda();
  auto cpu = Device::cpu();
  ModelConfig c = ModelConfig::preset("gpt-mini");
  c.vocab_size = 64, c.n_layers = 1, c.n_heads = 2, c.d_model = 32, c.d_mlp = 128, c.max_seq = 16;
  Model g(c, *gpu, Precision::fp32, 5), h(c, *cpu, Precision::fp32, 5);
  LoraOptions lo;
  lo.rank = 4, lo.seed = 3;
  Lora lg(g, lo), lh(h, lo);
  REQUIRE(copy_to_host_f32(lg.flat_params()) == copy_to_host_f32(lh.flat_params()));  // host init, copied
  TrainOptions o;
  o.adamw.lr = 1e-2f;
  Trainer tg(g, o), th(h, o);
  std::vector<int32_t> in(32), tgt(32);
  for (int i = 0; i < 32; ++i) in[size_t(i)] = (i * 5) % 64, tgt[size_t(i)] = (i * 5 + 5) % 64;
  const Batch batch{TensorView(in.data(), DType::i32, {2, 16}), TensorView(tgt.data(), DType::i32, {2, 16})};
  for (int step = 0; step < 5; ++step)
    CHECK(tg.train_step({batch}).loss == Approx(th.train_step({batch}).loss).epsilon(1e-5));
  const std::vector<float> trained = copy_to_host_f32(lg.flat_params());
  CHECK(max_diff(trained, copy_to_host_f32(lh.flat_params())) < 1e-4f);

  TempDir dir;  // saved from the emulated device, loaded on the CPU: the same adapters
  lg.save(dir.file("adapter"));
  lh.load(dir.file("adapter"));
  CHECK(copy_to_host_f32(lh.flat_params()) == trained);

  lg.merge();
  lh.merge();
  for (const ParamInfo& p : g.parameters()) {
    INFO(p.name);
    CHECK(max_diff(copy_to_host_f32(g.parameter(p.name)), copy_to_host_f32(h.parameter(p.name))) < 1e-5f);
  }
}

}  // namespace
}  // namespace strata::test
