// Tokenizer: loads a Hugging Face tokenizer.json (byte-level BPE) or a SentencePiece
// tokenizer.model (lib/data/sentencepiece.cpp), or stands for the byte tokenizer, and
// encodes / decodes.
// Invariant (strata/tokenizer.h): every key of the file that changes ids is either
// implemented here exactly as `tokenizers` does it or refused at load by name.
// Encoding: split on added tokens -> normalize (NFC) -> pre-tokenize (regex splits,
// ByteLevel) -> byte-level BPE per piece (cached per thread) -> post-process template.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "lib/data/bpe.h"
#include "lib/data/sentencepiece.h"
#include "strata/data.h"
#include "strata/error.h"
#include "strata/tokenizer.h"

namespace strata {

using json = nlohmann::json;

// GPT-2's pre-tokenizer pattern (ByteLevel with use_regex).
static constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

struct Regex {
  pcre2_code* code = nullptr;
  explicit Regex(const std::string& pattern, const std::string& where) {
    int err = 0;
    PCRE2_SIZE offset = 0;
    code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                         PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(err, message, sizeof message);
      STRATA_FAIL(where << ": the pre-tokenizer pattern does not compile at offset " << offset
                         << " (" << reinterpret_cast<const char*>(message) << ")");
    }
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter
  }
  ~Regex() { pcre2_code_free(code); }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
};

struct PreTokenizerStep {
  std::shared_ptr<Regex> split;  // Split(Isolated) or ByteLevel(use_regex); else null
  bool add_prefix_space = false;
};

struct AddedToken {
  std::string content;
  uint32_t id;
  bool special;
};

struct Tokenizer::Impl {
  std::string name;
  bool byte_tokenizer = false;
  uint64_t generation = 0;  // keys the per-thread word cache
  std::unordered_map<std::string, uint32_t> vocab;  // token bytes -> id
  std::vector<std::string> id_bytes;                // id -> bytes
  std::vector<uint8_t> id_special;
  uint32_t byte_ids[256] = {};
  bpe::Merges merges;
  bool ignore_merges = false;
  bool nfc = false;
  std::vector<PreTokenizerStep> steps;
  std::vector<AddedToken> added;  // longest first
  std::vector<uint32_t> added_by_first_byte[256];  // indices into `added`
  std::vector<uint32_t> template_prefix, template_suffix;
  std::shared_ptr<const sentencepiece::Model> sentencepiece;  // set: a tokenizer.model
  bool strip_leading_space = false;  // SentencePiece's dummy prefix, removed by decode
  std::optional<uint32_t> bos, eos, unk;
};

namespace {

std::atomic<uint64_t> next_generation{1};

[[noreturn]] void refuse(const std::string& name, const std::string& key, const std::string& what) {
  STRATA_FAIL(name << ": " << key << " " << what
                    << " is not implemented by strata's tokenizer; loading it would give "
                       "different ids than Hugging Face tokenizers");
}

bool is_null_or(const json& j, const char* key, const json& allowed) {
  return !j.contains(key) || j[key].is_null() || j[key] == allowed;
}

void load_pre_tokenizer(Tokenizer::Impl& t, const json& p, bool& byte_level) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const json& q : p.at("pretokenizers")) load_pre_tokenizer(t, q, byte_level);
  } else if (type == "Split") {
    STRATA_CHECK(p.value("behavior", "") == "Isolated" && !p.value("invert", false),
                 t.name << ": pre_tokenizer Split with behavior '" << p.value("behavior", "")
                        << "' and invert " << p.value("invert", false)
                        << " is not implemented (only Isolated, not inverted)");
    const json& pattern = p.at("pattern");
    STRATA_CHECK(pattern.contains("Regex"), t.name << ": pre_tokenizer Split pattern "
                                                   << pattern.dump() << " is not implemented "
                                                   "(only a Regex pattern)");
    t.steps.push_back({std::make_shared<Regex>(pattern["Regex"].get<std::string>(), t.name), false});
  } else if (type == "ByteLevel") {
    byte_level = true;
    PreTokenizerStep step;
    step.add_prefix_space = p.value("add_prefix_space", false);
    if (p.value("use_regex", true)) step.split = std::make_shared<Regex>(kGpt2Pattern, t.name);
    t.steps.push_back(std::move(step));
  } else {
    refuse(t.name, "pre_tokenizer", "'" + type + "'");
  }
}

void load_post_processor(Tokenizer::Impl& t, const json& p) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const json& q : p.at("processors")) load_post_processor(t, q);
  } else if (type == "TemplateProcessing") {
    bool after = false;
    for (const json& piece : p.at("single")) {
      if (piece.contains("Sequence")) {
        after = true;
        continue;
      }
      const std::string token = piece.at("SpecialToken").at("id");
      for (const json& id : p.at("special_tokens").at(token).at("ids"))
        (after ? t.template_suffix : t.template_prefix).push_back(id.get<uint32_t>());
    }
  } else if (type != "ByteLevel") {  // ByteLevel only adjusts offsets
    refuse(t.name, "post_processor", "'" + type + "'");
  }
}

void add_id(Tokenizer::Impl& t, uint32_t id, const std::string& bytes, bool special) {
  if (id >= t.id_bytes.size()) t.id_bytes.resize(id + 1), t.id_special.resize(id + 1);
  t.id_bytes[id] = bytes;
  t.id_special[id] = special;
}

void load_model(Tokenizer::Impl& t, const json& m) {
  STRATA_CHECK(m.value("type", "") == "BPE",
               t.name << ": model type '" << m.value("type", "") << "' is not implemented "
                      "(strata reads byte-level BPE tokenizer.json files)");
  STRATA_CHECK(is_null_or(m, "dropout", 0.0), t.name << ": model.dropout " << m["dropout"].dump()
                                                     << " is not implemented (set it to null)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (!is_null_or(m, key, "")) refuse(t.name, std::string("model.") + key, m[key].dump());
  if (!is_null_or(m, "byte_fallback", false)) refuse(t.name, "model.byte_fallback", "true");
  t.ignore_merges = m.value("ignore_merges", false);
  std::string bytes;
  for (const auto& [token, id] : m.at("vocab").items()) {
    STRATA_CHECK(bpe::chars_to_bytes(token, bytes),
                 t.name << ": vocabulary token '" << token << "' is not byte-level "
                        "(a ByteLevel tokenizer's tokens use GPT-2's byte characters)");
    t.vocab.emplace(bytes, id.get<uint32_t>());
    add_id(t, id.get<uint32_t>(), bytes, false);
  }
  for (int b = 0; b < 256; ++b) {
    const auto it = t.vocab.find(std::string(1, char(b)));
    STRATA_CHECK(it != t.vocab.end(), t.name << ": the vocabulary has no token for byte " << b
                                             << "; a byte-level BPE needs all 256");
    t.byte_ids[b] = it->second;
  }
  uint32_t rank = 0;
  std::string left, right;
  for (const json& merge : m.at("merges")) {
    std::string a, b;
    if (merge.is_array()) {
      a = merge.at(0), b = merge.at(1);
    } else {
      const std::string s = merge;
      const size_t space = s.find(' ', 1);
      STRATA_CHECK(space != std::string::npos, t.name << ": merge '" << s << "' has no space");
      a = s.substr(0, space), b = s.substr(space + 1);
    }
    STRATA_CHECK(bpe::chars_to_bytes(a, left) && bpe::chars_to_bytes(b, right),
                 t.name << ": merge '" << a << " " << b << "' is not byte-level");
    const auto l = t.vocab.find(left), r = t.vocab.find(right), lr = t.vocab.find(left + right);
    STRATA_CHECK(l != t.vocab.end() && r != t.vocab.end() && lr != t.vocab.end(),
                 t.name << ": merge " << rank << " '" << a << " " << b
                        << "' names a token the vocabulary lacks");
    t.merges.add(l->second, r->second, rank++, lr->second);
  }
}

void load(Tokenizer::Impl& t, const json& j) {
  for (const char* key : {"truncation", "padding"})
    STRATA_CHECK(!j.contains(key) || j[key].is_null(),
                 t.name << ": '" << key << "' is set; strata neither truncates nor pads "
                        "when it tokenizes (set it to null)");
  load_model(t, j.at("model"));
  const json& norm = j.value("normalizer", json());
  if (!norm.is_null()) {
    STRATA_CHECK(norm.value("type", "") == "NFC",
                 t.name << ": normalizer '" << norm.value("type", "")
                        << "' is not implemented (strata implements none and NFC)");
    t.nfc = true;
  }
  bool byte_level = false;
  load_pre_tokenizer(t, j.value("pre_tokenizer", json()), byte_level);
  STRATA_CHECK(byte_level, t.name << ": the pre-tokenizer has no ByteLevel step; strata reads "
                                     "byte-level BPE only");
  const json& dec = j.value("decoder", json());
  STRATA_CHECK(dec.is_object() && dec.value("type", "") == "ByteLevel",
               t.name << ": decoder " << dec.dump() << " is not implemented (only ByteLevel)");
  load_post_processor(t, j.value("post_processor", json()));
  for (const json& a : j.value("added_tokens", json::array())) {
    for (const char* flag : {"single_word", "lstrip", "rstrip"})
      if (a.value(flag, false))
        refuse(t.name, "added token '" + a.value("content", "") + "'", std::string(flag) + " = true");
    const AddedToken added{a.at("content"), a.at("id"), a.value("special", false)};
    STRATA_CHECK(!added.content.empty(), t.name << ": added token " << added.id << " is empty");
    add_id(t, added.id, added.content, added.special);
    t.added.push_back(added);
  }
  std::stable_sort(t.added.begin(), t.added.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });
  for (size_t i = 0; i < t.added.size(); ++i)
    t.added_by_first_byte[uint8_t(t.added[i].content[0])].push_back(uint32_t(i));
}

// The per-thread cache of encoded pieces, for one tokenizer at a time.
struct WordCache {
  uint64_t generation = 0;
  std::unordered_map<std::string, std::vector<uint32_t>> words;
};

void encode_piece(const Tokenizer::Impl& t, std::string_view piece, std::vector<uint32_t>& out) {
  if (piece.empty()) return;
  if (t.ignore_merges) {
    const auto it = t.vocab.find(std::string(piece));
    if (it != t.vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  thread_local WordCache cache;
  if (cache.generation != t.generation || cache.words.size() > (1u << 18)) {
    cache.words.clear();
    cache.generation = t.generation;
  }
  auto [it, fresh] = cache.words.try_emplace(std::string(piece));
  if (fresh) {
    std::vector<uint32_t>& ids = it->second;
    ids.reserve(piece.size());
    for (char c : piece) ids.push_back(t.byte_ids[uint8_t(c)]);
    t.merges.apply(ids);
  }
  out.insert(out.end(), it->second.begin(), it->second.end());
}

// Splits `text` into the regex's matches and the gaps between them (Isolated).
void split_isolated(const Regex& re, std::string_view text, std::vector<std::string>& out,
                    pcre2_match_data* md) {
  size_t start = 0, emitted = 0;
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  while (start < text.size()) {
    const int rc = pcre2_match(re.code, subject, text.size(), start, 0, md, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    if (ov[1] == ov[0]) {  // empty match: `tokenizers` ignores it
      start = ov[0] + 1;
      continue;
    }
    if (ov[0] > emitted) out.emplace_back(text.substr(emitted, ov[0] - emitted));
    out.emplace_back(text.substr(ov[0], ov[1] - ov[0]));
    emitted = start = ov[1];
  }
  if (emitted < text.size()) out.emplace_back(text.substr(emitted));
}

std::string nfc(const std::string& name, std::string_view text) {
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          utf8proc_ssize_t(text.size()), &out,
                                          utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  STRATA_CHECK(n >= 0, name << ": the text is not valid UTF-8 (" << utf8proc_errmsg(n)
                            << "); this tokenizer normalizes to NFC, which needs UTF-8 text");
  std::string result(reinterpret_cast<const char*>(out), size_t(n));
  std::free(out);
  return result;
}

void encode_segment(const Tokenizer::Impl& t, std::string_view segment, std::vector<uint32_t>& out) {
  if (segment.empty()) return;
  std::vector<std::string> pieces{t.nfc ? nfc(t.name, segment) : std::string(segment)}, next;
  pcre2_match_data* md = nullptr;
  for (const PreTokenizerStep& step : t.steps) {
    next.clear();
    for (std::string& piece : pieces) {
      if (step.add_prefix_space && !piece.empty() && piece[0] != ' ') piece.insert(0, 1, ' ');
      if (!step.split) {
        next.push_back(std::move(piece));
        continue;
      }
      if (md == nullptr) md = pcre2_match_data_create_from_pattern(step.split->code, nullptr);
      split_isolated(*step.split, piece, next, md);
    }
    pieces.swap(next);
  }
  pcre2_match_data_free(md);
  for (const std::string& piece : pieces) encode_piece(t, piece, out);
}

}  // namespace

Tokenizer Tokenizer::bytes() {
  auto t = std::make_shared<Impl>();
  t->name = "bytes";
  t->byte_tokenizer = true;
  for (int b = 0; b < 256; ++b) add_id(*t, uint32_t(b), std::string(1, char(b)), false);
  return Tokenizer(std::move(t));
}

Tokenizer Tokenizer::from_json(std::string_view text, const std::string& name) {
  auto t = std::make_shared<Impl>();
  t->name = name;
  t->generation = next_generation++;
  json j;
  try {
    j = json::parse(text);
    load(*t, j);
  } catch (const json::exception& e) {
    STRATA_FAIL(name << ": not a tokenizer.json strata can read (" << e.what() << ")");
  }
  return Tokenizer(std::move(t));
}

Tokenizer Tokenizer::from_sentencepiece(std::string_view model, const std::string& name) {
  auto t = std::make_shared<Impl>();
  t->name = name;
  sentencepiece::Loaded loaded = sentencepiece::load(model, name);
  t->sentencepiece = std::move(loaded.model);
  t->id_bytes = std::move(loaded.id_bytes);
  t->id_special = std::move(loaded.id_special);
  t->bos = loaded.bos, t->eos = loaded.eos, t->unk = loaded.unk;
  t->strip_leading_space = loaded.strip_leading_space;
  if (t->bos) t->template_prefix = {*t->bos};
  return Tokenizer(std::move(t));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  STRATA_CHECK(in, "tokenizer file '" << path << "' cannot be read: " << detail::errno_string()
                                      << "; give the path of a Hugging Face tokenizer.json or "
                                         "a SentencePiece tokenizer.model");
  std::ostringstream text;
  text << in.rdbuf();
  const std::string bytes = text.str();
  if (path.ends_with(".model") || sentencepiece::looks_like_model(bytes))
    return from_sentencepiece(bytes, path);
  return from_json(bytes, path);
}

std::vector<uint32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& t = *impl_;
  std::vector<uint32_t> out;
  if (t.byte_tokenizer) {
    out.assign(reinterpret_cast<const uint8_t*>(text.data()),
               reinterpret_cast<const uint8_t*>(text.data()) + text.size());
    return out;
  }
  out.reserve(text.size() / 3 + t.template_prefix.size() + t.template_suffix.size());
  if (add_special_tokens) out = t.template_prefix;
  if (t.sentencepiece) {
    sentencepiece::encode(*t.sentencepiece, text, out, t.name);
    return out;
  }
  size_t begin = 0;
  for (size_t i = 0; i < text.size();) {
    const AddedToken* match = nullptr;
    for (uint32_t k : t.added_by_first_byte[uint8_t(text[i])])
      if (text.substr(i, t.added[k].content.size()) == t.added[k].content) {
        match = &t.added[k];
        break;
      }
    if (match == nullptr) {
      ++i;
      continue;
    }
    encode_segment(t, text.substr(begin, i - begin), out);
    out.push_back(match->id);
    begin = i += match->content.size();
  }
  encode_segment(t, text.substr(begin), out);
  if (add_special_tokens) out.insert(out.end(), t.template_suffix.begin(), t.template_suffix.end());
  return out;
}

std::string Tokenizer::decode(std::span<const uint32_t> ids, bool skip_special_tokens) const {
  std::string text;
  bool first_text = impl_->strip_leading_space;
  for (size_t i = 0; i < ids.size(); ++i) {
    STRATA_CHECK(ids[i] < impl_->id_bytes.size(),
                 impl_->name << ": token id " << ids[i] << " at index " << i
                             << " is outside the vocabulary of " << impl_->id_bytes.size());
    const bool special = impl_->id_special[ids[i]];
    if (skip_special_tokens && special) continue;
    const std::string& bytes = impl_->id_bytes[ids[i]];
    // SentencePiece drops the space its dummy prefix put before the first piece.
    const bool strip = first_text && !special && !bytes.empty() && bytes[0] == ' ';
    if (!special) first_text = false;
    text.append(bytes, strip ? 1 : 0);
  }
  return text;
}

int64_t Tokenizer::vocab_size() const { return int64_t(impl_->id_bytes.size()); }

std::optional<uint32_t> Tokenizer::token_to_id(std::string_view token) const {
  for (const AddedToken& a : impl_->added)
    if (a.content == token) return a.id;
  if (impl_->byte_tokenizer) {
    if (token.size() == 1) return uint8_t(token[0]);
    return std::nullopt;
  }
  if (impl_->sentencepiece) return sentencepiece::piece_to_id(*impl_->sentencepiece, token);
  const auto it = impl_->vocab.find(std::string(token));
  if (it == impl_->vocab.end()) return std::nullopt;
  return it->second;
}

std::string Tokenizer::id_to_bytes(uint32_t id) const {
  STRATA_CHECK(id < impl_->id_bytes.size(), impl_->name << ": token id " << id
                                                        << " is outside the vocabulary of "
                                                        << impl_->id_bytes.size());
  return impl_->id_bytes[id];
}

bool Tokenizer::is_special(uint32_t id) const {
  return id < impl_->id_special.size() && impl_->id_special[id];
}

const std::string& Tokenizer::name() const { return impl_->name; }
Tokenizer::Kind Tokenizer::kind() const {
  return impl_->byte_tokenizer ? Kind::bytes : impl_->sentencepiece ? Kind::sentencepiece : Kind::bpe;
}
std::optional<uint32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<uint32_t> Tokenizer::eos_id() const { return impl_->eos; }
std::optional<uint32_t> Tokenizer::unk_id() const { return impl_->unk; }

std::string Tokenizer::Stream::push(uint32_t id) {
  const bool special = tokenizer_->is_special(id);
  if (skip_special_ && special) return {};
  const std::string bytes = tokenizer_->id_to_bytes(id);
  // As decode: the first text piece loses SentencePiece's dummy-prefix space.
  const bool strip = !started_ && !special && tokenizer_->impl_->strip_leading_space &&
                     !bytes.empty() && bytes[0] == ' ';
  if (!special) started_ = true;
  pending_.append(bytes, strip ? 1 : 0);
  // Emit everything up to the last character, and that one too when it is complete.
  size_t end = pending_.size(), lead = end;
  while (lead > 0 && end - lead < 3 && (uint8_t(pending_[lead - 1]) & 0xC0) == 0x80) --lead;
  if (lead > 0) {
    const auto c = uint8_t(pending_[lead - 1]);
    const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (end - (lead - 1) < need) end = lead - 1;
  }
  std::string out = pending_.substr(0, end);
  pending_.erase(0, end);
  return out;
}

std::string Tokenizer::Stream::finish() { return std::exchange(pending_, {}); }

}  // namespace strata
