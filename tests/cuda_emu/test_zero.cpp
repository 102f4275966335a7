// ZeRO stages 0-3 on two emulated CUDA devices (CPU communicator: the emulated
// device's memory is host-addressable), against the same runs on two CPU devices.
// The emulated op entry points refuse host memory, so every norm read, scalar
// all-reduce and checkpoint shard the engine moves must go through Stream::copy.
// ZeRO with host or NVMe offload is still refused on CUDA devices.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <memory>

#include "emu_support.h"
#include "strata/checkpoint.h"
#include "strata/dist.h"
#include "strata/error.h"
#include "strata/offload.h"
#include "strata/train.h"
#include "train/train_support.h"

namespace strata::test {
namespace {

constexpr int kRanks = 2, kSteps = 3, kAccum = 2;
constexpr int64_t kRowsPerRank = 2, kT = 8;

TrainOptions options(int stage) {
  TrainOptions o;
  o.grad_accum = kAccum;
  o.adamw.lr = 1e-2f;
  o.clip_norm = 0.5f;  // active: the all-reduced norm is used
  o.zero_stage = stage;
  return o;
}

struct Run {
  std::vector<float> losses;
  std::vector<float> weights;  // every unit's, f32, concatenated
  std::vector<float> exp_avg;  // every unit's optimizer state, gathered
};

// Rank 0's run (and a check that rank 1 holds the same replica, bitwise); `load` a
// checkpoint to start from (then no step is taken), `save` one to write at the end.
Run zero_run(bool cuda, Precision p, int stage, const std::string& save = "", const std::string& load = "") {
  const ModelConfig c = tiny_config("gpt");
  std::vector<Run> per_rank(kRanks);
  dist::run_ranks(kRanks, [&](int rank, dist::Comm& comm) {
    // The emulator has one device: each rank opens its own instance of it.
    std::unique_ptr<Device> device = cuda ? Device::cuda() : Device::cpu(rank);
    Model m(c, *device, p, 5);
    Trainer t(m, options(stage), comm);
    if (!load.empty()) load_checkpoint(load, m, &t);
    Run& r = per_rank[size_t(rank)];
    for (int s = 0; s < (load.empty() ? kSteps : 0); ++s) {
      std::vector<RandomBatch> mine;
      for (int k = 0; k < kAccum; ++k)
        mine.push_back(RandomBatch(kRanks * kRowsPerRank, kT, c.vocab_size, 1000 + uint64_t(s * 10 + k))
                           .rows(rank * kRowsPerRank, (rank + 1) * kRowsPerRank));
      r.losses.push_back(t.train_step({mine[0].batch(), mine[1].batch()}).loss);
    }
    for (int u = 0; u < m.num_units(); ++u) {
      const std::vector<float> w = t.unit_parameters(u);
      r.weights.insert(r.weights.end(), w.begin(), w.end());
      std::vector<float> master, m1, m2;
      t.optimizer_state(u, master, m1, m2);
      r.exp_avg.insert(r.exp_avg.end(), m1.begin(), m1.end());
    }
    if (!save.empty()) save_checkpoint(save, m, &t);
  });
  CHECK(per_rank[1].losses == per_rank[0].losses);
  CHECK(per_rank[1].weights == per_rank[0].weights);
  CHECK(per_rank[1].exp_avg == per_rank[0].exp_avg);
  return per_rank[0];
}

TEST_CASE("cuda_emu: ZeRO stages 0-3 on two emulated CUDA devices match two CPU devices", "[cuda_emu][dist]") {
  REQUIRE(Device::cuda()->host_addressable());  // what lets the CPU communicator serve it
  for (Precision p : {Precision::fp32, Precision::bf16})
    for (int stage = 0; stage <= 3; ++stage) {
      INFO(precision_name(p) << " stage " << stage);
      const Run on_gpu = zero_run(true, p, stage), on_cpu = zero_run(false, p, stage);
      check_training_matches(on_gpu.losses, on_cpu.losses, on_gpu.weights, on_cpu.weights, p);
      CHECK(relative_l2(on_gpu.exp_avg, on_cpu.exp_avg) <= (p == Precision::fp32 ? 1e-4 : 3e-2));
    }
}

TEST_CASE("cuda_emu: a ZeRO-3 checkpoint from emulated CUDA devices loads on one CPU device and under ZeRO-1",
          "[cuda_emu][dist]") {
  const std::string dir = (std::filesystem::temp_directory_path() / "strata_cuda_emu_zero_ckpt").string();
  std::filesystem::remove_all(dir);
  const Run on_gpu = zero_run(true, Precision::fp32, 3, dir);
  auto cpu_device = Device::cpu();
  Model m(tiny_config("gpt"), *cpu_device, Precision::fp32, 7);  // another seed: every value comes from the file
  Trainer t(m, options(0));
  load_checkpoint(dir, m, &t);
  std::vector<float> weights, exp_avg;
  for (int u = 0; u < m.num_units(); ++u) {
    const std::vector<float> w = t.unit_parameters(u);
    weights.insert(weights.end(), w.begin(), w.end());
    std::vector<float> master, m1, m2;
    t.optimizer_state(u, master, m1, m2);
    exp_avg.insert(exp_avg.end(), m1.begin(), m1.end());
  }
  CHECK(weights == on_gpu.weights);
  CHECK(exp_avg == on_gpu.exp_avg);
  const Run reloaded = zero_run(true, Precision::fp32, 1, "", dir);
  std::filesystem::remove_all(dir);
  CHECK(reloaded.weights == on_gpu.weights);
  CHECK(reloaded.exp_avg == on_gpu.exp_avg);
}

TEST_CASE("cuda_emu: ZeRO with host or NVMe offload on a CUDA device is refused before training", "[cuda_emu]") {
  auto gpu = Device::cuda();
  Model m(tiny_config("gpt"), *gpu, Precision::fp32, 5);
  std::vector<std::unique_ptr<dist::Comm>> comms = dist::make_cpu_comms(1);
  offload::OffloadOptions off;
  off.optimizer = offload::Tier::host;
  REQUIRE_THROWS_WITH(Trainer(m, options(2), *comms[0], off),
                      Catch::Contains("ZeRO with offload") && Catch::Contains("not supported on CUDA devices"));
  off.params = off.grads = off.optimizer = offload::Tier::device;  // ZeRO alone: accepted
  Trainer t(m, options(2), *comms[0], off);
  RandomBatch b(2, 8, m.config().vocab_size, 1);
  CHECK(std::isfinite(t.train_step({b.batch(), b.batch()}).loss));
}

}  // namespace
}  // namespace strata::test
