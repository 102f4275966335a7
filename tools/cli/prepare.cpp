// `strata prepare`: text files -> token shards (bytes, a tokenizer.json or a tokenizer.model)
// <prefix>_train.bin and <prefix>_val.bin, ready for TokenDataset. With no files, the fortunes
// corpus; with --instructions, prompt/response pairs and their loss masks.
// Invariant: nothing is written unless every argument and input file is good.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "args.h"
#include "commands.h"
#include "strata/data.h"
#include "strata/error.h"

namespace {

int prepare_instructions(const std::string& jsonl, const std::string& prefix, double fraction,
                         const std::string& tokenizer_path, const std::string& eos_token) {
  const strata::Tokenizer tokenizer = strata::Tokenizer::from_file(tokenizer_path);
  std::optional<uint32_t> eos = eos_token.empty() ? tokenizer.eos_id() : tokenizer.token_to_id(eos_token);
  if (!eos) {
    throw strata::Error(eos_token.empty()
                            ? tokenizer_path + " names no end-of-sequence token; give one with --eos TOKEN "
                                               "(e.g. --eos '<|endoftext|>')"
                            : "--eos '" + eos_token + "' is not a token of " + tokenizer_path);
  }
  const strata::PrepareResult r = strata::prepare_instructions(jsonl, prefix, fraction, tokenizer, *eos);
  std::printf("%s -> %s (%lld tokens), %s (%lld tokens), loss on the responses (eos %u)\n",
              jsonl.c_str(), r.train_path.c_str(), static_cast<long long>(r.train_tokens),
              r.val_path.c_str(), static_cast<long long>(r.val_tokens), *eos);
  return 0;
}

}  // namespace

int prepare_main(int argc, char** argv) {
  std::string prefix, tokenizer_path, instructions, eos_token;
  double fraction = 0.1;
  std::vector<std::string> inputs;
  cli::Args args("strata prepare --out PREFIX [--tokenizer FILE] [--val-fraction F] [FILE...]\n"
                 "       strata prepare --out PREFIX --instructions FILE.jsonl --tokenizer FILE [--eos TOKEN]",
                 "Tokenizes text files (byte by byte, vocabulary 256, or with a Hugging Face\n"
                 "tokenizer.json or SentencePiece tokenizer.model) and writes the llm.c-format\n"
                 "shards PREFIX_train.bin and PREFIX_val.bin (uint32 tokens when the vocabulary\n"
                 "passes 65,536). The last fraction F of each file goes to validation, the rest\n"
                 "to training. With --instructions, a JSONL file of {\"prompt\", \"response\"}\n"
                 "pairs: each example is prompt (with the tokenizer's bos), response, eos; the\n"
                 "loss is on the response only (PREFIX_train.lossmask beside the shard), and\n"
                 "the last fraction F of the examples goes to validation.");
  args.option("out", &prefix, "PREFIX", "output prefix, e.g. data/fortunes (required)");
  args.option("tokenizer", &tokenizer_path, "FILE",
              "a tokenizer.json (byte-level BPE) or a SentencePiece tokenizer.model; default: bytes");
  args.option("instructions", &instructions, "FILE", "a JSONL file of prompt/response pairs");
  args.option("eos", &eos_token, "TOKEN",
              "the token ending each response; default: the tokenizer's own (a tokenizer.model's </s>)");
  args.option("val-fraction", &fraction, "F", "fraction of each file held out, in [0, 1)", 0, 1);
  args.positionals(&inputs, "FILE", std::string("text files; none: the fortunes corpus (") + strata::kFortunesDir + ")");
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (prefix.empty()) return args.usage_error("--out PREFIX is required");
  if (fraction >= 1) return args.usage_error("--val-fraction: 1 is out of range (expected a number in [0, 1))");
  if (!instructions.empty() && !inputs.empty())
    return args.usage_error("--instructions takes the examples from its JSONL file; give no text FILEs with it");
  if (!instructions.empty() && tokenizer_path.empty())
    return args.usage_error("--instructions needs --tokenizer FILE (a tokenizer.json or tokenizer.model)");
  if (instructions.empty() && !eos_token.empty())
    return args.usage_error("--eos is for --instructions data only");
  // An empty input would give empty shards that fail only when training opens them.
  uintmax_t bytes = 0;
  for (const std::string& f : inputs) {
    std::error_code ec;
    const uintmax_t n = std::filesystem::file_size(f, ec);
    if (!ec) bytes += n;
    else if (std::filesystem::exists(f)) return args.usage_error(f + ": " + ec.message());
  }
  if (!inputs.empty() && bytes == 0) return args.usage_error("the input files hold no text; nothing to prepare");

  try {
    if (!instructions.empty()) return prepare_instructions(instructions, prefix, fraction, tokenizer_path, eos_token);
    if (inputs.empty()) inputs = strata::default_corpus_files();
    const strata::Tokenizer tokenizer = tokenizer_path.empty()
                                            ? strata::Tokenizer::bytes()
                                            : strata::Tokenizer::from_file(tokenizer_path);
    const strata::PrepareResult r = strata::prepare_text(inputs, prefix, fraction, tokenizer);
    if (r.train_tokens == 0) {
      std::remove(r.train_path.c_str());
      std::remove(r.val_path.c_str());
      throw strata::Error("no training tokens were written to " + r.train_path + "; give more text or a smaller "
                          "--val-fraction");
    }
    std::printf("%zu file(s) -> %s (%lld tokens), %s (%lld tokens)\n", inputs.size(),
                r.train_path.c_str(), static_cast<long long>(r.train_tokens), r.val_path.c_str(),
                static_cast<long long>(r.val_tokens));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata prepare: %s\n", e.what());
    return 1;
  }
}
