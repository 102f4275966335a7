// `strata convert`: weights between the strata checkpoint layout and the Hugging
// Face GPT-2 and LLaMA layouts, in f32 or bf16; HF exports optionally sharded, with the
// tokenizer files beside them.
// Invariant: the output is written completely or not at all (strata checkpoints by
// rename; HF files by writer-side rename), and the input is never modified.
#include <cstdio>
#include <filesystem>

#include "args.h"
#include "commands.h"
#include "model_source.h"

namespace {

// An HF export carries its tokenizer: --tokenizer FILE (checked by loading it), else the
// tokenizer files of the source directory, copied beside the weights.
void copy_tokenizer(const std::string& from, const std::string& to, const std::string& tokenizer) {
  namespace fs = std::filesystem;
  if (!tokenizer.empty()) {
    const strata::Tokenizer t = strata::Tokenizer::from_file(tokenizer);
    const bool spm = t.kind() == strata::Tokenizer::Kind::sentencepiece;
    fs::copy_file(tokenizer, to + (spm ? "/tokenizer.model" : "/tokenizer.json"), fs::copy_options::overwrite_existing);
    return;
  }
  if (!fs::is_directory(from)) return;
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    if (fs::exists(from + "/" + name))
      fs::copy_file(from + "/" + name, to + "/" + name, fs::copy_options::overwrite_existing);
}

}  // namespace

int convert_main(int argc, char** argv) {
  std::string from, to, format = "strata", dtype = "f32", device = "cpu", tokenizer;
  double max_shard_mb = 0;
  cli::Args args("strata convert --from PATH --to DIR [--format F] [--dtype D]",
                 "Converts weights. PATH: a strata checkpoint, a run directory (its newest checkpoint), or a\n"
                 "Hugging Face directory (config.json + model.safetensors or a sharded index, gpt2 or llama).");
  args.option("from", &from, "PATH", "the source (required)");
  args.option("to", &to, "DIR", "the output directory (required; for strata, must not exist)");
  args.choice("format", &format, {"strata", "gpt2", "llama", "hf"}, "output layout (hf: gpt2 or llama, whichever fits the model)");
  args.choice("dtype", &dtype, {"f32", "bf16"}, "dtype of the written weights");
  args.option("device", &device, "DEV", "cpu | cuda:N (where the model is loaded)");
  args.option("max-shard-size", &max_shard_mb, "MB",
              "HF formats: shards of at most MB MiB and model.safetensors.index.json (0: one file)", 0, 1e9);
  args.option("tokenizer", &tokenizer, "FILE",
              "HF formats: a tokenizer.json or tokenizer.model to copy beside the weights "
              "(default: the source directory's tokenizer files)");
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (from.empty() || to.empty()) return args.usage_error("--from and --to are required");
  if (format == "strata" && (max_shard_mb > 0 || !tokenizer.empty()))
    return args.usage_error("--max-shard-size and --tokenizer are for the HF formats (--format hf, gpt2 or llama)");
  try {
    const strata::DType dt = strata::dtype_from_string(dtype);
    if (dt != strata::DType::f32 && dt != strata::DType::bf16) return args.usage_error("--dtype must be f32 or bf16");
    cli::LoadedModel lm = cli::load_model(from, "fp32", false, device);
    if (format == "strata") {
      strata::save_checkpoint(to, *lm.model, nullptr, {}, {dt, false});
    } else {
      const strata::HfLayout layout =
          format == "hf" ? strata::hf_layout_for(lm.model->config()) : strata::hf_layout_from_string(format);
      strata::export_hf(*lm.model, to, layout, dt, uint64_t(max_shard_mb * double(1 << 20)));
      copy_tokenizer(from, to, tokenizer);
      format = strata::hf_layout_name(layout);
    }
    std::printf("%s -> %s (%s, %s)\n", lm.source.c_str(), to.c_str(), format.c_str(), strata::dtype_name(dt));
    return 0;
  } catch (const std::exception& e) {
    return cli::fail("convert", e);
  }
}
