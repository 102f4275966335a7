// `strata sample`: generate from a model with temperature and top-k. Byte-level
// models (vocabulary 256) read and print text; others take and print token ids.
// Invariant: the same seed gives the same sample (counter-based RNG).
#include <cstdio>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "model_source.h"

int sample_main(int argc, char** argv) {
  std::string model_path, prompt = "\n", prompt_ids, device = "cpu";
  int64_t tokens = 200, top_k = 40, seed = 1, threads = 0;
  double temperature = 0.8;
  cli::Args args("strata sample --model PATH [options]", "Generates text (byte-level models) or token ids.");
  args.option("model", &model_path, "PATH", "strata checkpoint, run directory, or Hugging Face directory (required)");
  args.option("prompt", &prompt, "TEXT", "prompt text, byte-level models");
  args.option("prompt-ids", &prompt_ids, "IDS", "prompt as comma-separated token ids (any vocabulary)");
  args.option("tokens", &tokens, "N", "tokens to generate", 1, 1 << 24);
  args.option("temperature", &temperature, "X", "sampling temperature (0: greedy)", 0, 100);
  args.option("top-k", &top_k, "K", "sample among the K most likely tokens (0: all)", 0, int64_t(1) << 31);
  args.option("seed", &seed, "S", "sampling seed", 0);
  args.option("device", &device, "DEV", "cpu | cuda:N");
  args.option("threads", &threads, "N", "worker threads (0: all cores)", 0, 1024);
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (model_path.empty()) return args.usage_error("--model is required");
  std::vector<int32_t> ids;
  if (args.given("prompt-ids")) {
    std::stringstream s(prompt_ids);
    int n = 0;
    for (std::string id; std::getline(s, id, ',');) {
      int64_t x = 0;
      std::string error;
      if (!cli::parse_int(id, 0, INT32_MAX, x, error))
        return args.usage_error("--prompt-ids '" + prompt_ids + "': id " + std::to_string(n + 1) + ": " + error);
      ids.push_back(int32_t(x));
      ++n;
    }
    if (ids.empty() || prompt_ids.back() == ',')
      return args.usage_error("--prompt-ids '" + prompt_ids + "': expected token ids separated by commas, e.g. 1,2,3");
  }
  try {
    if (threads > 0) strata::set_num_threads(int(threads));
    cli::LoadedModel lm = cli::load_model(model_path, "", true, device);
    const bool bytes = lm.model->config().vocab_size == strata::kByteVocabSize;
    std::vector<int32_t> in;
    if (!ids.empty()) {
      in = ids;
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
    if (bytes && ids.empty()) {
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
