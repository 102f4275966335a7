// ZeRO on CPU devices (ranks are threads): bytes each rank's communicator moved in
// one optimizer step per stage against ZeRO's theory (2Ψ for stages 0-2, 3Ψ for
// stage 3, Ψ = parameter elements; strata reduces gradients in f32 and gathers
// parameters in the working dtype) with the step time and the time rank 0 was blocked
// on collectives (what overlap did not hide, plus waiting for the slower rank), and
// gpt-mini tokens/s from 1 to 2 CPU devices.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "bench.h"
#include "common/philox.h"
#include "strata/dist.h"
#include "strata/strata.h"

namespace strata::bench {

namespace {

constexpr int64_t kB = 8, kT = 256;

std::vector<int32_t> random_tokens(uint64_t seed, size_t n) {
  std::vector<int32_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = int32_t(num::philox_word(num::RandomKey{seed, 0, 0}, i) % 256);
  return v;
}

struct RankRun {
  double seconds = 0;
  uint64_t bytes = 0;
  double comm_wait = 0;  // median seconds rank 0 was blocked on collectives per step
};

// `steps` timed steps of gpt-mini (bf16) on N ranks at ZeRO `stage`; returns rank 0's
// median step time, its median time blocked on collectives and the bytes it sent in
// the last step.
RankRun run(int N, int stage, int steps) {
  std::vector<RankRun> out(static_cast<size_t>(N));
  dist::run_ranks(N, [&](int rank, dist::Comm& comm) {
    auto device = Device::cpu(rank);
    Model model(ModelConfig::preset("gpt-mini"), *device, Precision::bf16, 1);
    TrainOptions o;
    o.zero_stage = stage;
    Trainer trainer(model, o, comm);
    std::vector<int32_t> in = random_tokens(10 + uint64_t(rank), kB * kT), tg = random_tokens(20 + uint64_t(rank), kB * kT);
    Batch b{TensorView(in.data(), DType::i32, {kB, kT}, device.get()),
            TensorView(tg.data(), DType::i32, {kB, kT}, device.get())};
    std::vector<double> times, waits;
    for (int s = 0; s < steps + 1; ++s) {
      comm.reset_bytes();
      auto t0 = std::chrono::steady_clock::now();
      const StepReport r = trainer.train_step({b});
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      waits.push_back(r.comm_wait_seconds);
    }
    times.erase(times.begin());  // warm-up
    waits.erase(waits.begin());
    std::sort(times.begin(), times.end());
    std::sort(waits.begin(), waits.end());
    out[size_t(rank)] = {times[times.size() / 2], comm.bytes_sent(), waits[waits.size() / 2]};
  });
  return out[0];
}

void bench_zero() {
  set_num_threads(2);
  const ModelConfig c = ModelConfig::preset("gpt-mini");
  int64_t psi = 0;
  {
    auto device = Device::cpu(9);
    Model m(c, *device, Precision::bf16, 1);
    for (int u = 0; u < m.num_units(); ++u) psi += m.unit_numel(u);
  }
  const int N = 2;
  const double ring = double(N - 1) / double(N);
  Table t({"stage", "sent / rank / step", "theory", "measured / theory", "step (median)", "blocked on comm"});
  for (int stage = 0; stage <= 3; ++stage) {
    // Theory in bytes: gradients reduced in f32 (4 B), parameters gathered in bf16 (2 B).
    double theory = stage == 0   ? 2 * ring * 4.0 * double(psi)                                 // all-reduce
                    : stage < 3 ? ring * 4.0 * double(psi) + ring * 2.0 * double(psi)         // RS + AG
                                : ring * 4.0 * double(psi) + 2 * ring * 2.0 * double(psi);  // RS + 2 AG
    RankRun r = run(N, stage, 4);
    t.row({std::to_string(stage), std::to_string(r.bytes / 1000) + " kB", std::to_string(int64_t(theory) / 1000) + " kB",
           format_ratio(double(r.bytes) / theory), format_seconds(r.seconds), format_seconds(r.comm_wait)});
  }
  t.print("ZeRO bytes sent per rank per step, gpt-mini bf16, N = 2 ranks, Ψ = " + std::to_string(psi) +
          " elements (tied embedding: stage 2 reduces and stage 3 gathers its table twice); step and rank 0's "
          "time blocked on collectives, medians of 4 steps");

  Table s({"CPU devices", "step (median)", "tokens/s", "vs 1 device"});
  double base = 0;
  for (int n : {1, 2}) {
    RankRun r = run(n, 0, 4);
    const double tps = double(kB * kT * n) / r.seconds;
    if (n == 1) base = tps;
    s.row({std::to_string(n), format_seconds(r.seconds), std::to_string(int64_t(tps)), format_ratio(tps / base)});
  }
  s.print("gpt-mini bf16 data parallel (stage 0), B 8 x T 256 per device; all devices share this machine's 2 cores");
  set_num_threads(0);
}

}  // namespace

STRATA_BENCH("zero", bench_zero);

}  // namespace strata::bench
