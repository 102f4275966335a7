// Text to tokens: the byte-level tokenizer, reading text files, the default corpus
// (Debian's fortunes) and prepare_text, which writes train/val shards.
// Invariant: encode_bytes and decode_bytes are exact inverses on every byte string,
// so a shard made here decodes back to its source text, split for split.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <iterator>

#include <tbb/parallel_for.h>

#include "strata/data.h"
#include "strata/error.h"

namespace strata {

std::vector<uint16_t> encode_bytes(std::string_view text) {
  std::vector<uint16_t> tokens(text.size());
  for (size_t i = 0; i < text.size(); ++i) tokens[i] = static_cast<unsigned char>(text[i]);
  return tokens;
}

std::string decode_bytes(std::span<const uint16_t> tokens) {
  std::string text(tokens.size(), '\0');
  for (size_t i = 0; i < tokens.size(); ++i) {
    STRATA_CHECK(tokens[i] < kByteVocabSize,
                 "decode_bytes: token " << tokens[i] << " at index " << i
                                        << " is not a byte (expected 0..255); these tokens "
                                           "come from another tokenizer");
    text[i] = static_cast<char>(tokens[i]);
  }
  return text;
}

namespace {

std::string read_text_file(const std::string& path) {
  struct stat st {};
  STRATA_CHECK(::stat(path.c_str(), &st) == 0,
               "cannot read text file '" << path << "': " << detail::errno_string()
                                         << "; check the path");
  STRATA_CHECK(S_ISREG(st.st_mode), "cannot read text file '" << path
                                                              << "': not a regular file");
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in, "cannot open text file '" << path << "': " << detail::errno_string()
                                             << "; check its permissions");
  std::string text(size_t(st.st_size), '\0');
  in.read(text.data(), std::streamsize(text.size()));
  STRATA_CHECK(in.gcount() == std::streamsize(text.size()),
               "cannot read text file '" << path << "': got " << in.gcount() << " of "
                                         << text.size() << " bytes; was it changed while read?");
  return text;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(),
                                                suffix) == 0;
}

}  // namespace

std::string read_text_files(const std::vector<std::string>& paths) {
  std::string text;
  for (const std::string& p : paths) text += read_text_file(p);
  return text;
}

std::vector<std::string> default_corpus_files(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  STRATA_CHECK(d != nullptr, "the default corpus directory '"
                                 << dir << "' cannot be read (" << detail::errno_string()
                                 << "); install the Debian package 'fortunes' (make deps)");
  std::vector<std::string> files;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.empty() || name[0] == '.' || ends_with(name, ".dat") || ends_with(name, ".u8"))
      continue;
    const std::string path = dir + "/" + name;
    struct stat st {};
    // lstat: symlinks (duplicates of files under another name) and directories (off/,
    // the offensive fortunes) are skipped.
    if (::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) files.push_back(path);
  }
  ::closedir(d);
  STRATA_CHECK(!files.empty(), "the default corpus directory '"
                                   << dir << "' holds no fortune text files; install the "
                                             "Debian package 'fortunes' (make deps)");
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<uint32_t> encode_parallel(const Tokenizer& tokenizer, std::string_view text) {
  constexpr size_t kChunk = size_t(1) << 18;
  // SentencePiece has no safe cut: each chunk would get its own dummy-prefix space.
  if (tokenizer.kind() == Tokenizer::Kind::sentencepiece) return tokenizer.encode(text);
  std::vector<std::string_view> chunks;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.size();
    for (size_t i = begin + kChunk; i + 1 < text.size(); ++i)
      if (text[i] == '\n' && std::isalpha(static_cast<unsigned char>(text[i + 1]))) {
        end = i + 1;
        break;
      }
    chunks.push_back(text.substr(begin, end - begin));
    begin = end;
  }
  std::vector<std::vector<uint32_t>> ids(chunks.size());
  tbb::parallel_for(size_t(0), chunks.size(), [&](size_t c) { ids[c] = tokenizer.encode(chunks[c]); });
  std::vector<uint32_t> all;
  for (const std::vector<uint32_t>& v : ids) all.insert(all.end(), v.begin(), v.end());
  return all;
}

void write_token_shard(const std::string& path, std::span<const uint32_t> tokens, int64_t vocab_size) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  STRATA_CHECK(!ec, "cannot create the output directory '" << dir.string() << "': " << ec.message());
  if (vocab_size > 65536) return write_token_shard(path, tokens);
  const std::vector<uint16_t> narrow(tokens.begin(), tokens.end());
  write_token_shard(path, std::span<const uint16_t>(narrow));
}

PrepareResult prepare_text(const std::vector<std::string>& inputs, const std::string& prefix,
                           double val_fraction, const Tokenizer& tokenizer) {
  STRATA_CHECK(!inputs.empty(), "prepare_text: no input files given");
  STRATA_CHECK(!prefix.empty(), "prepare_text: empty output prefix; give one such as "
                                "'data/tiny' for data/tiny_train.bin and data/tiny_val.bin");
  STRATA_CHECK(val_fraction >= 0.0 && val_fraction < 1.0,
               "prepare_text: val_fraction " << val_fraction
                                             << " must be in [0, 1), e.g. 0.1 for 10%");
  // Read everything first: a missing input fails before any output is written.
  std::vector<std::string> texts;
  texts.reserve(inputs.size());
  for (const std::string& p : inputs) texts.push_back(read_text_file(p));

  const bool bytes = tokenizer.name() == "bytes";
  std::vector<uint32_t> train, val;
  for (const std::string& text : texts) {
    size_t split = text.size() - size_t(std::floor(double(text.size()) * val_fraction));
    if (!bytes && split > 0 && split < text.size() && text[split - 1] != '\n') {
      const size_t back = text.rfind('\n', split - 1), ahead = text.find('\n', split);
      split = back != std::string::npos ? back + 1 : ahead != std::string::npos ? ahead + 1 : text.size();
    }
    const std::string_view all(text);
    const std::vector<uint32_t> t = encode_parallel(tokenizer, all.substr(0, split));
    const std::vector<uint32_t> v = encode_parallel(tokenizer, all.substr(split));
    train.insert(train.end(), t.begin(), t.end());
    val.insert(val.end(), v.begin(), v.end());
  }
  PrepareResult r;
  r.train_path = prefix + "_train.bin";
  r.val_path = prefix + "_val.bin";
  r.train_tokens = int64_t(train.size());
  r.val_tokens = int64_t(val.size());
  write_token_shard(r.train_path, std::span<const uint32_t>(train), tokenizer.vocab_size());
  write_token_shard(r.val_path, std::span<const uint32_t>(val), tokenizer.vocab_size());
  return r;
}

}  // namespace strata
