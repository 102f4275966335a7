// The models of two examples get every engine feature without their units knowing:
// examples/classify's encoder with a classifier head (built-in blocks, causal = false,
// strata/unit.h make_classifier_units) and examples/custom_attention's model (the
// program's own ParallelBlock, included from the example itself). For each: recompute
// (where the unit supports it), a host and an NVMe placement, ZeRO-2 on 2 ranks and
// save/resume are bit for bit the resident single-device run.
#include <catch2/catch.hpp>

#include <filesystem>

// The example's units and task, without its main (it stays one file, as examples are).
#define main custom_attention_main
#include "../../examples/custom_attention.cpp"
#undef main

#include "../train/train_support.h"
#include "nvme_test_dirs.h"
#include "strata/checkpoint.h"
#include "strata/dist.h"
#include "strata/strata.h"

using namespace strata;
using namespace strata::test;
using offload::Tier;

namespace {

enum class Example { classify, custom_attention };
const char* example_name(Example e) { return e == Example::classify ? "classify" : "custom_attention"; }

constexpr int64_t kClasses = 2, kT = 8, kRows = 2;  // rows per micro-batch (per rank under ZeRO)

// Dropout in the classifier: its masks are keyed by the step and micro-batch, so
// recompute and resume must replay them (under ZeRO a rank's micro-batch 0 draws other
// masks than one device's micro-batch r, so the ZeRO case runs without).
ModelConfig config_of(Example e, bool dropout = true) {
  ModelConfig c = tiny_config("gpt");
  if (e == Example::classify) {
    c.causal = false;
    c.tied_embeddings = false;
    c.dropout_residual = dropout ? 0.1f : 0.0f;
  } else {
    c.vocab_size = 10;
  }
  return c;
}

std::vector<std::unique_ptr<Unit>> units_of(Example e, const ModelConfig& c) {
  if (e == Example::classify) return make_classifier_units(c, kClasses);
  std::vector<std::unique_ptr<Unit>> units;
  units.push_back(make_embedding_unit(c));
  for (int l = 0; l < int(c.n_layers); ++l) units.push_back(std::make_unique<ParallelBlock>(c, l));
  units.push_back(make_head_unit(c));
  return units;
}

// Rows of step s, micro-batch k: next-token targets (custom_attention) or one label per
// row at position 0 (classify).
RandomBatch rows_of(Example e, const ModelConfig& c, int step, int micro, int64_t rows) {
  RandomBatch b(rows, kT, c.vocab_size, 500 + uint64_t(step) * 10 + uint64_t(micro));
  if (e == Example::classify) {
    std::fill(b.targets.begin(), b.targets.end(), -100);
    for (int64_t r = 0; r < rows; ++r) b.targets[size_t(r * kT)] = b.stream[size_t(r)] % int32_t(kClasses);
  }
  return b;
}

Batch on(RandomBatch& b, Device* device) {
  return Batch{TensorView(b.inputs.data(), DType::i32, {b.B, b.T}, device),
               TensorView(b.targets.data(), DType::i32, {b.B, b.T}, device)};
}

TrainOptions options(int accum) {
  TrainOptions o;
  o.grad_accum = accum;
  o.adamw.lr = 1e-2f;
  o.clip_norm = 0.0f;  // ZeRO's sharded norm is within an ulp; unclipped steps stay bitwise
  return o;
}

struct Outcome {
  std::vector<float> losses;
  std::vector<std::vector<float>> weights;
};

struct Setup {
  bool dropout = true;
  const offload::OffloadOptions* offload = nullptr;
  Recompute recompute = Recompute::none;
  int accum = 1;  // micro-batches of kRows rows per step
  std::string load, save;
};

// Steps [first, last) on one device.
Outcome run(Example e, const Setup& s, int first, int last) {
  const ModelConfig c = config_of(e, s.dropout);
  Model m(c, units_of(e, c), cpu(), Precision::bf16, 5);
  m.set_recompute(s.recompute == Recompute::full ? RecomputePolicy::every_block(c.n_layers)
                  : s.recompute == Recompute::selective ? RecomputePolicy::selective(c.n_layers)
                                                        : RecomputePolicy::none(c.n_layers));
  std::unique_ptr<Trainer> t = s.offload ? std::make_unique<Trainer>(m, options(s.accum), *s.offload)
                                         : std::make_unique<Trainer>(m, options(s.accum));
  if (!s.load.empty()) REQUIRE(load_checkpoint(s.load, m, t.get()).trainer.step == first);
  Outcome o;
  for (int step = first; step < last; ++step) {
    std::vector<RandomBatch> micro;
    for (int k = 0; k < s.accum; ++k) micro.push_back(rows_of(e, c, step, k, kRows));
    std::vector<Batch> views;
    for (RandomBatch& b : micro) views.push_back(on(b, &cpu()));
    o.losses.push_back(t->train_step(views).loss);
  }
  if (!s.save.empty()) save_checkpoint(s.save, m, t.get());
  for (int u = 0; u < m.num_units(); ++u) o.weights.push_back(t->unit_parameters(u));
  return o;
}

// ZeRO `stage` on N ranks, one micro-batch each: rank r's is the single device's micro r.
Outcome run_ranks(Example e, int N, int stage, int steps) {
  const ModelConfig c = config_of(e, false);
  std::vector<Outcome> per_rank(static_cast<size_t>(N));
  dist::run_ranks(N, [&](int rank, dist::Comm& comm) {
    auto device = Device::cpu(rank);
    Model m(c, units_of(e, c), *device, Precision::bf16, 5);
    TrainOptions o = options(1);
    o.zero_stage = stage;
    Trainer t(m, o, comm);
    Outcome& r = per_rank[size_t(rank)];
    for (int step = 0; step < steps; ++step) {
      RandomBatch b = rows_of(e, c, step, rank, kRows);
      r.losses.push_back(t.train_step({on(b, device.get())}).loss);
    }
    for (int u = 0; u < m.num_units(); ++u) r.weights.push_back(t.unit_parameters(u));
  });
  return per_rank[0];
}

void expect_same(const Outcome& a, const Outcome& ref) {
  expect_bitwise("losses", a.losses, ref.losses);
  REQUIRE(a.weights.size() == ref.weights.size());
  for (size_t u = 0; u < a.weights.size(); ++u)
    expect_bitwise("unit " + std::to_string(u) + " weights", a.weights[u], ref.weights[u]);
}

}  // namespace

TEST_CASE("custom_attention's block passes the public gradient check", "[offload][cpu]") {
  const ModelConfig c = config_of(Example::custom_attention);
  ParallelBlock block(c, 0);
  const UnitGradCheckReport report = check_unit_gradients(block, c, cpu());
  INFO(report.str());
  CHECK(report.ok());
}

TEST_CASE("the classifier's recompute modes train bit for bit like keeping everything", "[offload][cpu]") {
  // ParallelBlock keeps every activation (it has no recompute mode), so only the
  // classifier's built-in blocks are compared here.
  const Outcome ref = run(Example::classify, {}, 0, 4);
  for (Recompute r : {Recompute::selective, Recompute::full}) {
    INFO(recompute_name(r));
    Setup s;
    s.recompute = r;
    expect_same(run(Example::classify, s, 0, 4), ref);
  }
}

TEST_CASE("the example models offloaded to host memory or NVMe train bit for bit like resident", "[offload][nvme]") {
  ScratchDir dir(1);
  for (Example e : {Example::classify, Example::custom_attention}) {
    INFO(example_name(e));
    const Outcome ref = run(e, {}, 0, 4);
    for (Tier tier : {Tier::host, Tier::nvme}) {
      INFO((tier == Tier::host ? "host" : "nvme"));
      const offload::OffloadOptions o = placement(tier, tier, tier, dir);
      Setup s;
      s.offload = &o;
      s.recompute = e == Example::classify ? Recompute::full : Recompute::none;
      expect_same(run(e, s, 0, 4), ref);
    }
  }
  CHECK(dir.file_count() == 0);
}

TEST_CASE("the example models under ZeRO-2 on 2 ranks are bit for bit one device", "[offload][dist][cpu]") {
  for (Example e : {Example::classify, Example::custom_attention}) {
    INFO(example_name(e));
    Setup single;
    single.accum = 2;  // micro-batch k is rank k's
    single.dropout = false;
    expect_same(run_ranks(e, 2, 2, 3), run(e, single, 0, 3));
  }
}

TEST_CASE("the example models resume from a checkpoint bit for bit", "[offload][cpu]") {
  ScratchDir dir(1);
  for (Example e : {Example::classify, Example::custom_attention}) {
    INFO(example_name(e));
    const std::string ckpt = dir.path() + "/" + example_name(e);
    const Outcome whole = run(e, {}, 0, 4);
    Setup first, second;
    first.save = ckpt;
    second.load = ckpt;
    const Outcome a = run(e, first, 0, 2), b = run(e, second, 2, 4);
    std::vector<float> losses = a.losses;
    losses.insert(losses.end(), b.losses.begin(), b.losses.end());
    expect_same({losses, b.weights}, whole);
  }
}
