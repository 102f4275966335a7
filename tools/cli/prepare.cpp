// `strata prepare`: text files -> token shards (bytes or a tokenizer.json) <prefix>_train.bin and
// <prefix>_val.bin, ready for TokenDataset. With no files, the fortunes corpus.
// Invariant: nothing is written unless every argument and input file is good.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "args.h"
#include "commands.h"
#include "strata/data.h"
#include "strata/error.h"

int prepare_main(int argc, char** argv) {
  std::string prefix, tokenizer_path;
  double fraction = 0.1;
  std::vector<std::string> inputs;
  cli::Args args("strata prepare --out PREFIX [--tokenizer FILE] [--val-fraction F] [FILE...]",
                 "Tokenizes text files (byte by byte, vocabulary 256, or with a Hugging Face\n"
                 "tokenizer.json) and writes the llm.c-format shards PREFIX_train.bin and\n"
                 "PREFIX_val.bin (uint32 tokens when the vocabulary passes 65,536). The last\n"
                 "fraction F of each file goes to validation, the rest to training.");
  args.option("out", &prefix, "PREFIX", "output prefix, e.g. data/fortunes (required)");
  args.option("tokenizer", &tokenizer_path, "FILE", "a tokenizer.json (byte-level BPE); default: bytes");
  args.option("val-fraction", &fraction, "F", "fraction of each file held out, in [0, 1)", 0, 1);
  args.positionals(&inputs, "FILE", std::string("text files; none: the fortunes corpus (") + strata::kFortunesDir + ")");
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (prefix.empty()) return args.usage_error("--out PREFIX is required");
  if (fraction >= 1) return args.usage_error("--val-fraction: 1 is out of range (expected a number in [0, 1))");
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
