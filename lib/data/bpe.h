// Byte-level BPE internals shared by the tokenizer's loader and encoder: the GPT-2
// byte <-> character map, the merge table and the merge loop.
// Invariant: merges apply lowest rank first, ties to the leftmost pair — the order
// Hugging Face `tokenizers` uses — so the ids match it for every input.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace strata::bpe {

// GPT-2's bytes_to_unicode: each byte as one printable code point, UTF-8 encoded.
const std::string& byte_to_char(uint8_t byte);
// The inverse over a whole token string; false when some character is not one of the
// 256 (the token is not byte-level).
bool chars_to_bytes(std::string_view chars, std::string& bytes);

class Merges {
 public:
  void add(uint32_t left, uint32_t right, uint32_t rank, uint32_t merged);
  // Merges `ids` (one id per input byte, in order) in place.
  void apply(std::vector<uint32_t>& ids) const;

 private:
  struct Entry {
    uint32_t rank;
    uint32_t merged;
  };
  const Entry* find(uint32_t left, uint32_t right) const;
  std::unordered_map<uint64_t, Entry> table_;
};

}  // namespace strata::bpe
