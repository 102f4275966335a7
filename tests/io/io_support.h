// Fixtures of the checkpoint tests: a token shard of random tokens, a training
// setup (model, trainer, loader) built from one description, and bitwise snapshots
// of everything a resumed run must reproduce.
#pragma once
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/philox.h"
#include "data/temp_dir.h"
#include "strata/strata.h"
#include "support/host_tensor.h"
#include "train/train_support.h"

namespace strata::test {

inline std::string random_shard(const TempDir& dir, int64_t tokens, int64_t vocab, uint64_t seed) {
  std::vector<uint16_t> t(static_cast<size_t>(tokens));
  num::RandomKey key{seed, 3, 4};
  for (size_t i = 0; i < t.size(); ++i) t[i] = uint16_t(num::philox_word(key, i) % uint64_t(vocab));
  const std::string path = dir.file("train.bin");
  write_token_shard(path, t);
  return path;
}

struct Run {
  ModelConfig config;
  TrainOptions options;
  Model model;
  Trainer trainer;
  BatchLoader loader;

  Run(const ModelConfig& c, Precision p, const TrainOptions& o, const std::string& shard, uint64_t init_seed)
      : config(c), options(o), model(c, cpu(), p, init_seed), trainer(model, o), loader(TokenDataset(shard), loader_options()) {}

  static LoaderOptions loader_options() {
    LoaderOptions lo;
    lo.batch_size = 2;
    lo.seq_len = 8;
    lo.seed = 77;
    return lo;
  }

  StepReport step() {
    std::vector<TokenBatch> micro;
    std::vector<Batch> views;
    for (int64_t k = 0; k < options.grad_accum; ++k) micro.push_back(loader.next());
    for (auto& b : micro) views.push_back(b.batch());
    return trainer.train_step(views);
  }
};

// Working params, master, m and v of every unit, as raw bytes.
inline std::vector<char> snapshot(const Run& r) {
  std::vector<char> out;
  auto add = [&](const TensorView& t) {
    const char* p = static_cast<const char*>(t.data);
    out.insert(out.end(), p, p + t.nbytes());
  };
  for (int u = 0; u < r.model.num_units(); ++u) {
    add(r.model.unit_params(u));
    add(r.trainer.optimizer().master(u));
    add(r.trainer.optimizer().exp_avg(u));
    add(r.trainer.optimizer().exp_avg_sq(u));
  }
  return out;
}

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

}  // namespace strata::test
