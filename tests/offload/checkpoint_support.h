// Fixtures of the offload checkpoint and memory tests: a run's state as bit patterns,
// so resumed and uninterrupted runs are compared bit for bit (-0 vs +0 and NaN
// payloads too), whole files for byte-for-byte comparison, and a small training run
// (resident or offloaded) whose batches, dropout masks and rate depend on the step.
#pragma once
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "nvme_test_dirs.h"
#include "strata/checkpoint.h"
#include "strata/offload.h"
#include "strata/strata.h"
#include "../train/train_support.h"

namespace strata::test {

// Losses, then per unit the working params and master, m, v, as bit patterns.
struct State {
  std::vector<uint32_t> losses, params, optimizer;
};

inline void append_bits(std::vector<uint32_t>& out, const std::vector<float>& v) {
  const size_t at = out.size();
  out.resize(at + v.size());
  std::memcpy(out.data() + at, v.data(), v.size() * 4);
}

// Appends every unit's params and optimizer state (under ZeRO every rank calls it:
// the state is gathered).
inline void append_state(const Trainer& t, int units, State& st) {
  std::vector<float> master, m, v;
  for (int u = 0; u < units; ++u) {
    append_bits(st.params, t.unit_parameters(u));
    t.optimizer_state(u, master, m, v);
    for (const std::vector<float>* x : {&master, &m, &v}) append_bits(st.optimizer, *x);
  }
}

inline std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

using offload::Tier;

constexpr int kAccum = 2;
constexpr int64_t kB = 2, kT = 8;

// Dropout on, so a resume must restore the step its masks are keyed by.
inline ModelConfig config(const char* arch) {
  ModelConfig c = tiny_config(arch);
  c.dropout_residual = 0.1f;
  return c;
}

inline TrainOptions options() {
  TrainOptions o;
  o.grad_accum = kAccum;
  o.adamw.lr = 1e-2f;
  o.clip_norm = 0.5f;
  o.schedule.kind = ScheduleKind::cosine;
  o.schedule.warmup_steps = 2;  // the rate depends on the step too
  o.schedule.total_steps = 8;
  return o;
}

// A model and its Trainer, resident when `off` is null.
struct Run {
  Model model;
  std::unique_ptr<Trainer> trainer;
  Run(const ModelConfig& c, Precision p, const offload::OffloadOptions* off) : model(c, cpu(), p, 5) {
    trainer = off ? std::make_unique<Trainer>(model, options(), *off) : std::make_unique<Trainer>(model, options());
  }
  // Steps [first, last): the batches depend on the step, as a data loader's would.
  void train(int first, int last, State& st) {
    for (int s = first; s < last; ++s) {
      RandomBatch b0(kB, kT, model.config().vocab_size, 1000 + uint64_t(s) * 10),
          b1(kB, kT, model.config().vocab_size, 1001 + uint64_t(s) * 10);
      append_bits(st.losses, {trainer->train_step({b0.batch(), b1.batch()}).loss});
    }
  }
  void finish(State& st) { append_state(*trainer, model.num_units(), st); }
};

// Trains [0, first) from scratch and saves to `save`, or loads `load` and trains
// [step, last); `off` null is the resident Trainer.
inline State span(const ModelConfig& c, Precision p, const offload::OffloadOptions* off, const std::string& load,
                  int first, int last, const std::string& save = "") {
  Run r(c, p, off);
  State st;
  if (!load.empty()) {
    const CheckpointInfo info = load_checkpoint(load, r.model, r.trainer.get());
    REQUIRE(info.trainer.step == first);
  }
  r.train(first, last, st);
  if (!save.empty()) save_checkpoint(save, r.model, r.trainer.get());
  r.finish(st);
  return st;
}

// The offloaded placements the resume tests walk: each tier for each kind of state.
inline const std::tuple<Tier, Tier, Tier> kPlacements[] = {
    {Tier::host, Tier::host, Tier::host},   {Tier::nvme, Tier::nvme, Tier::nvme},
    {Tier::device, Tier::nvme, Tier::host}, {Tier::nvme, Tier::host, Tier::device},
    {Tier::host, Tier::device, Tier::nvme},
};

}  // namespace strata::test
