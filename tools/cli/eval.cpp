// `strata eval`: loss and perplexity of a model on token shards; optionally the
// gradients or logits of the first batch as safetensors (for comparing with other
// frameworks), with LoRA adapters (PEFT files) applied when --lora names them.
// Invariant: evaluation has no dropout and never changes the weights.
#include <cmath>
#include <algorithm>
#include <cstdio>
#include <memory>

#include "args.h"
#include "commands.h"
#include "model_source.h"

namespace {
// Logits of every position in one causal forward (not one forward per prefix, which
// costs T forwards of growing length).
void dump_logits(strata::Model& model, strata::TokenBatch& b, const std::string& path) {
  const int64_t B = b.batch_size, T = b.seq_len, V = model.config().vocab_size;
  std::vector<float> logits = model.logits(b.batch());
  strata::save_safetensors(path, {{"logits", strata::TensorView(logits.data(), strata::DType::f32, {B, T, V})},
                                  {"inputs", strata::TensorView(b.inputs.data(), strata::DType::i32, {B, T})}},
                           {{"format", "pt"}});
  std::printf("logits of the first batch -> %s\n", path.c_str());
}
}  // namespace

int eval_main(int argc, char** argv) {
  std::string model_path, data, grads, logits_path, precision, lora_dir, device = "cpu";
  int64_t batch = 8, seq = 0, batches = 0, threads = 0;
  cli::Args args("strata eval --model PATH --data GLOB [options]",
                 "Mean loss and perplexity over consecutive windows of the data (no dropout).");
  args.option("model", &model_path, "PATH", "strata checkpoint, run directory, or Hugging Face directory (required)");
  args.option("data", &data, "GLOB", "token shards (required)");
  args.option("batch", &batch, "B", "sequences per batch", 1, 1 << 20);
  args.option("seq", &seq, "T", "sequence length (0: the model's max_seq)", 0, 1 << 24);
  args.option("batches", &batches, "N", "batches to evaluate (0: one pass over the data)", 0);
  args.choice("precision", &precision, {"fp32", "bf16", "fp16"}, "precision (default: the checkpoint's)");
  args.option("device", &device, "DEV", "cpu | cuda:N");
  args.option("dump-grads", &grads, "FILE", "write the gradients of the first batch (f32) as safetensors");
  args.option("dump-logits", &logits_path, "FILE", "write the logits (B, T, V) f32 of the first batch as safetensors");
  args.option("lora", &lora_dir, "DIR", "apply the LoRA adapters in DIR (adapter_config.json + adapter_model.safetensors)");
  args.option("threads", &threads, "N", "worker threads (0: all cores)", 0, 1024);
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (model_path.empty() || data.empty()) return args.usage_error("--model and --data are required");
  if (!lora_dir.empty() && !grads.empty())
    return args.usage_error("--dump-grads needs the base's gradients, which a LoRA-adapted (frozen) model has none of");
  try {
    if (threads > 0) strata::set_num_threads(int(threads));
    cli::LoadedModel lm = cli::load_model(model_path, precision, true, device);
    strata::Model& model = *lm.model;
    std::unique_ptr<strata::Lora> lora;
    if (!lora_dir.empty()) {
      lora = std::make_unique<strata::Lora>(model, strata::read_lora_options(lora_dir));
      lora->load(lora_dir);
      std::printf("lora: %s (%s, rank %lld)\n", lora_dir.c_str(), strata::lora_targets_name(lora->options().targets),
                  (long long)lora->options().rank);
    }
    auto dataset = std::make_shared<strata::TokenDataset>(data);
    dataset->validate_tokens(model.config().vocab_size);
    strata::LoaderOptions lo;
    lo.batch_size = batch;
    lo.seq_len = seq > 0 ? seq : model.config().max_seq;
    lo.shuffle = false;
    strata::BatchLoader loader(dataset, lo);
    const int64_t n = batches > 0 ? std::min(batches, loader.num_batches()) : loader.num_batches();
    if (n < 1) throw strata::Error("the data holds no full batch of " + std::to_string(batch) + " x " +
                                   std::to_string(lo.seq_len + 1) + " tokens; lower --batch or --seq");
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      strata::TokenBatch b = loader.next();
      if (i == 0 && !grads.empty()) {
        model.zero_grad();
        model.forward(b.batch(), strata::StepKey{}, true);  // dropout is zeroed: deterministic
        model.backward(1.0f);
        std::vector<strata::NamedTensor> tensors;
        for (const strata::ParamInfo& p : model.parameters())
          tensors.push_back({p.name, model.parameter_grad(p.name)});
        strata::save_safetensors(grads, tensors, {{"format", "pt"}, {"strata.source", lm.source}});
        std::printf("gradients of the first batch -> %s (%zu tensors)\n", grads.c_str(), tensors.size());
      }
      if (i == 0 && !logits_path.empty()) dump_logits(model, b, logits_path);
      sum += model.forward(b.batch(), strata::StepKey{}, false);
    }
    const double loss = sum / double(n);
    std::printf("model: %s\n%lld batches of %lld x %lld tokens\nloss %.6f\nperplexity %.4f\n", lm.source.c_str(),
                (long long)n, (long long)batch, (long long)lo.seq_len, loss, std::exp(loss));
    return 0;
  } catch (const std::exception& e) {
    return cli::fail("eval", e);
  }
}
