// Read-ahead of working params from NVMe holds only what the pass is about to use:
// with a pinned pool far larger than the model, the pool's high-water stays within
// `prefetch` units read ahead, the unit being copied in and the embedding the tied
// head borrows, whatever mix of training steps, evaluation passes and single-unit
// reads runs, with and without a LoRA-frozen base. (A forward used to read backward
// from the head as if a backward followed, and held those units through the next
// evaluation pass: 2 * prefetch + 1 units.)
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>

#include "nvme_test_dirs.h"
#include "strata/offload.h"
#include "strata/strata.h"
#include "../train/train_support.h"

using namespace strata;
using namespace strata::test;
using offload::Tier;

namespace {

ModelConfig deep_config() {
  ModelConfig c = tiny_config("gpt");  // tied embeddings: the head borrows unit 0
  c.n_layers = 10;
  c.d_model = 32;
  c.d_mlp = 128;
  c.n_heads = 2;
  c.vocab_size = 64;
  return c;
}

size_t staged_bytes(const Model& m, int u) {
  const size_t b = size_t(m.unit_numel(u)) * 2;  // bf16
  return (b + offload::kBlockBytes - 1) / offload::kBlockBytes * offload::kBlockBytes;
}

// Pinned high-water over a finetune_lora-like run, in units of the largest unit's
// staging (rounded to 4 KiB, as the pool hands it out), less the optimizer's three
// pinned tiles when the base trains (they hold the working params it writes back) and
// the embedding's staging (read when the head borrows it).
double pinned_units(bool lora_base, int prefetch, const ScratchDir& dir) {
  const ModelConfig c = deep_config();
  Model m(c, cpu(), Precision::bf16, 5);
  std::unique_ptr<Lora> lora;
  if (lora_base) lora = std::make_unique<Lora>(m, LoraOptions{});
  size_t largest = 0;
  for (int u = 0; u < m.num_units(); ++u) largest = std::max(largest, staged_bytes(m, u));
  offload::OffloadOptions o;
  o.params = Tier::nvme;
  o.grads = o.optimizer = Tier::host;  // only the params' read-ahead stages through the pool
  o.nvme_paths = dir.paths();
  o.pinned_bytes = size_t(64) << 20;  // finetune_lora's default: room for the whole base many times
  o.prefetch = prefetch;
  o.tile_elements = 2048;
  o.require_direct = accepts_direct_io(dir.paths()[0]);
  TrainOptions to;
  to.adamw.lr = 1e-2f;
  Trainer t(m, to, o);
  RandomBatch b(2, 8, c.vocab_size, 1000), v(2, 8, c.vocab_size, 2000);
  size_t high = 0;
  for (int s = 0; s < 3; ++s) {
    t.evaluate(v.batch());
    high = std::max(high, t.train_step({b.batch()}).pinned_bytes);
    t.evaluate(v.batch());
  }
  t.unit_parameters(m.num_units() / 2);  // an out-of-pass read
  high = std::max(high, t.train_step({b.batch()}).pinned_bytes);
  const size_t other = (lora_base ? 0 : 3 * 2048 * 2) + staged_bytes(m, 0);
  return double(high - std::min(high, other)) / double(largest);
}

}  // namespace

TEST_CASE("read-ahead from NVMe holds at most prefetch units beyond the one being copied in", "[offload][train]") {
  ScratchDir dir(1);
  for (bool lora : {false, true})
    for (int prefetch : {0, 1, 2}) {
      const double units = pinned_units(lora, prefetch, dir);
      INFO((lora ? "LoRA-frozen base" : "full training") << ", prefetch " << prefetch << ": high-water " << units
                                                          << " units");
      CHECK(units <= prefetch + 1);
    }
}
