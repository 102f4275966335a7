// `strata sample`: generate from a model with temperature and top-k. Byte-level
// models (vocabulary 256) read and print text; others take and print token ids.
// Invariant: the same seed gives the same sample (counter-based RNG).
#include <cstdio>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "model_source.h"

int sample_main(int argc, char** argv) {
  std::string model_path, prompt = "\n", prompt_ids;
  int64_t tokens = 200, top_k = 40, seed = 1, threads = 0;
  double temperature = 0.8;
  cli::Args args("strata sample --model PATH [options]", "Generates text (byte-level models) or token ids.");
  args.option("model", &model_path, "PATH", "strata checkpoint, run directory, or Hugging Face directory (required)");
  args.option("prompt", &prompt, "TEXT", "prompt text, byte-level models");
  args.option("prompt-ids", &prompt_ids, "IDS", "prompt as comma-separated token ids (any vocabulary)");
  args.option("tokens", &tokens, "N", "tokens to generate");
  args.option("temperature", &temperature, "X", "sampling temperature (0: greedy)");
  args.option("top-k", &top_k, "K", "sample among the K most likely tokens (0: all)");
  args.option("seed", &seed, "S", "sampling seed");
  args.option("threads", &threads, "N", "worker threads (0: all cores)");
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (model_path.empty()) return args.usage_error("--model is required");
  try {
    if (threads > 0) strata::set_num_threads(int(threads));
    cli::LoadedModel lm = cli::load_model(model_path, "", true);
    const bool bytes = lm.model->config().vocab_size == strata::kByteVocabSize;
    std::vector<int32_t> in;
    if (!prompt_ids.empty()) {
      std::stringstream s(prompt_ids);
      for (std::string id; std::getline(s, id, ',');) in.push_back(int32_t(std::stol(id)));
    } else if (bytes) {
      for (uint16_t t : strata::encode_bytes(prompt)) in.push_back(t);
    } else {
      return args.usage_error("this model's vocabulary is not byte-level; give --prompt-ids");
    }
    strata::SampleOptions so;
    so.max_new_tokens = tokens;
    so.temperature = float(temperature);
    so.top_k = top_k;
    so.seed = uint64_t(seed);
    const std::vector<int32_t> out = strata::sample(*lm.model, in, so);
    if (bytes && prompt_ids.empty()) {
      std::vector<uint16_t> all;
      for (int32_t t : in) all.push_back(uint16_t(t));
      for (int32_t t : out) all.push_back(uint16_t(t));
      std::printf("%s\n", strata::decode_bytes(all).c_str());
    } else {
      for (size_t i = 0; i < out.size(); ++i) std::printf("%s%d", i ? "," : "", out[i]);
      std::printf("\n");
    }
    return 0;
  } catch (const std::exception& e) {
    return cli::fail("sample", e);
  }
}
