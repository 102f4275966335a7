// Training throughput on a GPU (`strata-bench --device cuda:N train`, `make bench`
// when a GPU is present): gpt2-small (124M) and gpt2-medium (350M) in bf16, with
// every state on the device, with everything in pinned host RAM, and with the AdamW
// state alone on the host at 4 micro-batches a step (64k tokens for gpt2-small: the
// ZeRO-Offload case); tokens/s, MFU against the bf16 dense peak of the GPU
// (lib/train/plan.cpp's table, matched on the CUDA product name) and, offloaded, the
// overlap fraction (StepReport: the share of transfer time compute did not wait for).
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
  double step_seconds = 0, mfu = 0, overlap = 0;
};

enum class State { device, host, optimizer_host };
const char* state_name(State s) {
  return s == State::device ? "device" : s == State::host ? "offload (host)" : "optimizer on host, 4 micro";
}

// Median step over `steps` steps after `warmup`, with the state placed per `state`.
Result measure(Device& device, const Run& run, State state, double peak, int warmup, int steps) {
  const bool offload = state != State::device;
  const ModelConfig c = ModelConfig::preset(run.preset);
  Model model(c, device, Precision::bf16, 1);
  TrainOptions o;
  o.adamw.weight_decay = 0.1f;
  o.schedule.kind = ScheduleKind::constant;
  o.peak_flops = peak;
  if (state == State::optimizer_host) o.grad_accum = 4;
  std::unique_ptr<Trainer> trainer;
  if (offload) {
    offload::OffloadOptions off;  // params, grads and optimizer: host tier
    off.pinned_bytes = size_t(1) << 30;
    if (state == State::optimizer_host) off.params = off.grads = offload::Tier::device;
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
    const std::vector<Batch> micro(size_t(o.grad_accum), batch);
    const StepReport r = trainer->train_step(micro);  // returns the loss: the step is done
    if (s >= warmup) results.push_back({r.step_seconds, r.mfu, r.overlap_fraction});
  }
  std::sort(results.begin(), results.end(),
            [](const Result& a, const Result& b) { return a.step_seconds < b.step_seconds; });
  return results[results.size() / 2];
}

void bench_train_cuda() {
  std::unique_ptr<Device> device = Device::cuda(cuda_index());  // "no CUDA device: ..." without one
  const std::string product = cuda_runtime::product_name(cuda_index());
  const double peak = peak_flops(*device, Precision::bf16);
  Table t({"model", "state", "tokens/step", "step", "tokens/s", "MFU", "overlap"});
  for (const Run& run : {Run{"gpt2-small", 16, 1024}, Run{"gpt2-medium", 8, 1024}}) {
    for (State state : {State::device, State::host, State::optimizer_host}) {
      const int64_t tokens = run.batch * run.seq * (state == State::optimizer_host ? 4 : 1);
      Result r;
      try {
        // Offloaded steps are slower: fewer of them, so the kit's training stage fits its budget.
        r = state == State::device ? measure(*device, run, state, peak, 3, 10) : measure(*device, run, state, peak, 2, 5);
      } catch (const Error& e) {  // e.g. a placement this build cannot run on a GPU yet: say so, go on
        t.row({run.preset, state_name(state), "-", "-", "-", "-", std::string("failed: ") + e.what()});
        continue;
      }
      const double tokens_per_s = double(tokens) / r.step_seconds;
      char mfu[32], overlap[32];
      std::snprintf(mfu, sizeof mfu, "%.1f%%", 100.0 * r.mfu);
      std::snprintf(overlap, sizeof overlap, "%.1f%%", 100.0 * r.overlap);
      t.row({run.preset, state_name(state), std::to_string(tokens), format_seconds(r.step_seconds),
             std::to_string(int64_t(tokens_per_s)), peak > 0 ? mfu : "unknown",
             state == State::device ? "-" : overlap});
      static const char* keys[] = {"device", "offload", "optimizer_host"};
      std::printf("RESULT cuda_%s_%s_tokens_per_s %.1f\n", run.preset, keys[int(state)], tokens_per_s);
    }
  }
  char title[256];
  if (peak > 0)
    std::snprintf(title, sizeof title, "bf16 training on cuda:%d, %s (bf16 dense peak %.0f TFLOP/s), median of 10 steps (offloaded: of 5)",
                  cuda_index(), product.c_str(), peak / 1e12);
  else
    std::snprintf(title, sizeof title,
                  "bf16 training on cuda:%d, %s: not in the peak table, MFU unknown; median of 10 steps (offloaded: of 5)",
                  cuda_index(), product.c_str());
  t.print(title);
}

}  // namespace

STRATA_BENCH_CUDA("train", bench_train_cuda);

}  // namespace strata::bench
