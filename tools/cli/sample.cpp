// `strata sample`: generate from a model with a KV cache (temperature, top-k, top-p,
// stop tokens), streaming text as it is generated. Text goes through a tokenizer:
// --tokenizer FILE, else the model directory's tokenizer.json or tokenizer.model, else the byte
// tokenizer for byte-level models (vocabulary 256); without one, prompts and output
// are token ids.
// Invariant: the same seed gives the same sample (counter-based RNG; row r keyed by r).
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "model_source.h"
#include "strata/tokenizer.h"

namespace {

// "1,2,3" -> ids; "" on success, the error otherwise.
std::string parse_ids(const std::string& text, std::vector<int32_t>& ids) {
  std::stringstream s(text);
  int n = 0;
  for (std::string id; std::getline(s, id, ',');) {
    int64_t x = 0;
    std::string error;
    if (!cli::parse_int(id, 0, INT32_MAX, x, error)) return "id " + std::to_string(n + 1) + ": " + error;
    ids.push_back(int32_t(x));
    ++n;
  }
  if (ids.empty() || text.back() == ',') return "expected token ids separated by commas, e.g. 1,2,3";
  return "";
}

// "\n" and "\t" in a --prompt or --stop written on a shell line.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == 'n' || s[i + 1] == 't' || s[i + 1] == '\\')) {
      out += s[i + 1] == 'n' ? '\n' : s[i + 1] == 't' ? '\t' : '\\';
      ++i;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::optional<strata::Tokenizer> find_tokenizer(const std::string& flag, const std::string& model_path,
                                                int64_t vocab) {
  if (!flag.empty()) return strata::Tokenizer::from_file(flag);
  std::error_code ec;
  const std::filesystem::path dir(model_path);
  for (const char* name : {"tokenizer.json", "tokenizer.model"})  // an HF export carries one of them
    if (std::filesystem::is_directory(dir, ec) && std::filesystem::exists(dir / name, ec))
      return strata::Tokenizer::from_file((dir / name).string());
  if (vocab == strata::kByteVocabSize) return strata::Tokenizer::bytes();
  return std::nullopt;
}

}  // namespace

int sample_main(int argc, char** argv) {
  std::string model_path, device = "cpu", precision, tokenizer_path;
  std::vector<std::string> prompts, prompt_ids, stops;
  int64_t tokens = 200, top_k = 40, seed = 1, threads = 0, batch = 1;
  double temperature = 0.8, top_p = 1.0;
  cli::Args args("strata sample --model PATH [options]",
                 "Generates text (or token ids) with a KV cache: the prompt is run once, then one token per step.");
  args.option("model", &model_path, "PATH", "strata checkpoint, run directory, or Hugging Face directory (required)");
  args.list("prompt", &prompts, "TEXT",
            "prompt text (\\n for a newline); repeat for a batch: prompts of different lengths are left-padded, "
            "and each gives what it gives alone (default: a newline)");
  args.list("prompt-ids", &prompt_ids, "IDS", "prompt as comma-separated token ids (any vocabulary); repeat for a batch");
  args.option("batch", &batch, "N", "samples per prompt, drawn together (row r uses seed stream r)", 1, 1024);
  args.option("tokens", &tokens, "N", "at most this many new tokens per sample", 1, 1 << 24);
  args.option("temperature", &temperature, "X", "sampling temperature (0: greedy)", 0, 100);
  args.option("top-k", &top_k, "K", "sample among the K most likely tokens (0: all)", 0, int64_t(1) << 31);
  args.option("top-p", &top_p, "P", "then among the fewest whose probability reaches P (1: all)", 1e-9, 1);
  args.list("stop", &stops, "TOKEN",
            "stop a sample after this token: an id, or text that is one token of the tokenizer (\\n allowed)");
  args.option("seed", &seed, "S", "sampling seed", 0);
  args.option("precision", &precision, "P", "fp32 | bf16 | fp16 (default: the checkpoint's; fp32 for Hugging Face)");
  args.option("tokenizer", &tokenizer_path, "FILE",
              "tokenizer.json or tokenizer.model for text (default: the model directory's, else bytes for a "
              "256-token vocabulary)");
  args.option("device", &device, "DEV", "cpu | cuda:N");
  args.option("threads", &threads, "N", "worker threads (0: all cores)", 0, 1024);
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (model_path.empty()) return args.usage_error("--model is required");
  std::vector<std::vector<int32_t>> id_rows;
  if (args.given("prompt-ids")) {
    if (args.given("prompt")) return args.usage_error("give --prompt or --prompt-ids, not both");
    for (const std::string& p : prompt_ids) {
      std::vector<int32_t> ids;
      if (std::string e = parse_ids(p, ids); !e.empty()) return args.usage_error("--prompt-ids '" + p + "': " + e);
      id_rows.push_back(ids);
    }
  }
  if (prompts.empty()) prompts = {"\n"};
  try {
    if (threads > 0) strata::set_num_threads(int(threads));
    cli::LoadedModel lm = cli::load_model(model_path, precision, true, device);
    const int64_t vocab = lm.model->config().vocab_size;
    const std::optional<strata::Tokenizer> tok = find_tokenizer(tokenizer_path, model_path, vocab);
    std::vector<std::vector<int32_t>> rows;
    if (!id_rows.empty()) {
      rows = id_rows;
    } else if (!tok) {
      return args.usage_error("no tokenizer for this model's " + std::to_string(vocab) +
                              "-token vocabulary; give --tokenizer FILE or --prompt-ids");
    } else {
      for (const std::string& p : prompts) {
        std::vector<int32_t> r;
        for (uint32_t t : tok->encode(unescape(p))) r.push_back(int32_t(t));
        if (r.empty()) return args.usage_error("--prompt '" + p + "' encodes to no tokens");
        rows.push_back(r);
      }
    }
    strata::SampleOptions so;
    for (const std::string& s : stops) {
      int64_t id = 0;
      std::string error;
      if (cli::parse_int(s, 0, INT32_MAX, id, error)) {
        so.stop.push_back(int32_t(id));
        continue;
      }
      if (!tok) return args.usage_error("--stop '" + s + "': not a token id, and there is no tokenizer for text");
      const std::vector<uint32_t> enc = tok->encode(unescape(s));
      if (enc.size() != 1)
        return args.usage_error("--stop '" + s + "' is " + std::to_string(enc.size()) +
                                " tokens; a stop must be a single token (give its id)");
      so.stop.push_back(int32_t(enc[0]));
    }
    std::vector<std::vector<int32_t>> all;
    for (int64_t b = 0; b < batch; ++b) all.insert(all.end(), rows.begin(), rows.end());
    so.max_new_tokens = tokens;
    so.temperature = float(temperature);
    so.top_k = top_k;
    so.top_p = float(top_p);
    so.seed = uint64_t(seed);
    const bool text = tok && id_rows.empty();
    // One sample streams as it is generated; a batch prints each sample at the end.
    std::optional<strata::Tokenizer::Stream> stream;
    if (text && all.size() == 1) {
      stream.emplace(*tok);
      std::string head;
      for (int32_t t : all[0]) head += stream->push(uint32_t(t));
      std::fputs(head.c_str(), stdout);
      std::fflush(stdout);
      so.on_token = [&](int64_t, int32_t t) {
        std::fputs(stream->push(uint32_t(t)).c_str(), stdout);
        std::fflush(stdout);
      };
    }
    const std::vector<std::vector<int32_t>> out = strata::generate(*lm.model, all, so);
    if (stream) {
      std::printf("%s\n", stream->finish().c_str());
      return 0;
    }
    for (size_t r = 0; r < out.size(); ++r) {
      if (out.size() > 1) std::printf("--- sample %zu\n", r);
      if (text) {
        std::vector<uint32_t> seq(all[r].begin(), all[r].end());
        seq.insert(seq.end(), out[r].begin(), out[r].end());
        std::printf("%s\n", tok->decode(seq).c_str());
      } else {
        for (size_t i = 0; i < out[r].size(); ++i) std::printf("%s%d", i ? "," : "", out[r][i]);
        std::printf("\n");
      }
    }
    return 0;
  } catch (const std::exception& e) {
    return cli::fail("sample", e);
  }
}
