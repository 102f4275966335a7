// An encoder-decoder with side inputs (tests/train/seq2seq_support.h) gets the engine
// without its units knowing: with state on the host and on NVMe (full recompute) it
// trains bit for bit like resident, and a run saved and resumed halfway ends bitwise
// where the uninterrupted run does.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>

#include "../train/seq2seq_support.h"
#include "nvme_test_dirs.h"
#include "strata/checkpoint.h"
#include "strata/strata.h"

using namespace strata;
using namespace strata::test;
using offload::Tier;

namespace {

struct Run {
  std::vector<float> losses;
  std::vector<std::vector<float>> weights;
};

TrainOptions options() {
  TrainOptions o;
  o.adamw.lr = 1e-2f;
  return o;
}

// Steps [first, last); loads `load` first and saves `save` after ("" for neither).
Run train(const ModelConfig& c, const offload::OffloadOptions* off, int first = 0, int last = 6,
          const std::string& load = "", const std::string& save = "") {
  Model m(c, seq2seq_units(c), cpu(), Precision::bf16, 5);
  m.set_recompute(RecomputePolicy::every_block(c.n_layers));
  std::unique_ptr<Trainer> t = off ? std::make_unique<Trainer>(m, options(), *off) : std::make_unique<Trainer>(m, options());
  if (!load.empty()) load_checkpoint(load, m, t.get());
  Run r;
  for (int s = first; s < last; ++s) {
    Seq2SeqBatch b(2, 8, c.vocab_size, 1000 + uint64_t(s % 2));  // two batches, learnable by heart
    r.losses.push_back(t->train_step({b.batch()}).loss);
  }
  for (int u = 0; u < m.num_units(); ++u) r.weights.push_back(t->unit_parameters(u));
  if (!save.empty()) save_checkpoint(save, m, t.get());
  return r;
}

}  // namespace

TEST_CASE("an encoder-decoder offloaded to host or NVMe trains bitwise like it does resident", "[offload][train]") {
  ScratchDir dir(1);
  for (const char* arch : {"gpt", "llama"}) {
    INFO(arch);
    const ModelConfig c = seq2seq_config(arch);
    const Run resident = train(c, nullptr);
    const offload::OffloadOptions host = placement(Tier::host, Tier::host, Tier::host, dir);
    const offload::OffloadOptions nvme = placement(Tier::nvme, Tier::nvme, Tier::nvme, dir);
    for (const auto* o : {&host, &nvme}) {
      INFO((o == &host ? "host" : "nvme"));
      const Run r = train(c, o);
      expect_bitwise("losses", r.losses, resident.losses);
      for (size_t u = 0; u < r.weights.size(); ++u)
        expect_bitwise("unit " + std::to_string(u) + " weights", r.weights[u], resident.weights[u]);
    }
    CHECK(resident.losses.back() < resident.losses.front());
  }
  CHECK(dir.file_count() == 0);
}

TEST_CASE("an encoder-decoder saved and resumed trains bitwise like the uninterrupted run", "[offload][train]") {
  ScratchDir dir(1);
  const ModelConfig c = seq2seq_config("gpt");
  const Run whole = train(c, nullptr);
  const std::string ckpt = dir.path() + "/ckpt";
  const Run first = train(c, nullptr, 0, 3, "", ckpt);
  const Run second = train(c, nullptr, 3, 6, ckpt, "");
  std::vector<float> losses = first.losses;
  losses.insert(losses.end(), second.losses.begin(), second.losses.end());
  expect_bitwise("losses", losses, whole.losses);
  for (size_t u = 0; u < whole.weights.size(); ++u)
    expect_bitwise("unit " + std::to_string(u) + " weights", second.weights[u], whole.weights[u]);
}
