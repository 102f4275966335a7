// ZeRO-2 on an encoder-decoder with side inputs: two ranks, each with its own replica
// and its rows of the global batch (source included), train bit for bit like one
// device accumulating the two ranks' micro-batches in rank order (no clipping, so the
// sharded gradient norm cannot enter the update; tests/dist/test_zero.cpp).
#include <catch2/catch.hpp>

#include "../train/seq2seq_support.h"
#include "strata/dist.h"
#include "strata/strata.h"

using namespace strata;
using namespace strata::test;

namespace {

constexpr int kSteps = 3, kRanks = 2;
constexpr int64_t kRows = 2, kT = 8;

TrainOptions options(int stage, int accum) {
  TrainOptions o;
  o.grad_accum = accum;
  o.adamw.lr = 1e-2f;
  o.clip_norm = 0.0f;
  o.zero_stage = stage;
  return o;
}

Seq2SeqBatch global_batch(int step, int64_t vocab) { return Seq2SeqBatch(kRanks * kRows, kT, vocab, 500 + uint64_t(step)); }

struct Result {
  std::vector<float> losses;
  std::vector<std::vector<float>> weights;
};

}  // namespace

TEST_CASE("ZeRO-2 on two ranks trains an encoder-decoder bitwise like one device", "[dist][cpu]") {
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    INFO(precision_name(p));
    const ModelConfig c = seq2seq_config("gpt");
    Result single;
    {
      Model m(c, seq2seq_units(c), cpu(), p, 5);
      Trainer t(m, options(0, kRanks));
      for (int s = 0; s < kSteps; ++s) {
        std::vector<Seq2SeqBatch> rows;
        for (int r = 0; r < kRanks; ++r) rows.push_back(global_batch(s, c.vocab_size).rows(r * kRows, (r + 1) * kRows));
        std::vector<Batch> views;
        for (Seq2SeqBatch& b : rows) views.push_back(b.batch());
        single.losses.push_back(t.train_step(views).loss);
      }
      for (int u = 0; u < m.num_units(); ++u) single.weights.push_back(t.unit_parameters(u));
    }
    std::vector<Result> ranks(kRanks);
    dist::run_ranks(kRanks, [&](int rank, dist::Comm& comm) {
      auto device = Device::cpu(rank);
      Model m(c, seq2seq_units(c), *device, p, 5);
      Trainer t(m, options(2, 1), comm);
      Result& r = ranks[size_t(rank)];
      for (int s = 0; s < kSteps; ++s) {
        Seq2SeqBatch mine = global_batch(s, c.vocab_size).rows(rank * kRows, (rank + 1) * kRows);
        r.losses.push_back(t.train_step({mine.batch(device.get())}).loss);
      }
      for (int u = 0; u < m.num_units(); ++u) r.weights.push_back(t.unit_parameters(u));
    });
    for (size_t u = 0; u < single.weights.size(); ++u)
      for (int rank = 0; rank < kRanks; ++rank)
        expect_bitwise("rank " + std::to_string(rank) + " unit " + std::to_string(u) + " weights",
                       ranks[size_t(rank)].weights[u], single.weights[u]);
  }
}
