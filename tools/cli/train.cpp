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
#include <set>

#include "args.h"
#include "commands.h"
#include "model_source.h"
#include "stop_signal.h"
#include "strata/plan.h"
#include "strata/run_log.h"
#include "strata/strata.h"
#include "train_resume.h"

namespace {

struct Options {
  std::string data, val, out, preset = "demo", precision = "fp32", schedule = "cosine", init_from;
  std::string weights_dtype = "f32", log, device = "cpu";
  int64_t steps = 200, batch = 16, seq = 128, accum = 1, warmup = 20, decay_steps = 0;
  int64_t n_layers = 0, n_heads = 0, d_model = 0, d_mlp = 0, max_seq = 0, vocab_size = 0;
  int64_t save_every = 100, keep = 3, eval_every = 0, eval_batches = 20, threads = 0, seed = 1337;
  int64_t stats_every = 50;
  double growth_warning = 10;
  bool no_progress = false;
  double lr = 2e-3, min_lr_ratio = 0.1, weight_decay = 0.1, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, clip = 1.0;
  double dropout = -1;
  std::vector<std::string> allow_change;
};

strata::ModelConfig model_config(const Options& o) {
  strata::ModelConfig c = strata::ModelConfig::preset(o.preset);
  if (o.n_layers) c.n_layers = o.n_layers;
  if (o.n_heads) c.n_heads = o.n_heads;
  if (o.d_model) c.d_model = o.d_model;
  if (o.d_mlp) c.d_mlp = o.d_mlp;
  if (o.vocab_size) c.vocab_size = o.vocab_size;
  if (o.max_seq) c.max_seq = o.max_seq;
  if (o.seq > c.max_seq) c.max_seq = o.seq;
  if (o.dropout >= 0) c.dropout_attention = c.dropout_residual = float(o.dropout);
  c.validate();
  return c;
}

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

float validate(strata::Trainer& trainer, strata::BatchLoader& val, int64_t batches) {
  val.reset();
  double sum = 0;
  const int64_t n = std::min(batches, val.num_batches());
  for (int64_t i = 0; i < n; ++i) {
    strata::TokenBatch b = val.next();
    sum += trainer.evaluate(b.batch());
  }
  return float(sum / double(n));
}

// The checks of values that one range per flag cannot express; "" when all hold.
std::string check_combinations(const Options& o) {
  if (o.dropout != -1 && !(o.dropout >= 0 && o.dropout < 1)) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "--dropout: %g is out of range (expected -1 for the preset's, or [0, 1))", o.dropout);
    return buf;
  }
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
  args.option("preset", &o.preset, "NAME", "model preset (overridden by the size options below)");
  args.option("n-layers", &o.n_layers, "N", "transformer blocks (0: the preset's)", 0, 4096);
  args.option("n-heads", &o.n_heads, "N", "attention heads (0: the preset's)", 0, 4096);
  args.option("d-model", &o.d_model, "N", "model width (0: the preset's)", 0, 1 << 20);
  args.option("d-mlp", &o.d_mlp, "N", "MLP width (0: the preset's)", 0, 1 << 22);
  args.option("vocab-size", &o.vocab_size, "N", "vocabulary (0: the preset's)", 0, int64_t(1) << 31);
  args.option("max-seq", &o.max_seq, "N", "longest sequence (0: the preset's, at least --seq)", 0, 1 << 24);
  args.option("dropout", &o.dropout, "P", "attention and residual dropout in [0, 1) (-1: the preset's)", -1, 1);
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

  // From here on a stop signal ends the run after its next step, with a checkpoint.
  cli::install_stop_handlers();
  try {
    const strata::Precision precision = strata::precision_from_string(o.precision);
    const strata::DType weights_dtype = strata::dtype_from_string(o.weights_dtype);
    cli::RunSettings run{model_config(o), precision, train_options(o), o.batch, o.seq, o.data};
    auto device = cli::make_device(o.device);
    check_writable_dir(o.out, "--out");
    const bool default_log = o.log.empty();
    const std::string log_path = default_log ? o.out + "/log.jsonl" : o.log;
    check_writable_file(log_path, "--log");
    if (o.threads > 0) strata::set_num_threads(int(o.threads));
    if (run.train.schedule.kind != strata::ScheduleKind::constant && o.warmup >= o.steps)
      std::fprintf(stderr, "strata train: warning: --warmup %lld is not shorter than --steps %lld: the learning rate "
                   "never reaches its peak %.3g\n", (long long)o.warmup, (long long)o.steps, o.lr);

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
    auto train_data = std::make_shared<strata::TokenDataset>(o.data);
    train_data->validate_tokens(config.vocab_size);
    strata::LoaderOptions lo;
    lo.batch_size = o.batch;
    lo.seq_len = o.seq;
    lo.seed = uint64_t(o.seed);
    strata::BatchLoader loader(train_data, lo);
    std::unique_ptr<strata::BatchLoader> val;
    if (!o.val.empty()) {
      lo.shuffle = false;
      val = std::make_unique<strata::BatchLoader>(std::make_shared<strata::TokenDataset>(o.val), lo);
    }

    strata::Model model(config, *device, precision, uint64_t(o.seed));
    if (resume.empty() && !o.init_from.empty()) {
      // Weights only, before the Trainer copies them into its master weights.
      cli::LoadedModel init = cli::load_model(o.init_from, "fp32", false);
      strata::ModelConfig a = init.model->config(), b = config;
      a.dropout_attention = a.dropout_residual = a.dropout_embedding = 0;
      b.dropout_attention = b.dropout_residual = b.dropout_embedding = 0;
      if (strata::model_config_to_json(a) != strata::model_config_to_json(b))
        throw strata::Error("--init-from " + o.init_from + " is a different model (" + a.describe() +
                            ") from the one the flags describe (" + b.describe() + ")");
      const std::string tmp = o.out + "/.init-weights";
      std::filesystem::remove_all(tmp);
      strata::save_checkpoint(tmp, *init.model, nullptr, {}, {strata::DType::f32, false});
      strata::load_checkpoint(tmp, model);
      std::filesystem::remove_all(tmp);
      std::printf("initial weights from %s\n", init.source.c_str());
    }
    strata::TrainOptions topt = run.train;
    topt.peak_flops = strata::peak_flops(*device, precision);
    strata::Trainer trainer(model, topt);
    if (!resume.empty()) {
      strata::CheckpointInfo info = strata::load_checkpoint(resume, model, &trainer);
      loader.seek(info.progress.data_position);
      std::printf("resumed from %s at step %lld\n", resume.c_str(), (long long)info.trainer.step);
      for (const std::string& line : resume_lines) std::printf("%s\n", line.c_str());
    }
    std::printf("model: %s\ntraining: %lld steps of %lld x %lld x %lld tokens, %s, %s, %d threads\n",
                config.describe().c_str(), (long long)o.steps, (long long)o.accum, (long long)o.batch,
                (long long)o.seq, strata::precision_name(precision), device->name().c_str(), strata::num_threads());
    // The records of a run killed after its last checkpoint are not this run's.
    if (!resume.empty() || default_log)
      if (const int64_t cut = strata::truncate_run_log(log_path, trainer.step_count()))
        std::printf("log: cut %s back to step %lld (%lld records of an interrupted run removed)\n", log_path.c_str(),
                    (long long)trainer.step_count(), (long long)cut);
    std::map<std::string, std::string> record = cli::run_record(run);
    record["command"] = args.command_line();
    strata::RunLog log(log_path, model, topt,
                       {{"command", args.command_line()}, {"data", o.data}, {"batch", std::to_string(o.batch)},
                        {"seq", std::to_string(o.seq)}, {"threads", std::to_string(strata::num_threads())},
                        {"resumed_from", resume}},
                       o.growth_warning);
    std::printf("log: %s (peak %.1f GFLOP/s measured for MFU)\n", log_path.c_str(), topt.peak_flops / 1e9);
    std::fflush(stdout);
    // On a terminal the bar redraws one line; into a file every step is a line.
    cli::Output out(!o.no_progress && isatty(fileno(stdout)));
    const int64_t first_step = trainer.step_count();
    const auto t0 = std::chrono::steady_clock::now();

    auto save = [&] {
      strata::TrainingProgress progress{loader.position(), record};
      const std::string path =
          strata::save_run_checkpoint(o.out, model, trainer, progress, {weights_dtype, true}, int(o.keep));
      out.printf("saved %s\n", path.c_str());
      out.flush();
      return path;
    };
    int64_t last_saved = trainer.step_count();
    while (trainer.step_count() < o.steps) {
      std::vector<strata::TokenBatch> micro;
      std::vector<strata::Batch> views;
      for (int64_t k = 0; k < o.accum; ++k) micro.push_back(loader.next());
      for (auto& b : micro) views.push_back(b.batch());
      const strata::StepReport r = trainer.train_step(views);
      const std::vector<std::string> warnings = log.record(r);
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const std::string bar = strata::progress_bar(r.step - first_step, o.steps - first_step, elapsed);
      const bool tty = out.tty();
      if (tty) out.printf("\r\033[K");
      // 9 significant digits: the float itself, so runs can be compared exactly.
      out.printf("step %lld/%lld | loss %.9g | lr %.3e | norm %.4f | %.0f tok/s | MFU %.1f%% | %s%s", (long long)r.step,
                 (long long)o.steps, r.loss, r.lr, r.grad_norm, r.tokens_per_second, 100 * r.mfu, bar.c_str(),
                 r.skipped ? " | skipped (non-finite gradients)" : "");
      const int stop = cli::stop_requested();
      // On a terminal the line stays open for the next redraw unless something follows.
      const bool eval_now = val && o.eval_every > 0 && r.step % o.eval_every == 0;
      const bool save_now = (o.save_every > 0 && r.step % o.save_every == 0) || stop;
      if (!tty || !warnings.empty() || eval_now || save_now || r.step == o.steps) out.printf("\n");
      for (const std::string& w : warnings) out.printf("%s\n", w.c_str());
      if (eval_now && !stop) {
        const float vl = validate(trainer, *val, o.eval_batches);
        log.record_eval(r.step, vl);
        out.printf("validation loss %.6f\n", vl);
      }
      out.flush();
      if (stop) {
        std::fprintf(stderr, "strata train: %s: stopping after step %lld; saving a checkpoint (again to stop at once)\n",
                     cli::signal_name(stop).c_str(), (long long)r.step);
        const std::string path = last_saved == r.step ? strata::latest_checkpoint(o.out) : save();
        std::fprintf(stderr, "strata train: stopped at step %lld of %lld, checkpoint %s; run the same command to "
                     "resume\n", (long long)r.step, (long long)o.steps, path.c_str());
        return 128 + stop;
      }
      if (save_now) {
        save();
        last_saved = r.step;
      }
    }
    if (last_saved != trainer.step_count()) save();
    if (val) {
      const float vl = validate(trainer, *val, o.eval_batches);
      if (o.eval_every <= 0 || trainer.step_count() % o.eval_every != 0) log.record_eval(trainer.step_count(), vl);
      out.printf("validation loss %.6f\n", vl);
    }
    return 0;
  } catch (const std::exception& e) {
    return cli::fail("train", e);
  }
}
