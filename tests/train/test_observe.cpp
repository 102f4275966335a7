// Run observability: the StepReport's time split, FLOPs and statistics, the JSONL run
// log and its divergence warning, the progress bar, and `strata plan`'s arithmetic.
// Invariant: expected values come from independent computations here (naive RMS of
// the buffers, the ZeRO bytes-per-parameter arithmetic), never from the code's output.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>

#include "lib/io/json.h"
#include "strata/plan.h"
#include "strata/run_log.h"
#include "strata/strata.h"
#include "support/host_tensor.h"
#include "train_support.h"

using namespace strata;
using strata::test::RandomBatch;
using strata::test::tiny_config;
using strata::test::cpu;

namespace {
double rms_of(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return std::sqrt(s / double(n));
}
std::string temp_path(const char* name) { return "/tmp/strata-test-" + std::to_string(getpid()) + "-" + name; }
}  // namespace

TEST_CASE("Trainer reports per-unit statistics on every stats_every-th step", "[observe]") {
  const ModelConfig c = tiny_config("gpt");
  Model model(c, cpu(), Precision::fp32, 7);
  TrainOptions o;
  o.stats_every = 2;
  Trainer t(model, o);
  RandomBatch batch(2, 12, c.vocab_size, 4);

  StepReport r1 = t.train_step({batch.batch()});
  CHECK(r1.unit_stats.empty());

  // Step 2: expected gradient RMS from the accumulated gradients before the step.
  t.forward_backward(batch.batch());
  std::vector<int64_t> numel(size_t(model.num_units()), 0);
  for (const ParamInfo& p : model.parameters()) numel[size_t(p.unit)] += p.numel();
  std::vector<double> grad_rms;
  for (int u = 0; u < model.num_units(); ++u) {
    const TensorView g = model.unit_grads(u);
    double s = 0;
    for (int64_t i = 0; i < g.numel(); ++i) s += double(g.ptr<float>()[i]) * g.ptr<float>()[i];
    grad_rms.push_back(std::sqrt(s / double(numel[size_t(u)])));
  }
  StepReport r2 = t.step();
  REQUIRE(int(r2.unit_stats.size()) == model.num_units());
  for (int u = 0; u < model.num_units(); ++u) {
    const UnitStats& st = r2.unit_stats[size_t(u)];
    INFO("unit " << model.unit_name(u));
    CHECK(st.unit == u);
    CHECK(st.grad_rms == Approx(grad_rms[size_t(u)]).epsilon(1e-4));
    const TensorView y = model.unit_output(u);  // still the forward's residual stream
    if (u + 1 == model.num_units()) {
      CHECK(!y.data);
      CHECK(st.act_rms == 0);
      continue;
    }
    REQUIRE(y.data);
    const float* p = y.ptr<float>();
    double m = 0;
    for (int64_t i = 0; i < y.numel(); ++i) m = std::max(m, double(std::fabs(p[i])));
    CHECK(st.act_rms == Approx(rms_of(p, y.numel())).epsilon(1e-5));
    CHECK(st.act_max_abs == Approx(m));
    CHECK(st.act_rms > 0);
  }
  StepReport r3 = t.train_step({batch.batch()});
  CHECK(r3.unit_stats.empty());
}

TEST_CASE("StepReport splits the step time and counts model FLOPs and bytes", "[observe]") {
  const ModelConfig c = tiny_config("llama");
  Model model(c, cpu(), Precision::bf16, 3);
  TrainOptions o;
  o.grad_accum = 2;
  o.peak_flops = 1e9;
  Trainer t(model, o);
  RandomBatch batch(2, 10, c.vocab_size, 5);
  const StepReport r = t.train_step({batch.batch(), batch.batch()});
  CHECK(r.tokens == 40);
  CHECK(r.model_flops == Approx(c.flops_per_token(10) * 40));
  CHECK(r.mfu == Approx(r.model_flops / r.step_seconds / 1e9));
  CHECK(r.compute_seconds > 0);
  CHECK(r.optimizer_seconds > 0);
  CHECK(r.comm_seconds == 0);
  CHECK(r.compute_seconds + r.optimizer_seconds <= r.step_seconds * 1.001 + 1e-6);
  const ZeroMemory m = t.memory();
  CHECK(r.device_bytes >= m.params + m.grads + m.optimizer);  // state plus activations
  CHECK(r.pinned_bytes == 0);
  CHECK(r.nvme_bytes == 0);

  Trainer no_peak(model, TrainOptions{});
  CHECK(no_peak.train_step({batch.batch()}).mfu == 0);
}

TEST_CASE("RunLog writes a header and one parseable object per step, and warns on growth", "[observe]") {
  const ModelConfig c = tiny_config("gpt");
  Model model(c, cpu(), Precision::fp32, 7);
  TrainOptions o;
  o.stats_every = 1;
  const std::string path = temp_path("log.jsonl");
  std::remove(path.c_str());
  std::vector<std::string> w1, w2, w3;
  {
    RunLog log(path, model, o, {{"command", "test"}}, 10.0);
    StepReport r;
    r.step = 1;
    r.loss = 3.5f;
    r.unit_stats = {{0, 1.0f, 2.0f, 0.01f}, {1, 1.0f, 2.0f, 0.01f}};
    w1 = log.record(r);
    r.step = 2;
    r.unit_stats = {{0, 9.0f, 2.0f, 0.01f}, {1, 11.0f, 2.0f, 0.01f}};  // unit 1 grows 11x
    w2 = log.record(r);
    r.step = 3;
    r.unit_stats = {{0, 9.0f, 2.0f, NAN}, {1, 12.0f, 2.0f, 0.01f}};  // a gradient turns NaN
    r.grad_norm = INFINITY;  // a skipped step
    r.skipped = true;
    w3 = log.record(r);
    log.record_eval(3, 2.5f);
  }
  CHECK(w1.empty());
  REQUIRE(w2.size() == 1);
  CHECK_THAT(w2[0], Catch::Contains("activation RMS") && Catch::Contains(model.unit_name(1)) &&
                        Catch::Contains("11.0x"));
  REQUIRE(w3.size() == 1);
  CHECK_THAT(w3[0], Catch::Contains("gradient RMS") && Catch::Contains(model.unit_name(0)));

  std::ifstream f(path);
  std::vector<json::Value> lines;
  for (std::string line; std::getline(f, line);) lines.push_back(json::parse(line, "log line"));
  std::remove(path.c_str());
  REQUIRE(lines.size() == 5);
  CHECK(lines[0].at("type", "").as_string("") == "header");
  CHECK(lines[0].at("model", "").at("n_layers", "").as_int("") == c.n_layers);
  CHECK(lines[0].at("units", "").items("").size() == size_t(model.num_units()));
  for (const char* key : {"step", "loss", "lr", "grad_norm", "skipped", "skipped_steps", "loss_scale", "tokens",
                          "step_seconds", "tokens_per_second", "compute_seconds", "comm_seconds",
                          "io_stall_seconds", "optimizer_seconds", "model_flops", "mfu", "device_bytes",
                          "pinned_bytes", "host_bytes", "nvme_bytes", "nvme_read_gbps", "nvme_write_gbps", "comm_wait_seconds",
                          "norm_seconds", "update_seconds", "update_read_gbps", "update_write_gbps",
                          "frozen_bytes_saved", "units"})
    CHECK(lines[1].find(key) != nullptr);
  CHECK(lines[1].at("loss", "").as_double("") == 3.5);
  CHECK(lines[2].find("warnings") != nullptr);
  CHECK(lines[3].at("grad_norm", "").as_string("") == "inf");
  CHECK(lines[4].at("type", "").as_string("") == "eval");
}

TEST_CASE("progress_bar and format_duration", "[observe]") {
  CHECK(progress_bar(5, 10, 10.0) == "[##########..........]  50% ETA 10s");
  CHECK(progress_bar(10, 10, 3.0) == "[####################] 100% ETA 0s");
  CHECK(progress_bar(0, 10, 0.0).find("ETA 0s") != std::string::npos);
  CHECK(format_duration(3725) == "1h02m");
  CHECK(format_duration(185) == "3m05s");
}

TEST_CASE("plan: bytes per parameter follow the ZeRO arithmetic; placement follows the budgets", "[observe]") {
  const size_t GiB = size_t(1) << 30;
  for (int64_t psi : {int64_t(1500000000), int64_t(13000000000)}) {
    PlanRequest q;
    q.parameters = psi;
    q.config_known = false;
    q.batch = 1;
    q.seq = 1024;
    q.ram_bytes = 24 * GiB;
    const Plan p = make_plan(q, Rates{});
    CHECK(p.bytes_params == size_t(2 * psi));
    CHECK(p.bytes_grads == size_t(4 * psi));
    CHECK(p.bytes_optimizer == size_t(12 * psi));
    // Neither fits in 24 GiB of RAM without NVMe (18 B/param is 25 GiB at 1.5B).
    CHECK(p.chosen == -1);
    CHECK_THAT(p.options[0].why, Catch::Contains("host RAM needs"));
    CHECK_THAT(p.options[2].why, Catch::Contains("no --nvme"));
    const std::string text = format_plan(q, p);
    CHECK_THAT(text, Catch::Contains("nothing fits"));

    q.nvme_paths = {"/tmp"};
    q.nvme_free = size_t(18 * psi) + GiB;
    const Plan v = make_plan(q, Rates{});
    CHECK(v.options[2].tier_bytes[int(Tier::nvme)] == size_t(18 * psi));
    // NVMe holds the state; RAM (the CPU device) holds activations, two gathered
    // units and the pinned staging: it fits exactly when those do.
    const PlanOption& nv = v.options[2];
    const bool ram_ok = nv.tier_bytes[int(Tier::device)] + nv.tier_bytes[int(Tier::host)] <= q.ram_bytes;
    CHECK(nv.fits == ram_ok);
    CHECK(v.chosen == (ram_ok ? 2 : -1));
    if (psi < 2000000000) CHECK(ram_ok);
  }
  // fp32: 4 + 4 + 8 = 16 B/param.
  PlanRequest f;
  f.parameters = 1000000;
  f.config_known = false;
  f.precision = Precision::fp32;
  f.ram_bytes = 64 * GiB;
  const Plan pf = make_plan(f, Rates{});
  CHECK(pf.bytes_params + pf.bytes_grads + pf.bytes_optimizer == size_t(16) * 1000000);
  // An accelerator with 80 GiB holds a 1.5B model's state and activations.
  PlanRequest d;
  d.config = ModelConfig::preset("gpt2-xl");
  d.batch = 1;
  d.seq = 1024;
  d.device_is_host = false;
  d.device_bytes = 80 * GiB;
  d.ram_bytes = 24 * GiB;
  const Plan pd = make_plan(d, Rates{});
  CHECK(pd.chosen == 0);
  d.device_bytes = 16 * GiB;
  d.ram_bytes = 32 * GiB;  // ZeRO-Offload keeps 16 B/param (23.2 GiB) in host memory
  const Plan ps = make_plan(d, Rates{});
  CHECK(ps.chosen == 1);  // ZeRO-Offload: 2 B/param on the device, 16 B/param in host RAM
  CHECK_THAT(ps.options[0].why, Catch::Contains("device needs"));
  d.placement = "device";
  CHECK(make_plan(d, Rates{}).chosen == 0);  // checked, not chosen: fits stays false
  CHECK(!make_plan(d, Rates{}).options[0].fits);
}
