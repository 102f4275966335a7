// A model built Model::Init::deferred straight into its offload tiers (issue 21):
// Model::init_unit_params is bitwise the resident constructor's params; the store
// built from a deferred model holds exactly the weights and optimizer state of one
// built from the resident model and trains to exactly the resident Trainer's losses
// (gpt and llama, host and NVMe tiers); construction's host peak, by strata's own
// accounting (host tiers, staging, pinned pool, device arena), does not grow with
// depth; a deferred model without a store says what to do. Weights entering a store
// unit by unit — a Hugging Face import and a checkpoint's weights, read into a
// deferred model's offloaded Trainer — are bitwise the weights, optimizer start and
// losses of the same load into a resident model; a resume into a deferred model
// continues exactly; a model whose state lives in a store refuses a load without its
// Trainer, saying so.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <functional>
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


std::vector<float> train_steps(Trainer& t, const ModelConfig& c, int steps) {
  std::vector<float> losses;
  for (int s = 0; s < steps; ++s) {
    RandomBatch b(2, 8, c.vocab_size, 300 + s);
    losses.push_back(t.train_step({b.batch()}).loss);
  }
  return losses;
}

struct Start {
  std::vector<std::vector<float>> weights, master, exp_avg, exp_avg_sq;
  std::vector<float> losses;
};

Start observe(Trainer& t, const Model& m, const ModelConfig& c, int steps) {
  Start s;
  for (int u = 0; u < m.num_units(); ++u) {
    s.weights.push_back(t.unit_parameters(u));
    s.master.emplace_back();
    s.exp_avg.emplace_back();
    s.exp_avg_sq.emplace_back();
    t.optimizer_state(u, s.master.back(), s.exp_avg.back(), s.exp_avg_sq.back());
  }
  s.losses = train_steps(t, c, steps);
  return s;
}

// `load` puts the source's weights into (model, trainer); the trainer is null for the
// resident reference, which loads before its Trainer exists.
using Load = std::function<void(Model&, Trainer*)>;

void check_into_tiers(const ModelConfig& c, Precision p, const Load& load, ScratchDir& dir) {
  Model ref_model(c, cpu(), p, 1);
  load(ref_model, nullptr);
  Trainer ref_trainer(ref_model, options());
  const Start ref = observe(ref_trainer, ref_model, c, 3);
  for (auto [pt, gt, ot] : {std::tuple{Tier::host, Tier::host, Tier::host}, {Tier::nvme, Tier::nvme, Tier::nvme}}) {
    const offload::OffloadOptions off = placement(pt, gt, ot, dir);
    Model m(c, cpu(), p, 2, Model::Init::deferred);  // another seed: every byte must come from the load
    Trainer t(m, options(), off);
    load(m, &t);
    const Start got = observe(t, m, c, 3);
    INFO(precision_name(p) << " tiers " << offload::tier_name(pt));
    for (size_t u = 0; u < ref.weights.size(); ++u) {
      INFO("unit " << u);
      CHECK(same_bits(got.weights[u], ref.weights[u]));
      CHECK(same_bits(got.master[u], ref.master[u]));
      CHECK(same_bits(got.exp_avg[u], ref.exp_avg[u]));
      CHECK(same_bits(got.exp_avg_sq[u], ref.exp_avg_sq[u]));
    }
    CHECK(same_bits(got.losses, ref.losses));
  }
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

TEST_CASE("a Hugging Face import into a deferred model's tiers equals the resident import", "[cpu][nvme][offload]") {
  ScratchDir dir(1);
  for (const char* arch : {"gpt", "llama"}) {
    const ModelConfig c = tiny_config(arch);
    const HfLayout layout = hf_layout_for(c);
    const std::string hf = dir.path() + "/hf-" + arch;
    Model source(c, cpu(), Precision::fp32, 77);
    export_hf(source, hf, layout);
    for (Precision p : {Precision::fp32, Precision::bf16}) {
      INFO(arch);
      check_into_tiers(c, p, [&](Model& m, Trainer* t) { import_hf(m, hf, layout, t); }, dir);
    }
  }
}

TEST_CASE("a checkpoint's weights into a deferred model's tiers equal the resident load", "[cpu][nvme][offload]") {
  ScratchDir dir(1);
  const ModelConfig c = tiny_config("llama");
  const std::string ck = dir.path() + "/weights";
  Model source(c, cpu(), Precision::fp32, 78);
  save_checkpoint(ck, source, nullptr);
  for (Precision p : {Precision::fp32, Precision::bf16})
    check_into_tiers(c, p, [&](Model& m, Trainer* t) { load_checkpoint(ck, m, t, LoadScope::weights); }, dir);
}

TEST_CASE("a resume into a deferred model's NVMe tiers continues exactly", "[cpu][nvme][offload]") {
  ScratchDir dir(1);
  const ModelConfig c = tiny_config("gpt");
  const offload::OffloadOptions off = placement(Tier::nvme, Tier::nvme, Tier::nvme, dir);
  Model whole_model(c, cpu(), Precision::bf16, 3);
  Trainer whole(whole_model, options());
  const std::vector<float> all = train_steps(whole, c, 4);

  const std::string ck = dir.path() + "/resume";
  {
    Model m(c, cpu(), Precision::bf16, 3, Model::Init::deferred);
    Trainer t(m, options(), off);
    const std::vector<float> first = train_steps(t, c, 2);
    CHECK(same_bits(first, {all[0], all[1]}));
    save_checkpoint(ck, m, &t);
  }
  Model m(c, cpu(), Precision::bf16, 4, Model::Init::deferred);
  Trainer t(m, options(), off);
  load_checkpoint(ck, m, &t);
  std::vector<float> rest;
  for (int s = 2; s < 4; ++s) {
    RandomBatch b(2, 8, c.vocab_size, 300 + s);
    rest.push_back(t.train_step({b.batch()}).loss);
  }
  CHECK(same_bits(rest, {all[2], all[3]}));
}

TEST_CASE("loading into a model whose state lives in a store needs its Trainer", "[cpu][offload]") {
  ScratchDir dir(1);
  const ModelConfig c = tiny_config("gpt");
  const std::string hf = dir.path() + "/hf", ck = dir.path() + "/weights";
  {
    Model source(c, cpu(), Precision::fp32, 79);
    export_hf(source, hf, HfLayout::gpt2);
    save_checkpoint(ck, source, nullptr);
  }
  Model deferred(c, cpu(), Precision::fp32, 1, Model::Init::deferred);
  CHECK_THROWS_WITH(import_hf(deferred, hf, HfLayout::gpt2),
                    Catch::Contains("live in its store") && Catch::Contains("import with the model's Trainer"));
  CHECK_THROWS_WITH(load_checkpoint(ck, deferred), Catch::Contains("load the checkpoint with the model's Trainer"));
  Model resident(c, cpu(), Precision::fp32, 1);
  Trainer t(resident, options());
  CHECK_THROWS_WITH(load_checkpoint(ck, resident, &t),
                    Catch::Contains("holds weights only") && Catch::Contains("LoadScope::weights"));
}
