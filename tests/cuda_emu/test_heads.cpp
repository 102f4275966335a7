// The classifier head (strata/unit.h make_classifier_units) on the emulated CUDA
// device: its device-to-device label and loss copies and its pooling GEMMs run on the
// CUDA backend, and training matches the CPU device within selftest's tolerances,
// for both poolings.
#include <catch2/catch.hpp>

#include "emu_support.h"
#include "strata/train.h"
#include "strata/unit.h"
#include "train/train_support.h"

namespace strata::test {
namespace {

struct Run {
  std::vector<float> losses, weights;
};

Run train(Device& device, Precision p, Pooling pooling) {
  ModelConfig c = tiny_config("gpt");
  c.causal = false;
  Model m(c, make_classifier_units(c, 3, pooling), device, p, 5);
  TrainOptions o;
  o.adamw.lr = 1e-2f;
  Trainer t(m, o);
  Run r;
  // One batch every step (the run must learn it), one label per row at position 0.
  RandomBatch b(8, 8, c.vocab_size, 1000);
  std::fill(b.targets.begin(), b.targets.end(), -100);
  for (int64_t row = 0; row < b.B; ++row) b.targets[size_t(row * b.T)] = b.inputs[size_t(row * b.T + 7)] % 3;
  for (int s = 0; s < 4; ++s) r.losses.push_back(t.train_step({b.batch()}).loss);
  for (int u = 0; u < m.num_units(); ++u) {
    const std::vector<float> w = t.unit_parameters(u);
    r.weights.insert(r.weights.end(), w.begin(), w.end());
  }
  return r;
}

}  // namespace

TEST_CASE("cuda_emu: a classifier trains on the emulated CUDA device as on the CPU device", "[cuda_emu]") {
  auto gpu = Device::cuda();
  auto cpu_device = Device::cpu();
  for (Precision p : {Precision::fp32, Precision::bf16})
    for (Pooling pooling : {Pooling::cls, Pooling::mean}) {
      INFO(precision_name(p) << " " << pooling_name(pooling));
      const Run on_gpu = train(*gpu, p, pooling), on_cpu = train(*cpu_device, p, pooling);
      check_training_matches(on_gpu.losses, on_cpu.losses, on_gpu.weights, on_cpu.weights, p);
    }
}

}  // namespace strata::test
