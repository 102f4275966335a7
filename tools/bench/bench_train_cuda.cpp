// Training throughput on a GPU (`strata-bench --device cuda:N train`, `make bench`
// when a GPU is present): gpt2-small (124M) and gpt2-medium (350M) in bf16, with
// every state on the device and with ZeRO-Offload (parameters, gradients and AdamW
// state in pinned host RAM), tokens/s and MFU against the bf16 dense peak of the GPU
// (lib/train/plan.cpp's table, matched on the CUDA product name).
// Invariant: MFU is printed only for a GPU the table knows; otherwise it says so
// and still prints tokens/s. A configuration that fails (out of memory, a placement
// not supported on CUDA yet) is reported in its row; the others still run. A missing GPU is an error ("no CUDA device: ...") from
// Device::cuda, raised before anything runs; the CPU benchmarks never come here.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bench.h"
#include "common/philox.h"
#include "cuda/runtime.h"
#include "strata/offload.h"
#include "strata/plan.h"
#include "strata/strata.h"

namespace strata::bench {

namespace {

struct Run {
  const char* preset;
  int64_t batch, seq;
};

struct Result {
  double step_seconds = 0, mfu = 0;
};

// Median step over `steps` steps after `warmup`, every state on the device or (when
// `offload`) on pinned host memory.
Result measure(Device& device, const Run& run, bool offload, double peak, int warmup, int steps) {
  const ModelConfig c = ModelConfig::preset(run.preset);
  Model model(c, device, Precision::bf16, 1);
  TrainOptions o;
  o.adamw.weight_decay = 0.1f;
  o.schedule.kind = ScheduleKind::constant;
  o.peak_flops = peak;
  std::unique_ptr<Trainer> trainer;
  if (offload) {
    offload::OffloadOptions off;  // params, grads and optimizer: host tier
    off.pinned_bytes = size_t(1) << 30;
    trainer = std::make_unique<Trainer>(model, o, off);
  } else {
    trainer = std::make_unique<Trainer>(model, o);
  }
  // One fixed random batch: throughput does not depend on the data.
  const int64_t n = run.batch * run.seq;
  std::vector<int32_t> inputs(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
  const num::RandomKey key{7, 0, 0};
  for (size_t i = 0; i < inputs.size(); ++i) {
    inputs[i] = int32_t(num::philox_word(key, 2 * i) % uint32_t(c.vocab_size));
    targets[i] = int32_t(num::philox_word(key, 2 * i + 1) % uint32_t(c.vocab_size));
  }
  const Batch batch{TensorView(inputs.data(), DType::i32, {run.batch, run.seq}),
                    TensorView(targets.data(), DType::i32, {run.batch, run.seq})};
  std::vector<Result> results;
  for (int s = 0; s < warmup + steps; ++s) {
    const StepReport r = trainer->train_step({batch});  // returns the loss: the step is done
    if (s >= warmup) results.push_back({r.step_seconds, r.mfu});
  }
  std::sort(results.begin(), results.end(),
            [](const Result& a, const Result& b) { return a.step_seconds < b.step_seconds; });
  return results[results.size() / 2];
}

void bench_train_cuda() {
  std::unique_ptr<Device> device = Device::cuda(cuda_index());  // "no CUDA device: ..." without one
  const std::string product = cuda_runtime::product_name(cuda_index());
  const double peak = peak_flops(*device, Precision::bf16);
  Table t({"model", "state", "B x T", "step", "tokens/s", "MFU"});
  for (const Run& run : {Run{"gpt2-small", 16, 1024}, Run{"gpt2-medium", 8, 1024}}) {
    for (bool offload : {false, true}) {
      Result r;
      try {
        r = measure(*device, run, offload, peak, 3, 10);
      } catch (const Error& e) {  // e.g. a placement this build cannot run on a GPU yet: say so, go on
        t.row({run.preset, offload ? "offload (host)" : "device", "-", "-", "-", std::string("failed: ") + e.what()});
        continue;
      }
      const double tokens_per_s = double(run.batch * run.seq) / r.step_seconds;
      char mfu[32];
      std::snprintf(mfu, sizeof mfu, "%.1f%%", 100.0 * r.mfu);
      t.row({run.preset, offload ? "offload (host)" : "device",
             std::to_string(run.batch) + " x " + std::to_string(run.seq), format_seconds(r.step_seconds),
             std::to_string(int64_t(tokens_per_s)), peak > 0 ? mfu : "unknown"});
      std::printf("RESULT cuda_%s_%s_tokens_per_s %.1f\n", run.preset, offload ? "offload" : "device",
                  tokens_per_s);
    }
  }
  char title[256];
  if (peak > 0)
    std::snprintf(title, sizeof title, "bf16 training on cuda:%d, %s (bf16 dense peak %.0f TFLOP/s), median of 10 steps",
                  cuda_index(), product.c_str(), peak / 1e12);
  else
    std::snprintf(title, sizeof title,
                  "bf16 training on cuda:%d, %s: not in the peak table, MFU unknown; median of 10 steps",
                  cuda_index(), product.c_str());
  t.print(title);
}

}  // namespace

STRATA_BENCH_CUDA("train", bench_train_cuda);

}  // namespace strata::bench
