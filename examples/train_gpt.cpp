// train_gpt: train a GPT-style byte-level language model on CPU devices, report
// progress, validation loss, and a sample of generated text.
//
//   make demo                               # the defaults: Debian's fortunes corpus
//   build/examples/train_gpt --text book.txt --steps 500
//   build/examples/train_gpt --data "shards/train_*.bin" --val "shards/val_*.bin"
//   build/examples/train_gpt --help
//
// What it shows: the three layers a researcher uses — data (prepare_text, a
// TokenDataset and a BatchLoader), the Model, and the Trainer's train_step — plus
// sampling. Everything here is public API from <strata/strata.h>.
#include <algorithm>
#include <strata/plan.h>
#include <strata/run_log.h>
#include <strata/strata.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace {

struct Options {
  std::string text;  // a text file to train on (instead of the fortunes corpus)
  std::string data;  // token shards (llm.c format), glob
  std::string val;   // validation shards, glob
  std::string preset = "demo";
  std::string precision = "bf16";
  std::string recompute = "none";
  std::string log;  // JSONL run log (tools/plot/plot.sh renders it)
  int64_t stats_every = 50;
  int64_t steps = 1500;
  int64_t batch = 16;
  int64_t seq = 128;
  int64_t accum = 1;
  float lr = 2e-3f;
  int64_t warmup = 50;
  float dropout = 0.0f;
  int64_t eval_every = 250;
  int64_t eval_batches = 20;
  int64_t sample_len = 400;
  float temperature = 0.8f;
  int64_t top_k = 40;
  uint64_t seed = 1337;
  int threads = 0;
  std::string prompt = "Q: ";
};

// The options, parsed by CLI11 (Debian's libcli11-dev): each value is converted and
// range-checked where it is parsed, so a bad one stops here with the flag named.
// CLI11's Range lets NaN through, hence Finite on the reals.
const CLI::Validator Finite([](std::string& s) { return std::isfinite(std::strtod(s.c_str(), nullptr)) ? "" : "not a finite number: " + s; }, "FINITE");

Options parse(int argc, char** argv) {
  Options o;
  std::string presets;
  for (const auto& n : strata::ModelConfig::preset_names()) presets += " " + n;
  CLI::App app("Trains a byte-level GPT on Debian's fortunes corpus (default), a text file, or token shards.", "train_gpt");
  app.footer("presets:" + presets);
  app.add_option("--text", o.text, "train on this text file (byte tokens; last 10% is validation)");
  app.add_option("--data", o.data, "train on llm.c-format token shards (glob)");
  app.add_option("--val", o.val, "validation shards (with --data)");
  app.add_option("--preset", o.preset, "model preset (see below)")->capture_default_str();
  app.add_option("--precision", o.precision, "fp32 | bf16 | fp16")->capture_default_str()->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  app.add_option("--steps", o.steps, "optimizer steps")->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  app.add_option("--batch", o.batch, "sequences per micro-batch")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--seq", o.seq, "sequence length")->capture_default_str()->check(CLI::Range(1, 1 << 24));
  app.add_option("--accum", o.accum, "micro-batches per step")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--lr", o.lr, "peak learning rate (warmup, then cosine to 10%)")->capture_default_str()->check(Finite & CLI::Range(0.0f, 10.0f));
  app.add_option("--warmup", o.warmup, "warmup steps")->capture_default_str()->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  app.add_option("--dropout", o.dropout, "residual and attention dropout")->capture_default_str()->check(Finite & CLI::Range(0.0f, 0.99f));
  app.add_option("--recompute", o.recompute, "activation checkpointing: none, selective, full or every-K")->capture_default_str();
  app.add_option("--eval-every", o.eval_every, "validation every N steps")->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  app.add_option("--eval-batches", o.eval_batches, "validation batches per evaluation")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--sample-len", o.sample_len, "bytes to generate at the end")->capture_default_str()->check(CLI::Range(0, 1 << 24));
  app.add_option("--temperature", o.temperature, "sampling temperature")->capture_default_str()->check(Finite & CLI::Range(0.0f, 100.0f));
  app.add_option("--top-k", o.top_k, "sample from the K most likely bytes (0 = all)")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  app.add_option("--prompt", o.prompt, "the sample's prompt")->capture_default_str();
  app.add_option("--seed", o.seed, "data order, dropout and init seed")->capture_default_str();
  app.add_option("--threads", o.threads, "worker threads (0: all cores)")->capture_default_str()->check(CLI::Range(0, 1024));
  app.add_option("--log", o.log, "JSONL run log: config, then every step (tools/plot/plot.sh FILE draws it)");
  app.add_option("--stats-every", o.stats_every, "per-unit activation / gradient statistics every N steps (0 off)")->capture_default_str()->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  if (!o.val.empty() && o.data.empty()) throw strata::Error("train_gpt: --val needs --data");
  // Names are checked now, before any data is prepared.
  strata::ModelConfig config = strata::ModelConfig::preset(o.preset);
  strata::RecomputePolicy::parse(o.recompute, config.n_layers);
  return o;
}

// Entropy in nats of the byte distribution: the loss of the best model that ignores context.
double unigram_entropy(const strata::TokenDataset& data) {
  std::vector<double> count(65536, 0.0);
  double total = 0;
  for (size_t s = 0; s < data.num_shards(); ++s)
    for (uint16_t t : data.shard(s).tokens()) count[t] += 1, total += 1;
  double h = 0;
  for (double c : count)
    if (c > 0) h -= c / total * std::log(c / total);
  return h;
}

std::string duration(double seconds) {
  char buf[32];
  int s = int(seconds + 0.5);
  if (s >= 60) std::snprintf(buf, sizeof buf, "%dm%02ds", s / 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%ds", s);
  return buf;
}

float validate(strata::Trainer& trainer, strata::BatchLoader& val, int64_t batches) {
  val.reset();
  double sum = 0;
  int64_t n = std::min(batches, val.num_batches());
  for (int64_t i = 0; i < n; ++i) {
    strata::TokenBatch b = val.next();
    sum += trainer.evaluate(b.batch());
  }
  return float(sum / double(n));
}

int run(const Options& o) {
  if (o.threads > 0) strata::set_num_threads(o.threads);
  strata::ModelConfig config = strata::ModelConfig::preset(o.preset);
  if (o.dropout > 0) config.dropout_residual = config.dropout_attention = o.dropout;
  if (o.seq > config.max_seq) config.max_seq = o.seq;

  // ---- data: shards given, or text turned into shards in a scratch directory
  std::string train_glob = o.data, val_glob = o.val;
  std::string scratch;
  if (train_glob.empty()) {
    std::vector<std::string> files = o.text.empty() ? strata::default_corpus_files() : std::vector<std::string>{o.text};
    char tmpl[] = "/tmp/strata-train-gpt-XXXXXX";
    if (!mkdtemp(tmpl)) throw strata::Error("train_gpt: cannot create a scratch directory in /tmp");
    scratch = tmpl;
    strata::PrepareResult prep = strata::prepare_text(files, scratch + "/text", 0.1);
    std::printf("data: %zu text file%s -> %lld training and %lld validation bytes\n", files.size(),
                files.size() == 1 ? "" : "s", (long long)prep.train_tokens, (long long)prep.val_tokens);
    train_glob = prep.train_path;
    val_glob = prep.val_path;
  }
  auto train_data = std::make_shared<strata::TokenDataset>(train_glob);
  train_data->validate_tokens(config.vocab_size);
  strata::LoaderOptions lo;
  lo.batch_size = o.batch;
  lo.seq_len = o.seq;
  lo.seed = o.seed;
  strata::BatchLoader train(train_data, lo);
  std::unique_ptr<strata::BatchLoader> val;
  if (!val_glob.empty()) {
    lo.shuffle = false;
    val = std::make_unique<strata::BatchLoader>(std::make_shared<strata::TokenDataset>(val_glob), lo);
  }
  const double entropy = unigram_entropy(*train_data);

  // ---- model and trainer
  auto device = strata::Device::cpu(0);
  strata::Precision precision = strata::precision_from_string(o.precision);
  strata::Model model(config, *device, precision, o.seed);
  model.set_recompute(strata::RecomputePolicy::parse(o.recompute, config.n_layers));
  strata::TrainOptions to;
  to.grad_accum = o.accum;
  to.adamw.lr = o.lr;
  to.schedule.kind = strata::ScheduleKind::cosine;
  to.schedule.warmup_steps = o.warmup;
  to.schedule.total_steps = o.steps;
  to.seed = o.seed;
  to.stats_every = o.log.empty() ? 0 : o.stats_every;
  to.peak_flops = strata::peak_flops(*device, precision);  // CPU: the FMA-loop peak (docs/performance.md)
  strata::Trainer trainer(model, to);
  std::unique_ptr<strata::RunLog> log;
  if (!o.log.empty())
    log = std::make_unique<strata::RunLog>(o.log, model, to,
                                           std::vector<std::pair<std::string, std::string>>{
                                               {"example", "train_gpt"}, {"batch", std::to_string(o.batch)},
                                               {"seq", std::to_string(o.seq)}, {"recompute", o.recompute}});
  std::printf("model: %s\n", config.describe().c_str());
  std::printf("training: %lld steps of %lld x %lld x %lld tokens, %s, recompute %s, %d threads; "
              "unigram entropy %.3f nats\n",
              (long long)o.steps, (long long)o.accum, (long long)o.batch, (long long)o.seq,
              strata::precision_name(precision), o.recompute.c_str(), strata::num_threads(), entropy);
  std::fflush(stdout);

  // ---- the loop
  const auto t0 = std::chrono::steady_clock::now();
  float val_loss = NAN, train_loss = NAN;
  for (int64_t s = 0; s < o.steps; ++s) {
    std::vector<strata::TokenBatch> micro;
    std::vector<strata::Batch> views;
    for (int64_t k = 0; k < o.accum; ++k) micro.push_back(train.next());
    for (auto& b : micro) views.push_back(b.batch());
    strata::StepReport r = trainer.train_step(views);
    train_loss = r.loss;
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double eta = elapsed / double(s + 1) * double(o.steps - s - 1);
    std::printf("step %5lld/%lld | loss %.4f | lr %.2e | norm %.3f | %7.0f tok/s | MFU %4.1f%% | %s ETA%s\n",
                (long long)r.step, (long long)o.steps, r.loss, r.lr, r.grad_norm, r.tokens_per_second, 100 * r.mfu,
                duration(eta).c_str(), r.skipped ? " | skipped (non-finite gradients)" : "");
    if (log)
      for (const std::string& w : log->record(r)) std::printf("%s\n", w.c_str());
    if (val && ((s + 1) % o.eval_every == 0 || s + 1 == o.steps)) {
      val_loss = validate(trainer, *val, o.eval_batches);
      if (log) log->record_eval(r.step, val_loss);
      std::printf("validation loss %.4f (unigram entropy %.4f)\n", val_loss, entropy);
    }
    std::fflush(stdout);
  }
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // ---- a sample
  strata::SampleOptions so;
  so.max_new_tokens = o.sample_len;
  so.temperature = o.temperature;
  so.top_k = o.top_k;
  so.seed = o.seed;
  std::vector<uint16_t> prompt16 = strata::encode_bytes(o.prompt);
  std::vector<int32_t> prompt(prompt16.begin(), prompt16.end());
  // Generation keeps every position in a KV cache of max_seq: the sample ends there.
  so.max_new_tokens = std::min<int64_t>(so.max_new_tokens, model.config().max_seq - int64_t(prompt.size()));
  std::vector<int32_t> out = strata::sample(model, prompt, so);
  std::vector<uint16_t> out16(out.begin(), out.end());
  std::printf("\n---- sample (temperature %.2f, top-k %lld) ----\n%s%s\n----\n", o.temperature, (long long)o.top_k,
              o.prompt.c_str(), strata::decode_bytes(out16).c_str());
  std::printf("done in %s: final training loss %.4f, validation loss %.4f, unigram entropy %.4f nats\n",
              duration(total).c_str(), train_loss, val_loss, entropy);
  if (!scratch.empty()) std::filesystem::remove_all(scratch);
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
