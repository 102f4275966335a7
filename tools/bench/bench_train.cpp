// Training throughput on the CPU at the shapes the PyTorch peer
// (tools/bench/peer/torch_gpt.py) also trains: tokens/s and MFU per precision, and
// where a step's time goes (GEMMs, attention, norms, activations, cross-entropy,
// AdamW, other ops, outside ops), from the per-category op timer
// (kernels/cpu/op_profile.h) over the same timed steps; and step time per recompute
// policy. tools/bench/compare-train.sh runs both sides and prints ratios.
//   STRATA_BENCH_TRAIN_MODELS  comma-separated: gpt-mini (B 8 x T 256, the default),
//                              gpt2-small, llama-60m (B 4 x T 256)
//   STRATA_BENCH_TRAIN_STEPS   timed steps (default 10 for gpt-mini, 4 otherwise)
// MFU is the StepReport's: model FLOPs against the FMA-loop peak of this run.
// Each result is also printed as a "RESULT key value" line for compare-train.sh.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "bench.h"
#include "common/philox.h"
#include "cpu/op_profile.h"
#include "strata/plan.h"
#include "strata/strata.h"

namespace strata::bench {

namespace {

struct Shape {
  std::string model;
  int64_t batch, seq;
};

Shape shape_of(const std::string& model) {
  STRATA_CHECK(model == "gpt-mini" || model == "gpt2-small" || model == "llama-60m",
               "STRATA_BENCH_TRAIN_MODELS: '" << model
                                              << "' has no peer shape; give gpt-mini, gpt2-small or llama-60m");
  return {model, model == "gpt-mini" ? 8 : 4, 256};
}

std::vector<Shape> shapes_from_env() {
  const char* env = std::getenv("STRATA_BENCH_TRAIN_MODELS");
  std::vector<Shape> shapes;
  std::stringstream in(env && *env ? env : "gpt-mini");
  for (std::string item; std::getline(in, item, ',');) shapes.push_back(shape_of(item));
  return shapes;
}

int steps_for(const Shape& s) {
  const char* env = std::getenv("STRATA_BENCH_TRAIN_STEPS");
  return env && *env ? std::max(1, std::atoi(env)) : s.model == "gpt-mini" ? 10 : 4;
}

struct Measured {
  double step_seconds = 0;  // median
  double mfu = 0;           // median step's
  std::array<double, size_t(cpu::OpCategory::count)> op_seconds{};  // per step, mean over timed steps
  double mean_step_seconds = 0;
};

Measured measure(const Shape& shape, Precision precision, const RecomputePolicy* policy, int warmup, int steps,
                 bool profile) {
  ModelConfig c = ModelConfig::preset(shape.model);
  c.max_seq = std::max(c.max_seq, shape.seq);
  Model model(c, bench_device(), precision, 1);
  if (policy) model.set_recompute(*policy);
  TrainOptions o;
  o.adamw.lr = 3e-4f;
  o.adamw.beta2 = 0.95f;
  o.adamw.weight_decay = 0.1f;
  o.schedule.kind = ScheduleKind::constant;
  o.peak_flops = peak_flops(bench_device(), precision);
  Trainer trainer(model, o);
  // One fixed random batch, as the peer does: throughput does not depend on the data.
  const size_t n = size_t(shape.batch * shape.seq);
  std::vector<int32_t> inputs(n), targets(n);
  num::RandomKey key{7, 0, 0};
  for (size_t i = 0; i < n; ++i) {
    inputs[i] = int32_t(num::philox_word(key, 2 * i) % uint32_t(c.vocab_size));
    targets[i] = int32_t(num::philox_word(key, 2 * i + 1) % uint32_t(c.vocab_size));
  }
  Batch batch{TensorView(inputs.data(), DType::i32, {shape.batch, shape.seq}),
              TensorView(targets.data(), DType::i32, {shape.batch, shape.seq})};
  std::vector<std::pair<double, double>> runs;  // (seconds, mfu)
  Measured m;
  for (int s = 0; s < warmup + steps; ++s) {
    if (s == warmup && profile) {
      cpu::op_profile_reset();
      cpu::op_profile_enable(true);
    }
    const StepReport r = trainer.train_step({batch});
    if (s >= warmup) {
      runs.push_back({r.step_seconds, r.mfu});
      m.mean_step_seconds += r.step_seconds / steps;
    }
  }
  if (profile) {
    cpu::op_profile_enable(false);
    m.op_seconds = cpu::op_profile_seconds();
    for (double& t : m.op_seconds) t /= steps;
  }
  std::sort(runs.begin(), runs.end());
  m.step_seconds = runs[runs.size() / 2].first;
  m.mfu = runs[runs.size() / 2].second;
  return m;
}

void print_breakdown(const Shape& shape, Precision p, const Measured& m) {
  Table t({"category", "time/step", "% of step"});
  double in_ops = 0;
  for (size_t i = 0; i < m.op_seconds.size(); ++i) {
    in_ops += m.op_seconds[i];
    t.row({cpu::op_category_name(cpu::OpCategory(i)), format_seconds(m.op_seconds[i]),
           format_fixed(100 * m.op_seconds[i] / m.mean_step_seconds, 1) + "%"});
  }
  const double outside = std::max(0.0, m.mean_step_seconds - in_ops);
  t.row({"outside ops", format_seconds(outside), format_fixed(100 * outside / m.mean_step_seconds, 1) + "%"});
  t.row({"step (mean)", format_seconds(m.mean_step_seconds), "100.0%"});
  t.print("where a " + shape.model + " " + precision_name(p) + " step's time goes (op entry timers, mean of the timed steps)");
}

void bench_train() {
  set_num_threads(2);
  for (const Shape& shape : shapes_from_env()) {
    const int steps = steps_for(shape), warmup = shape.model == "gpt-mini" ? 3 : 1;
    Table t({"precision", "step", "tokens/s", "MFU", "FMA peak"});
    std::vector<std::pair<Precision, Measured>> results;
    for (Precision p : {Precision::fp32, Precision::bf16}) {
      const Measured m = measure(shape, p, nullptr, warmup, steps, true);
      const double tokens_per_s = double(shape.batch * shape.seq) / m.step_seconds;
      t.row({precision_name(p), format_seconds(m.step_seconds), std::to_string(int64_t(tokens_per_s)),
             format_fixed(100 * m.mfu, 1) + "%", format_fixed(peak_flops(bench_device(), p) / 1e9, 1) + " GFLOP/s"});
      std::printf("RESULT train_%s_%s_tokens_per_s %.1f\nRESULT train_%s_%s_mfu %.4f\n", shape.model.c_str(),
                  precision_name(p), tokens_per_s, shape.model.c_str(), precision_name(p), m.mfu);
      results.push_back({p, m});
    }
    char title[256];
    std::snprintf(title, sizeof title, "%s training, B %lld x T %lld, 2 threads (median of %d steps after %d warm-up)",
                  shape.model.c_str(), (long long)shape.batch, (long long)shape.seq, steps, warmup);
    t.print(title);
    for (const auto& [p, m] : results) print_breakdown(shape, p, m);
  }
  set_num_threads(0);
}

void bench_recompute() {
  set_num_threads(2);
  const Shape shape = shape_of("gpt-mini");
  Table t({"recompute", "fp32 step", "vs none", "bf16 step", "vs none"});
  double base[2] = {0, 0};
  for (const char* spec : {"none", "selective", "every-2", "full"}) {
    std::vector<std::string> row{spec};
    int i = 0;
    for (Precision p : {Precision::fp32, Precision::bf16}) {
      const RecomputePolicy policy = RecomputePolicy::parse(spec, 4);
      const double s = measure(shape, p, &policy, 2, 8, false).step_seconds;
      if (std::string(spec) == "none") base[i] = s;
      row.push_back(format_seconds(s));
      row.push_back(format_ratio(s / base[i]));
      ++i;
    }
    t.row(row);
  }
  t.print("gpt-mini step time by recompute policy, B 8 x T 256, 2 threads");
  set_num_threads(0);
}

}  // namespace

STRATA_BENCH("train", bench_train);
STRATA_BENCH("recompute", bench_recompute);

}  // namespace strata::bench
