// Weights entering a store unit by unit (issue 21): a Hugging Face import and a
// strata checkpoint's weights, read into a deferred model's offloaded Trainer (host
// and NVMe tiers), are bitwise the weights, optimizer start and losses of the same
// import into a resident model; a resume into a deferred model continues exactly; a
// model whose state lives in a store refuses a load without its Trainer, saying so.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
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

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

TrainOptions options() {
  TrainOptions o;
  o.adamw.lr = 1e-2f;
  o.clip_norm = 0.5f;
  return o;
}

std::vector<float> train(Trainer& t, const ModelConfig& c, int steps) {
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
  s.losses = train(t, c, steps);
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
  const std::vector<float> all = train(whole, c, 4);

  const std::string ck = dir.path() + "/resume";
  {
    Model m(c, cpu(), Precision::bf16, 3, Model::Init::deferred);
    Trainer t(m, options(), off);
    const std::vector<float> first = train(t, c, 2);
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
