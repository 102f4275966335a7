// `strata convert`: weights between the strata checkpoint layout and the Hugging
// Face GPT-2 and LLaMA layouts, in f32 or bf16.
// Invariant: the output is written completely or not at all (strata checkpoints by
// rename; HF files by writer-side rename), and the input is never modified.
#include <cstdio>

#include "args.h"
#include "commands.h"
#include "model_source.h"

int convert_main(int argc, char** argv) {
  std::string from, to, format = "strata", dtype = "f32", device = "cpu";
  cli::Args args("strata convert --from PATH --to DIR [--format F] [--dtype D]",
                 "Converts weights. PATH: a strata checkpoint, a run directory (its newest checkpoint), or a\n"
                 "Hugging Face directory (config.json + model.safetensors, gpt2 or llama).");
  args.option("from", &from, "PATH", "the source (required)");
  args.option("to", &to, "DIR", "the output directory (required; for strata, must not exist)");
  args.choice("format", &format, {"strata", "gpt2", "llama", "hf"}, "output layout (hf: gpt2 or llama, whichever fits the model)");
  args.choice("dtype", &dtype, {"f32", "bf16"}, "dtype of the written weights");
  args.option("device", &device, "DEV", "cpu | cuda:N (where the model is loaded)");
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (from.empty() || to.empty()) return args.usage_error("--from and --to are required");
  try {
    const strata::DType dt = strata::dtype_from_string(dtype);
    if (dt != strata::DType::f32 && dt != strata::DType::bf16) return args.usage_error("--dtype must be f32 or bf16");
    cli::LoadedModel lm = cli::load_model(from, "fp32", false, device);
    if (format == "strata") {
      strata::save_checkpoint(to, *lm.model, nullptr, {}, {dt, false});
    } else {
      const strata::HfLayout layout =
          format == "hf" ? strata::hf_layout_for(lm.model->config()) : strata::hf_layout_from_string(format);
      strata::export_hf(*lm.model, to, layout, dt);
      format = strata::hf_layout_name(layout);
    }
    std::printf("%s -> %s (%s, %s)\n", lm.source.c_str(), to.c_str(), format.c_str(), strata::dtype_name(dt));
    return 0;
  } catch (const std::exception& e) {
    return cli::fail("convert", e);
  }
}
