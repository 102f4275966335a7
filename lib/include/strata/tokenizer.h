// Tokenizers: Hugging Face `tokenizer.json` byte-level BPE (the GPT-2, Llama-3, Qwen2
// and SmolLM families), SentencePiece `tokenizer.model` (LLaMA-1/2, Mistral, through
// libsentencepiece) and the byte tokenizer, behind one value type.
// Invariant: a tokenizer either reproduces the reference library's ids for its file
// (`tokenizers`, or `sentencepiece`) or refuses the file at load, naming the setting it
// does not implement; it never loads a file whose encoding would silently differ.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace strata {

class Tokenizer {
 public:
  // Byte-level: token = byte value, vocabulary 256 (encode_bytes / decode_bytes).
  static Tokenizer bytes();
  // A Hugging Face tokenizer.json. Throws strata::Error naming the file and the key
  // when it holds a model, normalizer, pre-tokenizer, decoder or option strata does
  // not implement.
  // A path ending in .model, or a file that does not start with '{', is read as a
  // SentencePiece model; any other as a tokenizer.json.
  static Tokenizer from_file(const std::string& path);
  static Tokenizer from_json(std::string_view json, const std::string& name = "tokenizer.json");
  // A serialized SentencePiece ModelProto (a tokenizer.model file's bytes). Throws
  // strata::Error naming `name` when it is not one.
  static Tokenizer from_sentencepiece(std::string_view model,
                                      const std::string& name = "tokenizer.model");

  // `add_special_tokens`: apply the file's post-processor template (e.g. Llama-3's
  // leading <|begin_of_text|>), as `tokenizers`' encode(text, add_special_tokens) does.
  // Added tokens that appear in the text are always matched as single tokens.
  // SentencePiece: `add_special_tokens` prepends bos (as Llama's tokenizer does); its
  // user-defined pieces match in the text, its control pieces (<s>, </s>) never do.
  std::vector<uint32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // Throws on an id outside the vocabulary. `skip_special_tokens` drops added tokens
  // marked special (SentencePiece: control and unknown pieces, which otherwise decode
  // to their piece, e.g. "<s>"). A SentencePiece decode drops the space before the
  // first piece, as `sentencepiece` does.
  std::string decode(std::span<const uint32_t> ids, bool skip_special_tokens = false) const;

  int64_t vocab_size() const;  // one past the largest id
  std::optional<uint32_t> token_to_id(std::string_view token) const;
  // The bytes a token stands for (for an added token, its content; SentencePiece: its
  // piece with "\u2581" as a space, a byte-fallback piece as its byte).
  std::string id_to_bytes(uint32_t id) const;
  bool is_special(uint32_t id) const;
  const std::string& name() const;  // "bytes", or the file it came from
  enum class Kind { bytes, bpe, sentencepiece };
  Kind kind() const;
  // The model's own begin / end of sequence and unknown ids, where the file says
  // (SentencePiece models do; tokenizer.json and bytes: none).
  std::optional<uint32_t> bos_id() const;
  std::optional<uint32_t> eos_id() const;
  std::optional<uint32_t> unk_id() const;

  // Streaming decode for generation: push ids one at a time, get text back as soon as
  // it forms complete UTF-8 characters (a character may span several byte tokens).
  class Stream {
   public:
    explicit Stream(const Tokenizer& tokenizer, bool skip_special_tokens = false)
        : tokenizer_(&tokenizer), skip_special_(skip_special_tokens) {}
    std::string push(uint32_t id);
    std::string finish();  // whatever is left, incomplete characters included

   private:
    const Tokenizer* tokenizer_;
    bool skip_special_;
    bool started_ = false;  // a text piece was pushed (SentencePiece's leading space)
    std::string pending_;
  };

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace strata
