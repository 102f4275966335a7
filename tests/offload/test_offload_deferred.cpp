// A model built Model::Init::deferred straight into its offload tiers (issue 21):
// Model::init_unit_params is bitwise the resident constructor's params; the store
// built from a deferred model holds exactly the weights and optimizer state of one
// built from the resident model and trains to exactly the resident Trainer's losses
// (gpt and llama, host and NVMe tiers); construction's host peak, by strata's own
// accounting (host tiers, staging, pinned pool, device arena), does not grow with
// depth; a deferred model without a store says what to do.
#include <catch2/catch.hpp>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "nvme_test_dirs.h"
#include "strata/strata.h"
#include "../train/train_support.h"

using namespace strata;
using namespace strata::test;
using offload::Tier;

namespace {

constexpr uint64_t kSeed = 5;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

TrainOptions options() {
  TrainOptions o;
  o.adamw.lr = 1e-2f;
  o.clip_norm = 0.5f;
  return o;
}

struct Run {
  std::vector<std::vector<float>> weights, master, exp_avg, exp_avg_sq;  // per unit, before training
  std::vector<float> losses;
};

// Offloaded per `off` (the plain resident Trainer when null), from a model built `init`.
Run train(const ModelConfig& c, Precision p, Model::Init init, const offload::OffloadOptions* off, int steps) {
  Model m(c, cpu(), p, kSeed, init);
  std::unique_ptr<Trainer> t = off ? std::make_unique<Trainer>(m, options(), *off) : std::make_unique<Trainer>(m, options());
  Run r;
  for (int u = 0; u < m.num_units(); ++u) {
    r.weights.push_back(t->unit_parameters(u));
    r.master.emplace_back();
    r.exp_avg.emplace_back();
    r.exp_avg_sq.emplace_back();
    t->optimizer_state(u, r.master.back(), r.exp_avg.back(), r.exp_avg_sq.back());
  }
  for (int s = 0; s < steps; ++s) {
    RandomBatch b(2, 8, c.vocab_size, 300);  // the same batch: the loss must fall as it is learnt
    r.losses.push_back(t->train_step({b.batch()}).loss);
  }
  return r;
}

}  // namespace

TEST_CASE("init_unit_params is bitwise the resident constructor's parameters", "[cpu][offload]") {
  for (const char* arch : {"gpt", "llama"})
    for (Precision p : {Precision::fp32, Precision::bf16}) {
      const ModelConfig c = tiny_config(arch);
      Model resident(c, cpu(), p, kSeed);
      Model deferred(c, cpu(), p, kSeed, Model::Init::deferred);
      CHECK_FALSE(deferred.params_resident());
      CHECK_FALSE(deferred.grads_resident());
      for (int u = 0; u < resident.num_units(); ++u) {
        const TensorView view = resident.unit_params(u);
        const size_t bytes = size_t(view.numel()) * dtype_size(view.dtype);
        std::vector<char> drawn(bytes, 0x5a);  // garbage: the padding must be written too
        deferred.init_unit_params(u, drawn.data());
        INFO(arch << " " << precision_name(p) << " unit " << u);
        CHECK(std::memcmp(drawn.data(), view.data, bytes) == 0);
      }
    }
}

TEST_CASE("a deferred model built into host and NVMe tiers equals the resident model", "[cpu][nvme][offload]") {
  ScratchDir dir(2);
  const int steps = 3;
  for (const char* arch : {"gpt", "llama"})
    for (Precision p : {Precision::fp32, Precision::bf16}) {
      const ModelConfig c = tiny_config(arch);
      const Run reference = train(c, p, Model::Init::resident, nullptr, steps);
      for (auto [pt, gt, ot] : {std::tuple{Tier::host, Tier::host, Tier::host}, {Tier::nvme, Tier::nvme, Tier::nvme},
                                {Tier::nvme, Tier::host, Tier::nvme}, {Tier::host, Tier::nvme, Tier::nvme}}) {
        const offload::OffloadOptions off = placement(pt, gt, ot, dir);
        const Run from_resident = train(c, p, Model::Init::resident, &off, steps);
        const Run deferred = train(c, p, Model::Init::deferred, &off, steps);
        INFO(arch << " " << precision_name(p) << " params " << offload::tier_name(pt) << ", grads "
                  << offload::tier_name(gt) << ", optimizer " << offload::tier_name(ot));
        for (size_t u = 0; u < reference.weights.size(); ++u) {
          INFO("unit " << u);
          CHECK(same_bits(deferred.weights[u], reference.weights[u]));
          CHECK(same_bits(deferred.master[u], from_resident.master[u]));
          CHECK(same_bits(deferred.exp_avg[u], from_resident.exp_avg[u]));
          CHECK(same_bits(deferred.exp_avg_sq[u], from_resident.exp_avg_sq[u]));
        }
        CHECK(same_bits(deferred.losses, reference.losses));
        CHECK(deferred.losses.back() < deferred.losses.front());
      }
    }
}

TEST_CASE("construction's host peak into NVMe depends on the largest unit, not the depth", "[cpu][nvme][offload]") {
  ScratchDir dir(1);
  ModelConfig c = tiny_config("gpt");
  c.d_model = 64;
  c.d_mlp = 256;
  c.vocab_size = 64;
  const offload::OffloadOptions off = placement(Tier::nvme, Tier::nvme, Tier::nvme, dir);
  // Peak host bytes of building a model of `layers` blocks and its offloaded Trainer:
  // the store's construction peak plus the CPU device's arena high water (device
  // memory is host memory there). Also the largest unit's bytes (bf16 params).
  auto peak = [&](int64_t layers, Model::Init init, size_t* unit_bytes) {
    c.n_layers = layers;
    auto device = Device::cpu(0);
    device->arena().reset_high_water();
    Model m(c, *device, Precision::bf16, kSeed, init);
    Trainer t(m, options(), off);
    *unit_bytes = 0;
    for (int u = 0; u < m.num_units(); ++u) *unit_bytes = std::max(*unit_bytes, size_t(m.unit_numel(u)) * 2);
    return t.memory().host_construction_peak + device->arena().bytes_high_water();
  };
  size_t unit4 = 0, unit = 0;
  const size_t at4 = peak(4, Model::Init::deferred, &unit4);
  for (int64_t layers : {8, 16}) {
    const size_t at = peak(layers, Model::Init::deferred, &unit);
    INFO(layers << " layers: peak " << at << " bytes, 4 layers: " << at4 << ", one unit " << unit);
    CHECK(unit == unit4);
    CHECK((at > at4 ? at - at4 : at4 - at) <= unit);
  }
  // The accounting sees the difference: built resident, the model's own buffers grow
  // with depth (12 more blocks of params and gradients).
  const size_t resident16 = peak(16, Model::Init::resident, &unit);
  INFO("resident 16 layers: " << resident16 << ", deferred 4 layers: " << at4);
  CHECK(resident16 > at4 + 12 * unit);
}

TEST_CASE("a deferred model without a store says what to do", "[cpu][offload]") {
  const ModelConfig c = tiny_config("gpt");
  Model m(c, cpu(), Precision::fp32, kSeed, Model::Init::deferred);
  RandomBatch b(1, 4, c.vocab_size, 1);
  REQUIRE_THROWS_WITH(m.forward(b.batch(), StepKey{}, false), Catch::Contains("Init::deferred"));
  REQUIRE_THROWS_WITH(m.unit_params(0), Catch::Contains("Init::deferred"));
  REQUIRE_THROWS_WITH(Trainer(m, options()),
                      Catch::Contains("Init::deferred") && Catch::Contains("give the Trainer offload options"));
  REQUIRE_THROWS_WITH(m.init_unit_params(m.num_units(), nullptr), Catch::Contains("unit"));
}
