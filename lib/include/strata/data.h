// Token data: llm.c-format shards on disk, a dataset over many shards, a batch loader
// that draws training windows in a seeded, resumable order, and byte-level text prep.
// Invariant: the batch a loader yields is a pure function of (dataset, options, batch
// number). No RNG state exists; resuming a run means seek(saved position()).
#pragma once
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "strata/model.h"
#include "strata/tensor.h"
#include "strata/tokenizer.h"

namespace strata {

// ---- token shards (llm.c format) ----------------------------------------------------
// A shard is a header of 256 little-endian int32 — magic, version, token count, then
// zeros — followed by that many tokens: uint16 in llm.c's GPT-2 format (magic 20240520,
// version 1), uint32 in its Llama-3 format (magic 20240801, version 7), for
// vocabularies above 65,536.
constexpr int32_t kShardMagic = 20240520;
constexpr int32_t kShardVersion = 1;
constexpr int32_t kShardMagic32 = 20240801;
constexpr int32_t kShardVersion32 = 7;
constexpr int64_t kShardHeaderBytes = 256 * 4;

// Writes tokens as a shard at path, atomically: a temporary file beside it is written,
// fsynced and renamed over path, so a crash leaves either the old file or the new one.
// The uint16 overload writes the GPT-2 format, the uint32 one the Llama-3 format.
void write_token_shard(const std::string& path, std::span<const uint16_t> tokens);
void write_token_shard(const std::string& path, std::span<const uint32_t> tokens);
// The narrowest format for the vocabulary (uint16 up to 65,536), creating the
// directory path lies in.
void write_token_shard(const std::string& path, std::span<const uint32_t> tokens, int64_t vocab_size);

// Tokens of either width, read in place: indexable and iterable as uint32_t.
class TokenView {
 public:
  TokenView() = default;
  TokenView(const void* data, int width, size_t size) : data_(data), width_(width), size_(size) {}
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  int width() const { return width_; }  // bytes per token: 2 or 4
  uint32_t operator[](size_t i) const {
    return width_ == 2 ? static_cast<const uint16_t*>(data_)[i] : static_cast<const uint32_t*>(data_)[i];
  }
  TokenView subview(size_t offset, size_t count) const {
    return {static_cast<const char*>(data_) + offset * size_t(width_), width_, count};
  }
  class iterator {
   public:
    using iterator_category = std::random_access_iterator_tag;
    using value_type = uint32_t;
    using difference_type = std::ptrdiff_t;
    using pointer = void;
    using reference = uint32_t;
    iterator() = default;
    iterator(const TokenView* view, size_t i) : view_(view), i_(i) {}
    uint32_t operator*() const { return (*view_)[i_]; }
    iterator& operator++() { return ++i_, *this; }
    iterator operator++(int) { iterator t = *this; ++i_; return t; }
    iterator& operator+=(difference_type n) { return i_ += size_t(n), *this; }
    iterator operator+(difference_type n) const { return {view_, i_ + size_t(n)}; }
    difference_type operator-(const iterator& o) const { return difference_type(i_) - difference_type(o.i_); }
    bool operator==(const iterator& o) const { return i_ == o.i_; }
    bool operator!=(const iterator& o) const { return i_ != o.i_; }

   private:
    const TokenView* view_ = nullptr;
    size_t i_ = 0;
  };
  iterator begin() const { return {this, 0}; }
  iterator end() const { return {this, size_}; }

 private:
  const void* data_ = nullptr;
  int width_ = 2;
  size_t size_ = 0;
};

// One shard, memory-mapped read-only and validated when opened (size, magic, version,
// token count against file size). Throws strata::Error naming the path otherwise.
class TokenShard {
 public:
  explicit TokenShard(std::string path);
  ~TokenShard();
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }
  int64_t size() const { return num_tokens_; }  // tokens
  TokenView tokens() const { return {tokens_, token_bytes_, size_t(num_tokens_)}; }

  // Throws if any token is >= vocab_size, naming the first such token and its index.
  void validate_tokens(int64_t vocab_size) const;

 private:
  std::string path_;
  void* map_ = nullptr;  // the whole file
  size_t map_bytes_ = 0;
  const void* tokens_ = nullptr;  // (num_tokens_,) just past the header
  int token_bytes_ = 2;
  int64_t num_tokens_ = 0;
};

// ---- datasets -----------------------------------------------------------------------
// The shards matched by a path or glob(3) pattern, in sorted path order, seen as one
// sequence of tokens. A global position counts tokens from the start of the first shard.
class TokenDataset {
 public:
  // A file path or a glob pattern ("data/fineweb_train_*.bin"); throws when it matches
  // nothing, naming the pattern.
  explicit TokenDataset(const std::string& path_or_pattern);
  explicit TokenDataset(const std::vector<std::string>& paths);

  int64_t num_tokens() const { return num_tokens_; }
  size_t num_shards() const { return shards_.size(); }
  const TokenShard& shard(size_t i) const { return shards_.at(i); }
  // Global position of shard i's first token.
  int64_t shard_begin(size_t i) const { return shard_begin_.at(i); }

  // The length tokens starting at global position; throws when the window runs past
  // the end of the data or across a shard boundary (windows never span two files).
  TokenView window(int64_t position, int64_t length) const;

  // TokenShard::validate_tokens over every shard.
  void validate_tokens(int64_t vocab_size) const;

  // Instruction data: every shard has a loss mask beside it (loss_mask_path), a shard
  // of the same length whose entry is 1 where the token is a target for the loss and
  // 0 where it is not (a prompt token). window() and loss_mask_window() line up.
  bool has_loss_mask() const { return !masks_.empty(); }
  TokenView loss_mask_window(int64_t position, int64_t length) const;

 private:
  TokenView window_of(const std::vector<TokenShard>& shards, int64_t position, int64_t length) const;

  std::vector<TokenShard> shards_;
  std::vector<TokenShard> masks_;  // empty, or one per shard
  std::vector<int64_t> shard_begin_;  // (num_shards + 1,) prefix sums of shard sizes
  int64_t num_tokens_ = 0;
};

// "data/sft_train.bin" -> "data/sft_train.lossmask": where a shard's loss mask lives
// (not *.bin, so a glob over the shards does not match it).
std::string loss_mask_path(const std::string& shard_path);

// ---- batches ------------------------------------------------------------------------
// B windows of T+1 consecutive tokens. inputs = tokens[:, :T], targets = tokens[:, 1:],
// also stored contiguously so they can be handed to ops as (B, T) i32 tensors. With a
// loss mask (instruction data), a target whose mask is 0 (a prompt token) is -100.
struct TokenBatch {
  int64_t number = 0;  // the batch number k this is
  int64_t batch_size = 0;  // B
  int64_t seq_len = 0;  // T
  std::vector<int32_t> tokens;  // (B, T+1)
  std::vector<int32_t> inputs;  // (B, T)
  std::vector<int32_t> targets;  // (B, T)
  std::vector<int64_t> positions;  // (B,) global position of each window's first token

  TensorView inputs_view() { return {inputs.data(), DType::i32, {batch_size, seq_len}}; }
  TensorView targets_view() { return {targets.data(), DType::i32, {batch_size, seq_len}}; }
  // The (inputs, targets) pair a Model or Trainer takes.
  Batch batch() { return Batch{inputs_view(), targets_view()}; }
};

struct LoaderOptions {
  int64_t batch_size = 1;  // B, windows per batch per rank
  int64_t seq_len = 1;  // T; a window holds T+1 tokens
  uint64_t seed = 0;
  int rank = 0;
  int world_size = 1;
  // true: training order, a fresh permutation of the windows each epoch.
  // false: validation order, consecutive windows from the start, one pass, then reset().
  bool shuffle = true;
  int prefetch = 2;  // batches prepared ahead by the background thread
  // When > 0, every window is checked against the vocabulary before it is yielded.
  int64_t vocab_size = 0;
};

// Yields batches for one rank. The data is cut into slots: windows of T+1 tokens that
// start every T tokens of a shard, so consecutive slots share one token and every token
// but a shard's first is a target exactly once per pass.
//
// Shuffled order: an epoch is S / (world_size * B) batches (S = number of slots; the
// few slots left over differ from epoch to epoch). Sample i of rank r in batch k is
//   slot = permute_epoch(j),  j = (k mod batches_per_epoch) * world_size * B + r * B + i,
// where permute_epoch is a Feistel permutation of [0, S) keyed by (seed, epoch), so the
// windows of all ranks in an epoch are distinct, and any rank can compute any batch.
// Sequential order: the same with the identity permutation and a single epoch.
//
// A background thread prepares the next `prefetch` batches; an error it meets is
// rethrown by the next() that reaches the failing batch.
class BatchLoader {
 public:
  BatchLoader(std::shared_ptr<const TokenDataset> dataset, const LoaderOptions& options);
  BatchLoader(TokenDataset dataset, const LoaderOptions& options);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // The next batch. Sequential mode throws once the pass is over (see num_batches()).
  TokenBatch next();
  // The number of the batch next() returns; save it to resume with seek().
  int64_t position() const;
  // Continue from batch number k, exactly as if batches 0..k-1 had been consumed.
  void seek(int64_t k);
  void reset() { seek(0); }

  int64_t num_slots() const { return num_slots_; }
  // Shuffled: batches per epoch. Sequential: batches in one pass.
  int64_t num_batches() const { return num_batches_; }
  const LoaderOptions& options() const { return options_; }

  // The global window positions of batch k, without loading tokens (pure function).
  std::vector<int64_t> window_positions(int64_t k) const;

 private:
  struct Prefetcher;  // the background thread and its bounded queue

  void fill(int64_t k, TokenBatch& batch) const;
  int64_t slot_position(int64_t slot) const;

  std::shared_ptr<const TokenDataset> dataset_;
  LoaderOptions options_;
  std::vector<int64_t> slot_begin_;  // (num_shards + 1,) prefix sums of slots per shard
  int64_t num_slots_ = 0;
  int64_t num_batches_ = 0;
  std::unique_ptr<Prefetcher> prefetcher_;
};

// ---- text ---------------------------------------------------------------------------
// Byte-level tokenizer: token = byte value, vocabulary 256.
constexpr int64_t kByteVocabSize = 256;
std::vector<uint16_t> encode_bytes(std::string_view text);
// Throws on a token >= 256.
std::string decode_bytes(std::span<const uint16_t> tokens);

// The files' contents concatenated in the given order; throws naming a file that is
// missing or unreadable.
std::string read_text_files(const std::vector<std::string>& paths);

// Debian's fortunes package: the plain-text fortune files of dir (not *.dat indexes,
// not *.u8 symlinks, not subdirectories such as off/), sorted by path.
inline constexpr const char* kFortunesDir = "/usr/share/games/fortunes";
std::vector<std::string> default_corpus_files(const std::string& dir = kFortunesDir);

struct PrepareResult {
  std::string train_path;  // <prefix>_train.bin
  std::string val_path;  // <prefix>_val.bin
  int64_t train_tokens = 0;
  int64_t val_tokens = 0;
};

// Tokenizes each input file and writes <prefix>_train.bin and <prefix>_val.bin: uint16
// shards when the tokenizer's vocabulary fits in 16 bits, uint32 shards otherwise.
// The validation split is taken from EACH FILE: its last floor(bytes * val_fraction)
// bytes go to val, the rest to train, files in the given order — so every file (every
// fortune category) is represented in both splits. With a BPE tokenizer the split
// point moves back to the start of its line (forward when the file's first line holds
// it), so no word is cut in two. Files are
// encoded in parallel, large ones in chunks cut where a line starts with an ASCII letter
// (a piece boundary of every supported pre-tokenizer), so the ids equal a serial encode;
// a SentencePiece file is encoded whole (no cut is safe from its dummy prefix).
// val_fraction is in [0, 1).
PrepareResult prepare_text(const std::vector<std::string>& inputs, const std::string& prefix,
                           double val_fraction = 0.1, const Tokenizer& tokenizer = Tokenizer::bytes());

// ---- instruction data -----------------------------------------------------------------
// One example: tokenizer.encode(prompt, add_special_tokens = true) (so bos where the
// tokenizer has one), then encode(response), then eos. loss_mask is 0 on the prompt
// tokens and 1 on the response and eos: a target counts in the loss iff its token's
// mask is 1.
struct InstructionTokens {
  std::vector<uint32_t> tokens;
  std::vector<uint16_t> loss_mask;
};
InstructionTokens encode_instruction(const Tokenizer& tokenizer, std::string_view prompt,
                                     std::string_view response, uint32_t eos);

// A JSONL file, one {"prompt": "...", "response": "..."} object a line (blank lines
// skipped, other keys ignored), -> <prefix>_train.bin and <prefix>_val.bin with their
// loss masks (loss_mask_path), the examples packed one after another. The last
// floor(examples * val_fraction) examples go to val. A malformed line is refused with
// its line number and key before anything is written.
PrepareResult prepare_instructions(const std::string& jsonl, const std::string& prefix,
                                   double val_fraction, const Tokenizer& tokenizer, uint32_t eos);

// ---- masked language modelling (lib/data/masking.cpp) --------------------------------
// BERT's masking of a (B, T) batch for a bidirectional trunk (config.causal = false)
// under the built-in LM head: each position is chosen with `probability`; a chosen
// position's target is its token, and its input becomes mask_token (80%), a token
// drawn uniformly from [0, vocab_size) (10%) or stays (10%); every other target is
// -100, so the loss is the mean over chosen positions. Element i of batch `number`
// draws from Philox keyed by (seed, number), block i: the masks of a batch are a pure
// function of (tokens, options, number), reproducible on resume.
struct MaskOptions {
  int32_t mask_token = -1;  // the [MASK] id, in [0, vocab_size)
  int64_t vocab_size = 0;
  double probability = 0.15;
  uint64_t seed = 0;
};
struct MaskedBatch {
  int64_t batch_size = 0, seq_len = 0;
  std::vector<int32_t> inputs;   // (B, T)
  std::vector<int32_t> targets;  // (B, T): the original token where chosen, else -100
  Batch batch() {
    return Batch{TensorView(inputs.data(), DType::i32, {batch_size, seq_len}),
                 TensorView(targets.data(), DType::i32, {batch_size, seq_len})};
  }
};
// tokens: (B, T) i32 host memory. Throws before drawing anything on a bad option or a
// token outside [0, vocab_size).
MaskedBatch mask_tokens(const TensorView& tokens, const MaskOptions& options, int64_t number);

// tokenizer.encode(text), computed in parallel over chunks cut as prepare_text does.
std::vector<uint32_t> encode_parallel(const Tokenizer& tokenizer, std::string_view text);

}  // namespace strata
