// `strata prepare`: text files -> token shards (bytes or a tokenizer.json) <prefix>_train.bin and
// <prefix>_val.bin, ready for TokenDataset. With no files, the fortunes corpus.
// Invariant: nothing is written unless every argument and input file is good.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "strata/data.h"
#include "strata/error.h"
#include "commands.h"

namespace {

void print_usage(std::FILE* to) {
  std::fprintf(to,
               "usage: strata prepare --out PREFIX [--tokenizer FILE] [--val-fraction F] [FILE...]\n"
               "\n"
               "Tokenizes text files (byte by byte, vocabulary 256, or with a Hugging Face\n"
               "tokenizer.json) and writes the llm.c-format shards PREFIX_train.bin and\n"
               "PREFIX_val.bin (uint32 tokens when the vocabulary passes 65,536). The last\n"
               "fraction F of each file goes to validation, the rest to training.\n"
               "\n"
               "  --out PREFIX        output prefix, e.g. data/fortunes (required)\n"
               "  --tokenizer FILE    a tokenizer.json (byte-level BPE); default: bytes\n"
               "  --val-fraction F    fraction of each file held out, in [0, 1) (default 0.1)\n"
               "  FILE...             text files; none: the fortunes corpus (%s)\n"
               "  --help              show this help\n",
               strata::kFortunesDir);
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "strata prepare: %s\n(see strata prepare --help)\n", message.c_str());
  return 2;
}

bool parse_fraction(const std::string& text, double& out) {
  char* end = nullptr;
  out = std::strtod(text.c_str(), &end);
  return !text.empty() && end == text.c_str() + text.size();
}

}  // namespace

int prepare_main(int argc, char** argv) {
  std::string prefix, fraction_text = "0.1", tokenizer_path;
  std::vector<std::string> inputs;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    // Both "--opt VALUE" and "--opt=VALUE".
    auto value_of = [&](const std::string& name, std::string& out) {
      if (arg == name) {
        if (i + 1 >= argc) return false;
        out = argv[++i];
        return true;
      }
      if (arg.rfind(name + "=", 0) == 0) {
        out = arg.substr(name.size() + 1);
        return true;
      }
      return false;
    };
    if (arg == "--help" || arg == "-h") {
      print_usage(stdout);
      return 0;
    } else if (arg == "--out" || arg.rfind("--out=", 0) == 0) {
      if (!value_of("--out", prefix)) return usage_error("--out needs a PREFIX");
    } else if (arg == "--tokenizer" || arg.rfind("--tokenizer=", 0) == 0) {
      if (!value_of("--tokenizer", tokenizer_path)) return usage_error("--tokenizer needs a FILE");
    } else if (arg == "--val-fraction" || arg.rfind("--val-fraction=", 0) == 0) {
      if (!value_of("--val-fraction", fraction_text))
        return usage_error("--val-fraction needs a number");
    } else if (arg.size() > 1 && arg[0] == '-') {
      return usage_error("unknown option '" + arg + "'");
    } else {
      inputs.push_back(arg);
    }
  }
  if (prefix.empty()) return usage_error("--out PREFIX is required");
  double fraction = 0;
  if (!parse_fraction(fraction_text, fraction) || !(fraction >= 0.0 && fraction < 1.0))
    return usage_error("--val-fraction '" + fraction_text + "' must be a number in [0, 1)");

  try {
    if (inputs.empty()) inputs = strata::default_corpus_files();
    const strata::Tokenizer tokenizer = tokenizer_path.empty()
                                            ? strata::Tokenizer::bytes()
                                            : strata::Tokenizer::from_file(tokenizer_path);
    const strata::PrepareResult r = strata::prepare_text(inputs, prefix, fraction, tokenizer);
    std::printf("%zu file(s) -> %s (%lld tokens), %s (%lld tokens)\n", inputs.size(),
                r.train_path.c_str(), static_cast<long long>(r.train_tokens), r.val_path.c_str(),
                static_cast<long long>(r.val_tokens));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata prepare: %s\n", e.what());
    return 1;
  }
}
