// Training throughput of gpt-mini (4 layers, width 256, 4 heads, sequence 256,
// micro-batch 8, vocab 256, GPT-2 architecture, tied head), the config the PyTorch
// peer (tools/bench/peer/torch_gpt.py) trains: tokens/s per precision, and step time
// per recompute policy. tools/bench/compare-train.sh runs both and prints ratios.
// Each result is also printed as a "RESULT key value" line for that script.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "bench.h"
#include "common/philox.h"
#include "strata/strata.h"

namespace strata::bench {

namespace {

constexpr int64_t kB = 8, kT = 256;

// Median seconds per optimizer step over `steps` steps after `warmup`.
double median_step_seconds(Precision precision, const RecomputePolicy& policy, int warmup, int steps) {
  ModelConfig c = ModelConfig::preset("gpt-mini");
  Model model(c, bench_device(), precision, 1);
  model.set_recompute(policy);
  TrainOptions o;
  o.adamw.lr = 3e-4f;
  o.adamw.beta2 = 0.95f;
  o.adamw.weight_decay = 0.1f;
  o.schedule.kind = ScheduleKind::constant;
  Trainer trainer(model, o);
  // One fixed random batch, as the peer does: throughput does not depend on the data.
  std::vector<int32_t> inputs(size_t(kB * kT)), targets(size_t(kB * kT));
  num::RandomKey key{7, 0, 0};
  for (size_t i = 0; i < inputs.size(); ++i) {
    inputs[i] = int32_t(num::philox_word(key, 2 * i) % 256);
    targets[i] = int32_t(num::philox_word(key, 2 * i + 1) % 256);
  }
  Batch batch{TensorView(inputs.data(), DType::i32, {kB, kT}), TensorView(targets.data(), DType::i32, {kB, kT})};
  std::vector<double> times;
  for (int s = 0; s < warmup + steps; ++s) {
    auto t0 = std::chrono::steady_clock::now();
    trainer.train_step({batch});
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s >= warmup) times.push_back(dt);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

void bench_train() {
  set_num_threads(2);
  Table t({"precision", "step", "tokens/s"});
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    const double s = median_step_seconds(p, RecomputePolicy::none(4), 3, 10);
    t.row({precision_name(p), format_seconds(s), std::to_string(int64_t(double(kB * kT) / s))});
    std::printf("RESULT train_%s_tokens_per_s %.1f\n", precision_name(p), double(kB * kT) / s);
  }
  t.print("gpt-mini training, B 8 x T 256, 2 threads (median of 10 steps after 3 warm-up)");
  set_num_threads(0);
}

void bench_recompute() {
  set_num_threads(2);
  Table t({"recompute", "fp32 step", "vs none", "bf16 step", "vs none"});
  double base[2] = {0, 0};
  for (const char* spec : {"none", "selective", "every-2", "full"}) {
    std::vector<std::string> row{spec};
    int i = 0;
    for (Precision p : {Precision::fp32, Precision::bf16}) {
      const double s = median_step_seconds(p, RecomputePolicy::parse(spec, 4), 2, 8);
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
