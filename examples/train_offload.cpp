// train_offload: train a byte-level GPT whose training state does not fit in RAM,
// with working params, gradients and AdamW state placed on host or NVMe
// (ZeRO-Infinity style), printing per step the loss, NVMe GB/s read and written,
// the I/O stall time and the bytes live per tier.
//
//   mkdir -p build/swap && /usr/bin/time -v build/examples/train_offload --nvme build/swap \
//       --layers 32 --d-model 2560 --heads 20   # 2.52B parameters, 37.5 GiB of state
//   build/examples/train_offload --nvme DIR --layers 4 --d-model 256 --heads 4   # quick
//   build/examples/train_offload --help
//
// The corpus is Debian's fortunes (the demo corpus); the loss must fall and stay
// finite. The optimizer step of step k runs in the background behind step k+1's
// forward ("background update": the one that finished during this step).
// Invariant: nothing here knows where bytes live; the Trainer's offload constructor
// and OffloadOptions say it all.
#include <strata/offload.h>
#include <strata/strata.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

namespace {

struct Options {
  std::string nvme;
  std::string params = "nvme", grads = "nvme", optimizer = "nvme";
  int64_t layers = 4, d_model = 256, heads = 4, d_mlp = 0;
  int64_t steps = 4, batch = 4, seq = 64, accum = 1;
  int64_t pinned_mib = 1024;
  float lr = 0;  // 0: the width- and depth-scaled default below
  int64_t warmup = 0;
  int threads = 0;
  bool eval = true;  // held-out loss on one fixed validation batch, before and after each step
  bool resident = false;  // the plain Trainer, for comparison (state must fit in RAM)
};

strata::offload::Tier tier(const std::string& s) {
  if (s == "device") return strata::offload::Tier::device;
  if (s == "host") return strata::offload::Tier::host;
  if (s == "nvme") return strata::offload::Tier::nvme;
  throw strata::Error("train_offload: tier '" + s + "' is not device, host or nvme");
}

// The options, parsed by CLI11 (Debian's libcli11-dev): each value is converted and
// range-checked where it is parsed, so a bad one stops here with the flag named.
// CLI11's Range lets NaN through, hence Finite on the reals.
const CLI::Validator Finite([](std::string& s) { return std::isfinite(std::strtod(s.c_str(), nullptr)) ? "" : "not a finite number: " + s; }, "FINITE");

Options parse(int argc, char** argv) {
  Options o;
  CLI::App app("Trains a byte-level GPT with its state paged to host RAM or NVMe (ZeRO-Infinity style).",
               "train_offload");
  const auto tiers = CLI::IsMember({"device", "host", "nvme"});
  app.add_option("--nvme", o.nvme, "swap directory on a local drive (O_DIRECT)");
  app.add_option("--params", o.params, "device | host | nvme: working parameters")->capture_default_str()->check(tiers);
  app.add_option("--grads", o.grads, "device | host | nvme: f32 gradients")->capture_default_str()->check(tiers);
  app.add_option("--optimizer", o.optimizer, "device | host | nvme: f32 master, m, v")->capture_default_str()->check(tiers);
  app.add_option("--layers", o.layers, "transformer blocks")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--d-model", o.d_model, "model width")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--heads", o.heads, "attention heads")->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--d-mlp", o.d_mlp, "MLP width (0: 4 x d-model)")->capture_default_str()->check(CLI::Range(0, 1 << 22));
  app.add_option("--steps", o.steps, "optimizer steps")->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  app.add_option("--batch", o.batch, "sequences per micro-batch")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--seq", o.seq, "sequence length")->capture_default_str()->check(CLI::Range(1, 1 << 24));
  app.add_option("--accum", o.accum, "micro-batches per step")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--lr", o.lr, "peak learning rate (0: 170 / (d_model^2 x layers), 8.1e-7 at 32 x 2560)")->capture_default_str()->check(Finite & CLI::Range(0.0f, 10.0f));
  app.add_option("--warmup", o.warmup, "steps of linear lr warmup")->capture_default_str()->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  app.add_option("--pinned", o.pinned_mib, "pinned pool budget, MiB")->capture_default_str()->check(CLI::Range(1, 1 << 24));
  app.add_option("--threads", o.threads, "worker threads (0: all cores)")->capture_default_str()->check(CLI::Range(0, 1024));
  app.add_option("--eval", o.eval, "held-out loss on one fixed validation batch before training and after each step "
                                   "(costs one forward pass each)")->capture_default_str();
  app.add_option("--resident", o.resident, "no offload: the plain Trainer, to compare losses")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  return o;
}

double gib(double bytes) { return bytes / double(1ull << 30); }

// Resident set size now, from /proc (0 where there is none).
double rss_gib() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  long kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  std::fclose(f);
  return double(kb) / double(1 << 20);
}

int run(const Options& o) {
  if (o.threads > 0) strata::set_num_threads(o.threads);
  strata::ModelConfig config = strata::ModelConfig::preset("demo");
  config.n_layers = o.layers;
  config.d_model = o.d_model;
  config.n_heads = o.heads;
  config.d_mlp = o.d_mlp > 0 ? o.d_mlp : 4 * o.d_model;
  config.max_seq = std::max<int64_t>(config.max_seq, o.seq);

  char tmpl[] = "/tmp/strata-train-offload-XXXXXX";
  if (!mkdtemp(tmpl)) throw strata::Error("train_offload: cannot create a scratch directory in /tmp");
  const std::string scratch = tmpl;
  strata::PrepareResult prep = strata::prepare_text(strata::default_corpus_files(), scratch + "/text", 0.1);
  auto data = std::make_shared<strata::TokenDataset>(prep.train_path);
  strata::LoaderOptions lo;
  lo.batch_size = o.batch;
  lo.seq_len = o.seq;
  lo.seed = 1;
  strata::BatchLoader loader(data, lo);
  // The training loss of step k is on batch k, so steps differ by their batches too;
  // one fixed held-out batch shows what the updates alone do.
  strata::BatchLoader val_loader(std::make_shared<strata::TokenDataset>(prep.val_path), lo);
  strata::TokenBatch held_out = val_loader.next();

  strata::offload::OffloadOptions off;
  off.params = tier(o.params);
  off.grads = tier(o.grads);
  off.optimizer = tier(o.optimizer);
  if (!o.nvme.empty()) off.nvme_paths = {o.nvme};
  off.pinned_bytes = size_t(o.pinned_mib) << 20;

  auto device = strata::Device::cpu(0);
  // Offloaded, the model holds no state of its own: the store draws each unit's initial
  // params straight into its tier, so RAM never holds more than one unit of it.
  strata::Model model(config, *device, strata::Precision::bf16, 1,
                      o.resident ? strata::Model::Init::resident : strata::Model::Init::deferred);
  model.set_recompute(strata::RecomputePolicy::every_block(config.n_layers));
  strata::TrainOptions to;
  to.grad_accum = o.accum;
  // Adam's first steps move every weight by about lr at once, all in the gradient's
  // sign; in a wide, deep residual stack those moves add up and the loss overshoots
  // (step 3 rose from 4.45 to 6.05 at 32 x 2560, lr 2e-6). Measured on the resident
  // Trainer, 256 tokens per step: the spike appears once lr x C^2 x L passes about
  // 400 (8 x 1024 at 6e-5, 4 x 2048 at 3e-5, 32 x 2560 at 2e-6), and at about 170
  // the loss falls at each of 4 steps with no warmup (8 x 1024, 4 x 2048); 32 x 2560
  // at 170 gave 5.74, 5.77, 5.37, 4.31 (step 2's batch scores higher at init). Warmup
  // only delays the fall: 2 steps of it at 200 gave 5.74, 5.87, 5.44, 4.34.
  to.adamw.lr = o.lr > 0 ? o.lr : 170.0f / (float(config.d_model) * float(config.d_model) * float(config.n_layers));
  to.schedule.kind = strata::ScheduleKind::constant;
  to.schedule.warmup_steps = o.warmup;
  std::printf("model: %s; training state %.2f GiB (16 B/param)\n", config.describe().c_str(),
              gib(16.0 * double(model.num_parameters())));
  std::printf("placement: params %s, grads %s, optimizer %s; pinned %lld MiB; lr %.3g, %lld warmup steps\n",
              o.params.c_str(), o.grads.c_str(), o.optimizer.c_str(), (long long)o.pinned_mib, double(to.adamw.lr),
              (long long)o.warmup);
  std::fflush(stdout);
  std::unique_ptr<strata::Trainer> owned =
      o.resident ? std::make_unique<strata::Trainer>(model, to) : std::make_unique<strata::Trainer>(model, to, off);
  strata::Trainer& trainer = *owned;
  const size_t arena_after_setup = device->arena().bytes_live();
  if (!o.resident)
    std::printf("setup: host peak %.3f GiB by strata's accounting (host tiers, one unit's staging, pinned high water) "
                "+ device arena %.3f GiB high-water; RSS %.2f GiB\n",
                gib(double(trainer.memory().host_construction_peak)), gib(double(device->arena().bytes_high_water())),
                rss_gib());
  device->arena().reset_high_water();

  if (o.eval) std::printf("held-out loss before training %.4f\n", trainer.evaluate(held_out.batch()));
  for (int64_t s = 0; s < o.steps; ++s) {
    std::vector<strata::TokenBatch> micro;
    std::vector<strata::Batch> views;
    for (int64_t k = 0; k < o.accum; ++k) micro.push_back(loader.next());
    for (auto& b : micro) views.push_back(b.batch());
    strata::StepReport r = trainer.train_step(views);
    std::printf("step %lld | loss %.4f | norm %.3f | %.1f s | NVMe read %.2f GB/s, write %.2f GB/s | stall %.2f s (%.0f%%) | "
                "background update %.1f s | device %.2f GiB, pinned %.2f GiB, host %.2f GiB, nvme %.2f GiB | RSS %.2f GiB\n",
                (long long)r.step, r.loss, r.grad_norm, r.step_seconds, r.nvme_read_gbps, r.nvme_write_gbps,
                r.io_stall_seconds, 100 * r.io_stall_seconds / r.step_seconds, r.update_seconds,
                gib(double(r.device_bytes)), gib(double(r.pinned_bytes)), gib(double(r.host_bytes)),
                gib(double(r.nvme_bytes)), rss_gib());
    if (o.eval) std::printf("held-out loss after step %lld %.4f\n", (long long)r.step, trainer.evaluate(held_out.batch()));
    std::fflush(stdout);
  }
  std::printf("device arena: %.3f GiB live after setup, %.3f GiB high-water while training\n",
              gib(double(arena_after_setup)), gib(double(device->arena().bytes_high_water())));
  std::error_code ec;
  std::filesystem::remove_all(scratch, ec);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
