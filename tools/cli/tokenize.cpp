// `strata tokenize`: text -> token ids (one line of space-separated ids per input) or,
// with --decode, ids -> text, through a Hugging Face tokenizer.json or the byte
// tokenizer; --time reports encode throughput on stderr.
// Invariant: read-only; ids on stdout are exactly Tokenizer::encode's.
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "strata/data.h"
#include "strata/error.h"
#include "strata/tokenizer.h"

int tokenize_main(int argc, char** argv) {
  std::string tokenizer_path;
  std::vector<std::string> inputs;
  bool decode = false, special = false, timing = false;
  cli::Args args("strata tokenize [--tokenizer FILE] [--decode] [FILE...]",
                 "Encodes each text file to token ids (stdout, one line per file), or with "
                 "--decode turns files of space-separated ids back into text.");
  args.option("tokenizer", &tokenizer_path, "FILE",
              "a Hugging Face tokenizer.json (byte-level BPE); default: the byte tokenizer");
  args.flag("decode", &decode, "read ids, write text");
  args.flag("special", &special,
            "encode: apply the file's post-processor template (e.g. a leading BOS); decode: "
            "drop special tokens");
  args.flag("time", &timing, "print encode throughput (MB/s, tokens/s, one thread) on stderr");
  args.positionals(&inputs, "FILE...", "input files (text, or ids with --decode)");
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (inputs.empty()) return args.usage_error("give at least one input FILE");
  try {
    const strata::Tokenizer tok = tokenizer_path.empty() ? strata::Tokenizer::bytes()
                                                         : strata::Tokenizer::from_file(tokenizer_path);
    for (const std::string& path : inputs) {
      const std::string text = strata::read_text_files({path});
      if (decode) {
        std::istringstream in(text);
        std::vector<uint32_t> ids;
        std::string word;
        while (in >> word) {
          char* end = nullptr;
          const unsigned long id = std::strtoul(word.c_str(), &end, 10);
          if (word[0] == '-' || *end != '\0' || id > UINT32_MAX)
            throw strata::Error(path + ": '" + word + "' is not a token id (a non-negative integer)");
          ids.push_back(uint32_t(id));
        }
        const std::string out = tok.decode(ids, special);
        std::fwrite(out.data(), 1, out.size(), stdout);
        continue;
      }
      const auto start = std::chrono::steady_clock::now();
      const std::vector<uint32_t> ids = tok.encode(text, special);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::string line;
      for (size_t i = 0; i < ids.size(); ++i) line += (i ? " " : "") + std::to_string(ids[i]);
      std::printf("%s\n", line.c_str());
      if (timing)
        std::fprintf(stderr, "%s: %zu bytes -> %zu tokens in %.3f s: %.2f MB/s, %.0f tokens/s\n",
                     path.c_str(), text.size(), ids.size(), seconds, text.size() / seconds / 1e6,
                     ids.size() / seconds);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata tokenize: %s\n", e.what());
    return 1;
  }
}
