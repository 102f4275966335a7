// `strata train`: train a model on token shards, saving checkpoints into --out and
// resuming from the newest one there when it is run again.
// Invariant: a resumed run continues bit for bit — weights, optimizer, trainer state
// and the loader's position come from the checkpoint, and every setting that would
// change the run is compared with the checkpoint's first (train_resume.h). Every
// flag and output path is checked before any work starts; a stop signal ends the
// run after its current step with a checkpoint (stop_signal.h).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "args.h"
#include "commands.h"
#include "model_source.h"
#include "stop_signal.h"
#include "strata/plan.h"
#include "strata/run_log.h"
#include "strata/strata.h"
#include "model_flags.h"
#include "placement.h"
#include "train_loop.h"
#include "train_resume.h"

namespace {

struct Options {
  std::string data, val, out, precision = "fp32", schedule = "cosine", init_from;
  std::string weights_dtype = "f32", log, device = "cpu";
  int64_t steps = 200, batch = 16, seq = 128, accum = 1, warmup = 20, decay_steps = 0;
  int64_t save_every = 100, keep = 3, eval_every = 0, eval_batches = 20, threads = 0, seed = 1337;
  int64_t stats_every = 50;
  double growth_warning = 10;
  bool no_progress = false;
  double lr = 2e-3, min_lr_ratio = 0.1, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, clip = 1.0;
  cli::ModelFlags model;
  std::vector<std::string> allow_change;
  cli::Placement placement;
};

strata::ModelConfig model_config(const Options& o) { return cli::model_config_from_flags(o.model, o.seq); }

strata::TrainOptions train_options(const Options& o) {
  strata::TrainOptions t;
  t.grad_accum = o.accum;
  t.adamw.lr = float(o.lr);
  t.adamw.beta1 = float(o.beta1);
  t.adamw.beta2 = float(o.beta2);
  t.adamw.eps = float(o.eps);
  t.adamw.weight_decay = float(o.weight_decay);
  t.schedule.kind = strata::schedule_from_string(o.schedule);
  t.schedule.warmup_steps = o.warmup;
  t.schedule.total_steps = o.steps;
  t.schedule.min_ratio = float(o.min_lr_ratio);
  t.schedule.decay_steps = o.decay_steps;
  t.clip_norm = float(o.clip);
  t.seed = uint64_t(o.seed);
  t.stats_every = o.stats_every;
  return t;
}

// The checks of values that one range per flag cannot express; "" when all hold.
std::string check_combinations(const Options& o) {
  if (const std::string e = cli::check_model_flags(o.model); !e.empty()) return e;
  if (o.beta1 >= 1 || o.beta2 >= 1) return "--beta1 and --beta2 must be below 1 (AdamW's bias correction divides by 1 - beta^t)";
  if (o.growth_warning <= 1) return "--growth-warning must be more than 1";
  if (o.schedule == "wsd" && o.decay_steps > o.steps)
    return "--decay-steps " + std::to_string(o.decay_steps) + " is longer than --steps " + std::to_string(o.steps);
  const auto& names = cli::changeable_settings();
  for (const std::string& n : o.allow_change)
    if (std::find(names.begin(), names.end(), n) == names.end()) {
      std::string all;
      for (const std::string& m : names) all += (all.empty() ? "" : ", ") + m;
      return "--allow-change: '" + n + "' is not a setting a resume can change (one of: " + all + ")";
    }
  return "";
}

// Output paths are checked before the run starts, not at its first save.
void check_writable_dir(const std::string& dir, const char* flag) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw strata::Error(std::string(flag) + " " + dir + ": cannot create the directory: " + ec.message());
  const std::string probe = dir + "/.strata-write-probe";
  std::FILE* f = std::fopen(probe.c_str(), "w");
  if (!f || std::fclose(f) != 0)
    throw strata::Error(std::string(flag) + " " + dir + ": cannot write there: " + std::strerror(errno));
  std::remove(probe.c_str());
}
void check_writable_file(const std::string& path, const char* flag) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::FILE* f = std::fopen(path.c_str(), "a");
  if (!f || std::fclose(f) != 0)
    throw strata::Error(std::string(flag) + " " + path + ": cannot append to it: " + std::strerror(errno));
}

}  // namespace

int train_main(int argc, char** argv) {
  Options o;
  cli::Args args("strata train --data GLOB --out DIR [options]",
                 "Trains a model on llm.c-format token shards (see strata prepare). Checkpoints go to DIR/step_N;\n"
                 "running the same command again resumes from the newest one, bit for bit (a changed setting is\n"
                 "refused unless --allow-change names it). Ctrl-C (SIGINT) or SIGTERM stops after the current step\n"
                 "with a checkpoint; a second one stops at once.");
  const int64_t kMaxThreads = 1024;
  args.allow_config_file();
  args.option("data", &o.data, "GLOB", "training shards (required)");
  args.option("val", &o.val, "GLOB", "validation shards");
  args.option("out", &o.out, "DIR", "run directory for checkpoints (required; created)");
  args.option("init-from", &o.init_from, "PATH", "initial weights: a strata checkpoint or a Hugging Face directory");
  args.option("device", &o.device, "DEV", "cpu | cuda:N");
  args.option("devices", &o.placement.devices, "N", "devices, one rank each (data parallel; ZeRO with --zero-stage): CPU devices, or with --device cuda:K the GPUs K..K+N-1 over NCCL", 1, 64);
  args.option("zero-stage", &o.placement.zero_stage, "S", "ZeRO stage: 1 shards the optimizer, 2 also gradients, 3 also "
              "params (also on one device, where it lets state go to host or nvme)", 0, 3);
  args.choice("params", &o.placement.params, {"device", "host", "nvme"}, "working parameters' tier");
  args.choice("grads", &o.placement.grads, {"device", "host", "nvme"}, "f32 gradients' tier");
  args.choice("optimizer", &o.placement.optimizer, {"device", "host", "nvme"}, "f32 master, Adam m and v's tier");
  args.list("nvme", &o.placement.nvme, "DIR", "swap directories on local drives (O_DIRECT), for tiers on nvme");
  args.option("pinned", &o.placement.pinned, "SIZE", "pinned staging memory for offload, e.g. 256M");
  args.choice("plan", &o.placement.plan, {"auto"}, "take the placement strata plan chooses (with --nvme for nvme)");
  args.option("ram", &o.placement.ram, "SIZE", "--plan auto: host RAM the run may use (default: MemAvailable now)");
  cli::add_model_flags(args, &o.model);
  args.choice("precision", &o.precision, {"fp32", "bf16", "fp16"}, "precision");
  args.option("steps", &o.steps, "N", "optimizer steps in the whole run", 1);
  args.option("batch", &o.batch, "B", "sequences per micro-batch", 1, 1 << 20);
  args.option("seq", &o.seq, "T", "sequence length", 1, 1 << 24);
  args.option("accum", &o.accum, "K", "micro-batches per step", 1, 1 << 20);
  args.option("lr", &o.lr, "X", "peak learning rate", 0, 10);
  args.choice("schedule", &o.schedule, {"constant", "cosine", "wsd"}, "learning-rate schedule");
  args.option("warmup", &o.warmup, "N", "warmup steps", 0);
  args.option("min-lr-ratio", &o.min_lr_ratio, "X", "final learning rate as a fraction of the peak", 0, 1);
  args.option("decay-steps", &o.decay_steps, "N", "wsd: length of the final decay", 0);
  args.option("weight-decay", &o.weight_decay, "X", "AdamW weight decay (matrices)", 0, 10);
  args.option("beta1", &o.beta1, "X", "AdamW beta1, below 1", 0, 1);
  args.option("beta2", &o.beta2, "X", "AdamW beta2, below 1", 0, 1);
  args.option("eps", &o.eps, "X", "AdamW epsilon", 0, 1);
  args.option("clip", &o.clip, "X", "gradient-norm clipping (0: off)", 0);
  args.option("seed", &o.seed, "S", "init, data order and dropout seed", 0);
  args.option("save-every", &o.save_every, "N", "checkpoint every N steps (0: only at the end)", 0);
  args.option("keep", &o.keep, "K", "checkpoints kept in --out (0: all)", 0, 1 << 30);
  args.choice("weights-dtype", &o.weights_dtype, {"f32", "bf16"}, "dtype of model.safetensors");
  args.option("eval-every", &o.eval_every, "N", "validation every N steps (0: only at the end, with --val)", 0);
  args.option("eval-batches", &o.eval_batches, "N", "validation batches per evaluation", 1);
  args.option("threads", &o.threads, "N", "worker threads (0: all cores)", 0, kMaxThreads);
  args.option("log", &o.log, "FILE",
              "JSONL run log (default: DIR/log.jsonl; tools/plot renders it); appended to, and cut back to the "
              "checkpoint's step on resume");
  args.option("stats-every", &o.stats_every, "N", "per-unit activation and gradient statistics every N steps (0: off)", 0);
  args.option("growth-warning", &o.growth_warning, "X", "warn when a unit statistic grows more than X-fold between logs", 1);
  args.list("allow-change", &o.allow_change, "NAME", "on resume, accept a changed setting (e.g. lr, precision)");
  args.flag("no-progress", &o.no_progress, "no progress bar, even on a terminal");
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (o.data.empty() || o.out.empty()) return args.usage_error("--data and --out are required");
  if (const std::string e = check_combinations(o); !e.empty()) return args.usage_error(e);
  if (o.placement.plan == "auto") {
    if (args.given("params") || args.given("grads") || args.given("optimizer") || args.given("zero-stage"))
      return args.usage_error("--plan auto chooses --params, --grads, --optimizer and --zero-stage; give either");
    try {
      std::printf("%s\n", cli::apply_plan(o.placement, model_config(o), strata::precision_from_string(o.precision),
                                         o.batch, o.seq, o.accum).c_str());
    } catch (const std::exception& e) {
      return cli::fail("train", e);
    }
  }
  if (const std::string e = cli::check_placement(o.placement, o.device); !e.empty()) return args.usage_error(e);

  // From here on a stop signal ends the run after its next step, with a checkpoint.
  cli::install_stop_handlers();
  try {
    const strata::Precision precision = strata::precision_from_string(o.precision);
    const strata::DType weights_dtype = strata::dtype_from_string(o.weights_dtype);
    cli::RunSettings run{model_config(o), precision, train_options(o), o.batch, o.seq, o.data, o.placement.devices};
    auto device = cli::make_device(o.device);
    check_writable_dir(o.out, "--out");
    const bool default_log = o.log.empty();
    const std::string log_path = default_log ? o.out + "/log.jsonl" : o.log;
    check_writable_file(log_path, "--log");
    if (o.threads > 0) strata::set_num_threads(int(o.threads));
    if (run.train.schedule.kind != strata::ScheduleKind::constant && o.warmup >= o.steps)
      std::fprintf(stderr, "strata train: warning: --warmup %lld is not shorter than --steps %lld: the learning rate "
                   "never reaches its peak %.3g\n", (long long)o.warmup, (long long)o.steps, o.lr);

    // Only the config of --init-from is read here; each rank's Trainer takes the weights
    // unit by unit. An HF import keeps its model_type, so the run exports as what came
    // in (a windowless Mistral has Llama's shape, and would otherwise export as llama).
    std::optional<cli::ModelSource> init_source;
    if (!o.init_from.empty()) {
      init_source = cli::find_model(o.init_from);
      if (run.config.hf_model_type.empty()) run.config.hf_model_type = init_source->config.hf_model_type;
    }
    const std::string resume = strata::latest_checkpoint(o.out);
    std::vector<std::string> resume_lines;
    strata::CheckpointInfo saved;
    if (!resume.empty()) {
      saved = strata::read_checkpoint_info(resume);
      resume_lines = cli::check_resume(saved, run, {o.allow_change.begin(), o.allow_change.end()});
      if (saved.trainer.step >= o.steps) {
        std::printf("%s is at step %lld, which already reaches --steps %lld: nothing to train (give a larger "
                    "--steps to go on)\n", resume.c_str(), (long long)saved.trainer.step, (long long)o.steps);
        return 0;
      }
    }
    const strata::ModelConfig& config = run.config;
    cli::TrainJob job;
    job.train_data = std::make_shared<strata::TokenDataset>(o.data);
    job.train_data->validate_tokens(config.vocab_size);
    if (!o.val.empty()) job.val_data = std::make_shared<strata::TokenDataset>(o.val);

    if (resume.empty() && !o.init_from.empty()) {
      cli::ModelSource init = std::move(*init_source);
      strata::ModelConfig a = init.config, b = config;
      a.dropout_attention = a.dropout_residual = a.dropout_embedding = 0;
      b.dropout_attention = b.dropout_residual = b.dropout_embedding = 0;
      a.hf_model_type = b.hf_model_type = {};  // export metadata, not the model's shape
      if (strata::model_config_to_json(a) != strata::model_config_to_json(b))
        throw strata::Error("--init-from " + o.init_from + " is a different model (" + a.describe() +
                            ") from the one the flags describe (" + b.describe() + ")");
      std::printf("initial weights from %s\n", init.description.c_str());
      job.init = std::move(init);
    }
    job.config = config;
    job.precision = precision;
    job.options = run.train;
    job.options.zero_stage = int(o.placement.zero_stage);
    job.options.peak_flops = strata::peak_flops(*device, precision);
    job.placement = o.placement;
    job.device = o.device;
    device.reset();  // each rank makes its own
    job.steps = o.steps;
    job.batch = o.batch;
    job.seq = o.seq;
    job.accum = o.accum;
    job.seed = o.seed;
    job.save_every = o.save_every;
    job.keep = o.keep;
    job.eval_every = o.eval_every;
    job.eval_batches = o.eval_batches;
    job.out = o.out;
    job.resume = resume;
    job.weights_dtype = weights_dtype;
    job.record = cli::run_record(run);
    job.record["command"] = args.command_line();
    if (!resume.empty()) {
      std::printf("resuming from %s at step %lld\n", resume.c_str(), (long long)saved.trainer.step);
      for (const std::string& line : resume_lines) std::printf("%s\n", line.c_str());
    }
    const int64_t start = resume.empty() ? 0 : saved.trainer.step;
    const cli::Placement& pl = o.placement;
    std::printf("model: %s\ntraining: %lld steps of %lld x %lld x %lld tokens, %s, %s, %d threads\n",
                config.describe().c_str(), (long long)o.steps, (long long)o.accum, (long long)o.batch,
                (long long)o.seq, strata::precision_name(precision),
                pl.devices > 1 || pl.zero_stage ? (std::to_string(pl.devices) + " cpu devices, ZeRO stage " +
                                                   std::to_string(pl.zero_stage)).c_str()
                                                : o.device.c_str(),
                strata::num_threads());
    if (cli::offloaded(pl))
      std::printf("placement: params %s, grads %s, optimizer %s%s, pinned %s\n", pl.params.c_str(), pl.grads.c_str(),
                  pl.optimizer.c_str(), pl.nvme.empty() ? "" : (", nvme " + pl.nvme[0]).c_str(), pl.pinned.c_str());
    // The records of a run killed after its last checkpoint are not this run's.
    if (!resume.empty() || default_log)
      if (const int64_t cut = strata::truncate_run_log(log_path, start))
        std::printf("log: cut %s back to step %lld (%lld records of an interrupted run removed)\n", log_path.c_str(),
                    (long long)start, (long long)cut);
    job.make_log = [&, pl](const strata::Model& model) {
      auto log = std::make_unique<strata::RunLog>(
          log_path, model, job.options,
          std::vector<std::pair<std::string, std::string>>{
              {"command", args.command_line()}, {"data", o.data}, {"batch", std::to_string(o.batch)},
              {"seq", std::to_string(o.seq)}, {"threads", std::to_string(strata::num_threads())},
              {"devices", std::to_string(pl.devices)}, {"resumed_from", resume}},
          o.growth_warning);
      std::printf("log: %s (peak %.1f GFLOP/s measured for MFU)\n", log_path.c_str(), job.options.peak_flops / 1e9);
      std::fflush(stdout);
      return log;
    };
    // On a terminal the bar redraws one line; into a file every step is a line.
    cli::Output out(!o.no_progress && isatty(fileno(stdout)));
    job.output = &out;
    return cli::run_training(job);
  } catch (const std::exception& e) {
    return cli::fail("train", e);
  }
}
