// finetune_lora: LoRA fine-tuning of a trained model on a text file. Loads a strata
// checkpoint (or a run directory's newest, or a Hugging Face GPT-2 / LLaMA directory),
// freezes it, trains low-rank adapters, reports validation loss before and after and
// the memory the frozen base saves, saves the adapters in PEFT's format and samples.
//
//   build/tools/strata prepare --out /tmp/ft/fortunes
//   build/tools/strata train --data /tmp/ft/fortunes_train.bin --steps 300 --out /tmp/ft/base
//   build/examples/finetune_lora --model /tmp/ft/base --text /usr/share/common-licenses/GPL-3 \
//       --out /tmp/ft/adapters
//   build/examples/finetune_lora --model /tmp/ft/base --text /usr/share/common-licenses/GPL-3 \
//       --offload nvme --nvme-path /var/tmp     # the frozen base paged from NVMe
//   build/examples/finetune_lora --help
//
// Text is tokenized byte by byte (the demo model's vocabulary). A Hugging Face GPT-2
// needs its own BPE tokens: pass --data/--val llm.c-format shards made with GPT-2's
// tokenizer instead of --text; strata has no BPE decoder, so the final sample is
// then only meaningful as token ids (use --sample-len 0 to skip it).
#include <algorithm>
#include <strata/offload.h>
#include <strata/strata.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;

struct Options {
  std::string model;  // checkpoint, run directory or Hugging Face directory
  std::string text;   // fine-tuning text (last 10% is validation)
  std::string data, val;  // or token shards
  std::string out;    // where the adapters go
  std::string precision = "bf16";
  std::string targets = "qv";
  std::string recompute = "none";
  std::string offload;    // "", host or nvme: where the frozen base's params live
  std::string nvme_path;  // swap directory for --offload nvme
  int64_t pinned_mib = 64;
  int64_t rank = 8;
  float alpha = 8.0f;
  float lora_dropout = 0.05f;
  int64_t steps = 200;
  int64_t batch = 16;
  int64_t seq = 128;
  int64_t accum = 1;
  float lr = 2e-3f;
  int64_t warmup = 20;
  int64_t eval_batches = 20;
  int64_t sample_len = 300;
  float temperature = 0.8f;
  int64_t top_k = 40;
  uint64_t seed = 1337;
  int threads = 0;
  std::string prompt = "The ";
};

// The options, parsed by CLI11 (Debian's libcli11-dev): each value is converted and
// range-checked where it is parsed, so a bad one stops here with the flag named.
// CLI11's Range lets NaN through, hence Finite on the reals.
const CLI::Validator Finite([](std::string& s) { return std::isfinite(std::strtod(s.c_str(), nullptr)) ? "" : "not a finite number: " + s; }, "FINITE");

Options parse(int argc, char** argv) {
  Options o;
  CLI::App app("Fine-tunes LoRA adapters on a frozen model and saves them in PEFT's format.\n"
               "usage: finetune_lora --model PATH (--text FILE | --data GLOB --val GLOB) [options]", "finetune_lora");
  app.add_option("--model", o.model, "strata checkpoint, run directory (newest checkpoint) or Hugging Face directory")->required();
  app.add_option("--text", o.text, "fine-tuning text, byte tokens (last 10% is validation)");
  app.add_option("--data", o.data, "or llm.c-format token shards, with --val GLOB");
  app.add_option("--val", o.val, "validation shards (with --data)");
  app.add_option("--out", o.out, "save adapter_model.safetensors + adapter_config.json here");
  app.add_option("--precision", o.precision, "base and adapter working precision: fp32 | bf16")->capture_default_str()->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--targets", o.targets, "qv (query and value) | attention | all (every linear layer)")->capture_default_str()->check(CLI::IsMember({"qv", "attention", "all"}));
  app.add_option("--rank", o.rank, "adapter rank")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  app.add_option("--alpha", o.alpha, "scale alpha/rank")->capture_default_str()->check(Finite & CLI::Range(0.0f, 1e6f));
  app.add_option("--lora-dropout", o.lora_dropout, "dropout on the adapters' input")->capture_default_str()->check(Finite & CLI::Range(0.0f, 0.99f));
  app.add_option("--steps", o.steps, "optimizer steps")->capture_default_str()->check(CLI::Range(int64_t(1), int64_t(1) << 40));
  app.add_option("--batch", o.batch, "sequences per micro-batch")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--seq", o.seq, "sequence length")->capture_default_str()->check(CLI::Range(1, 1 << 24));
  app.add_option("--accum", o.accum, "micro-batches per step")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--lr", o.lr, "peak learning rate (warmup, then cosine)")->capture_default_str()->check(Finite & CLI::Range(0.0f, 10.0f));
  app.add_option("--warmup", o.warmup, "warmup steps")->capture_default_str()->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  app.add_option("--recompute", o.recompute, "none | selective | full | every-K")->capture_default_str();
  app.add_option("--offload", o.offload, "keep the frozen base's params on host | nvme, paged per layer (default: "
                                         "resident; the adapters always stay resident)")->check(CLI::IsMember({"host", "nvme"}));
  app.add_option("--nvme-path", o.nvme_path, "swap directory on a local drive (O_DIRECT) for --offload nvme");
  app.add_option("--pinned", o.pinned_mib, "pinned staging pool for --offload nvme, MiB")->capture_default_str()->check(CLI::Range(1, 1 << 24));
  app.add_option("--eval-batches", o.eval_batches, "validation batches")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--sample-len", o.sample_len, "bytes of the final sample")->capture_default_str()->check(CLI::Range(0, 1 << 24));
  app.add_option("--temperature", o.temperature, "sampling temperature")->capture_default_str()->check(Finite & CLI::Range(0.0f, 100.0f));
  app.add_option("--top-k", o.top_k, "sample from the K most likely bytes (0 = all)")->capture_default_str()->check(CLI::Range(0, 1 << 20));
  app.add_option("--prompt", o.prompt, "the sample's prompt")->capture_default_str();
  app.add_option("--seed", o.seed, "data order and dropout seed")->capture_default_str();
  app.add_option("--threads", o.threads, "worker threads (0: all cores)")->capture_default_str()->check(CLI::Range(0, 1024));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    std::exit(app.exit(e));
  }
  if (o.text.empty() == o.data.empty()) throw strata::Error("finetune_lora: give --text FILE or --data GLOB");
  if (!o.data.empty() && o.val.empty()) throw strata::Error("finetune_lora: --data needs --val");
  if ((o.offload == "nvme") != !o.nvme_path.empty())
    throw strata::Error("finetune_lora: --offload nvme and --nvme-path DIR go together");
  return o;
}

// The base from a checkpoint, a run directory or a Hugging Face directory: built from
// its config alone (offloaded, Init::deferred: never resident), its weights read
// later, unit by unit, through the Trainer into wherever it keeps them.
struct Base {
  std::unique_ptr<strata::Model> model;
  std::string source;
  std::function<void(strata::Trainer&)> load_weights;
};

Base open_base(const std::string& path, strata::Device& dev, strata::Precision p, strata::Model::Init init) {
  Base b;
  std::string ck;
  if (strata::is_checkpoint(path)) ck = path;
  else if (fs::is_directory(path) && !fs::is_regular_file(path + "/config.json")) ck = strata::latest_checkpoint(path);
  if (!ck.empty()) {
    b.model = std::make_unique<strata::Model>(strata::read_checkpoint_info(ck).config, dev, p, 0, init);
    b.source = "strata checkpoint " + ck;
    b.load_weights = [ck, m = b.model.get()](strata::Trainer& t) {
      strata::load_checkpoint(ck, *m, &t, strata::LoadScope::weights);
    };
    return b;
  }
  strata::HfLayout layout;
  b.model = std::make_unique<strata::Model>(strata::read_hf_config(path, &layout), dev, p, 0, init);
  b.source = std::string("Hugging Face ") + strata::hf_layout_name(layout) + " " + path;
  b.load_weights = [path, layout, m = b.model.get()](strata::Trainer& t) { strata::import_hf(*m, path, layout, &t); };
  return b;
}

float validate(strata::Trainer& trainer, strata::BatchLoader& val, int64_t batches) {
  val.reset();
  double sum = 0;
  const int64_t n = std::min(batches, val.num_batches());
  for (int64_t i = 0; i < n; ++i) sum += trainer.evaluate(val.next().batch());
  return float(sum / double(n));
}

double mib(size_t bytes) { return double(bytes) / (1024.0 * 1024.0); }

int run(const Options& o) {
  if (o.threads > 0) strata::set_num_threads(o.threads);
  auto device = strata::Device::cpu(0);
  const strata::Precision precision = strata::precision_from_string(o.precision);
  Base base = open_base(o.model, *device, precision,
                        o.offload.empty() ? strata::Model::Init::resident : strata::Model::Init::deferred);
  std::unique_ptr<strata::Model>& model = base.model;
  const strata::ModelConfig& config = model->config();
  std::printf("base: %s, %s (%s)\n", config.describe().c_str(), strata::precision_name(precision),
              base.source.c_str());

  // ---- data
  std::string train_glob = o.data, val_glob = o.val, scratch;
  if (!o.text.empty()) {
    char tmpl[] = "/tmp/strata-finetune-lora-XXXXXX";
    if (!mkdtemp(tmpl)) throw strata::Error("finetune_lora: cannot create a scratch directory in /tmp");
    scratch = tmpl;
    strata::PrepareResult prep = strata::prepare_text({o.text}, scratch + "/text", 0.1);
    std::printf("data: %s -> %lld training and %lld validation bytes\n", o.text.c_str(),
                (long long)prep.train_tokens, (long long)prep.val_tokens);
    train_glob = prep.train_path;
    val_glob = prep.val_path;
  }
  const int64_t seq = std::min(o.seq, config.max_seq);
  auto train_data = std::make_shared<strata::TokenDataset>(train_glob);
  train_data->validate_tokens(config.vocab_size);
  strata::LoaderOptions lo;
  lo.batch_size = o.batch;
  lo.seq_len = seq;
  lo.seed = o.seed;
  strata::BatchLoader train(train_data, lo);
  lo.shuffle = false;
  strata::BatchLoader val(std::make_shared<strata::TokenDataset>(val_glob), lo);

  // ---- adapters and trainer: the Lora freezes the base; the Trainer then trains it alone
  model->set_recompute(strata::RecomputePolicy::parse(o.recompute, config.n_layers));
  strata::LoraOptions lopt;
  lopt.targets = strata::lora_targets_from_string(o.targets);
  lopt.rank = o.rank;
  lopt.alpha = o.alpha;
  lopt.dropout = o.lora_dropout;
  lopt.seed = o.seed;
  strata::Lora lora(*model, lopt);
  strata::TrainOptions to;
  to.grad_accum = o.accum;
  to.adamw.lr = o.lr;
  to.adamw.weight_decay = 0.0f;
  to.schedule.kind = strata::ScheduleKind::cosine;
  to.schedule.warmup_steps = o.warmup;
  to.schedule.total_steps = o.steps;
  to.seed = o.seed;
  std::unique_ptr<strata::Trainer> owned;
  if (o.offload.empty()) {
    owned = std::make_unique<strata::Trainer>(*model, to);
  } else {  // the base's params move to their tier; nothing else of it is stored
    strata::offload::OffloadOptions off;
    off.params = o.offload == "nvme" ? strata::offload::Tier::nvme : strata::offload::Tier::host;
    if (!o.nvme_path.empty()) off.nvme_paths = {o.nvme_path};
    off.pinned_bytes = size_t(o.pinned_mib) << 20;
    owned = std::make_unique<strata::Trainer>(*model, to, off);
    std::printf("offload: frozen base params on %s %s\n", o.offload.c_str(), o.nvme_path.c_str());
  }
  strata::Trainer& trainer = *owned;
  base.load_weights(trainer);
  std::printf("lora: targets %s, rank %lld, alpha %g (scale %g), dropout %g: %lld trainable parameters (%.3f%% of %lld)\n",
              strata::lora_targets_name(lopt.targets), (long long)lopt.rank, lopt.alpha, lora.scale(), lopt.dropout,
              (long long)lora.num_parameters(), 100.0 * double(lora.num_parameters()) / double(model->num_parameters()),
              (long long)model->num_parameters());

  const float before = validate(trainer, val, o.eval_batches);
  std::printf("validation loss before fine-tuning: %.4f\n", before);
  std::fflush(stdout);

  const auto t0 = std::chrono::steady_clock::now();
  strata::StepReport r;
  for (int64_t s = 0; s < o.steps; ++s) {
    std::vector<strata::TokenBatch> micro;
    std::vector<strata::Batch> views;
    for (int64_t k = 0; k < o.accum; ++k) micro.push_back(train.next());
    for (auto& b : micro) views.push_back(b.batch());
    r = trainer.train_step(views);
    if ((s + 1) % 20 == 0 || s == 0 || s + 1 == o.steps)
      std::printf("step %4lld/%lld | loss %.4f | lr %.2e | norm %.3f | %6.0f tok/s\n", (long long)r.step,
                  (long long)o.steps, r.loss, r.lr, r.grad_norm, r.tokens_per_second);
    std::fflush(stdout);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const float after = validate(trainer, val, o.eval_batches);
  std::printf("validation loss after %lld steps (%.0fs): %.4f (before %.4f)\n", (long long)o.steps, seconds, after,
              before);

  const strata::ZeroMemory mem = trainer.memory();
  std::printf("memory: base params %.2f MiB (frozen) + adapters %.3f MiB; grads %.3f MiB; optimizer %.3f MiB;\n"
              "        the frozen base saves %.2f MiB of gradients and optimizer state\n",
              mib(mem.params - lora.param_bytes()), mib(lora.param_bytes()), mib(mem.grads), mib(mem.optimizer),
              mib(r.frozen_bytes_saved));
  std::printf("tiers:  device %.2f MiB, pinned %.2f MiB, nvme %.2f MiB (read %.2f GB/s), host RSS %.2f MiB\n",
              mib(r.device_bytes), mib(r.pinned_bytes), mib(r.nvme_bytes), r.nvme_read_gbps, mib(r.host_bytes));

  if (!o.out.empty()) {
    lora.save(o.out, base.source);
    std::printf("adapters: %s/adapter_model.safetensors + adapter_config.json\n", o.out.c_str());
  }
  // Merged weights give the same model (within the working precision's rounding).
  // Merging rewrites the base in place, so it needs the base resident.
  if (o.offload.empty()) {
    lora.merge();
    const float merged = validate(trainer, val, o.eval_batches);
    std::printf("validation loss with the adapters merged into the base: %.4f\n", merged);
    lora.unmerge();
  }
  if (!scratch.empty()) fs::remove_all(scratch);

  strata::SampleOptions so;
  so.max_new_tokens = o.sample_len;
  so.temperature = o.temperature;
  so.top_k = o.top_k;
  so.seed = o.seed;
  std::vector<uint16_t> p16 = strata::encode_bytes(o.prompt);
  std::vector<int32_t> prompt(p16.begin(), p16.end());
  // Generation keeps every position in a KV cache of max_seq: the sample ends there.
  so.max_new_tokens = std::min<int64_t>(so.max_new_tokens, model->config().max_seq - int64_t(prompt.size()));
  if (o.sample_len <= 0) return 0;
  std::vector<int32_t> out = strata::sample(*model, prompt, so);
  std::vector<uint16_t> out16(out.begin(), out.end());
  std::printf("\n---- sample (temperature %.2f, top-k %lld) ----\n%s%s\n----\n", o.temperature, (long long)o.top_k,
              o.prompt.c_str(), strata::decode_bytes(out16).c_str());
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
