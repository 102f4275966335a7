// SentencePiece `tokenizer.model` files through Debian's libsentencepiece, for
// strata::Tokenizer (lib/data/tokenizer.cpp). Private: the public header names no
// sentencepiece type.
// Invariant: ids come from the library's own Encode, so they equal the Python
// `sentencepiece` package's for the same file; the tables built here only serve decode.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata::sentencepiece {

struct Model;  // the loaded processor

struct Loaded {
  std::shared_ptr<const Model> model;
  std::vector<std::string> id_bytes;  // id -> the text it stands for ("▁" as a space)
  std::vector<uint8_t> id_special;    // control and unknown pieces
  std::optional<uint32_t> bos, eos, unk;
  bool strip_leading_space = false;  // the model adds a dummy prefix, decode removes it
};

// True when `bytes` cannot be a tokenizer.json (its first non-blank byte is not '{').
bool looks_like_model(std::string_view bytes);
// Throws strata::Error naming `name` when `bytes` is not a SentencePiece model.
Loaded load(std::string_view bytes, const std::string& name);
void encode(const Model& model, std::string_view text, std::vector<uint32_t>& out,
            const std::string& name);
std::optional<uint32_t> piece_to_id(const Model& model, std::string_view piece);

}  // namespace strata::sentencepiece
