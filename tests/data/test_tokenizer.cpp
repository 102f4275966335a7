// The tokenizer against Hugging Face `tokenizers`: the fixtures in
// tests/data/tokenizers/ (made by tools/hf/make_tokenizer_fixtures.py) hold three
// small byte-level BPE files and the ids `tokenizers` gives for sample.txt.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "strata/data.h"
#include "strata/error.h"
#include "strata/tokenizer.h"
#include "data/tokenizer_fixtures.h"

using strata::Tokenizer;
using strata::test::fixture;
using strata::test::read_ids;
using strata::test::slurp;
using namespace std::string_literals;

namespace {




bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const auto c = uint8_t(s[i]);
    const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((uint8_t(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

// The file with one key replaced: a refusal must name what it refuses.
std::string refusal(const std::string& style, const std::function<void(nlohmann::json&)>& edit) {
  nlohmann::json j = nlohmann::json::parse(slurp(fixture(style + ".json")));
  edit(j);
  try {
    Tokenizer::from_json(j.dump(), style + ".json");
  } catch (const strata::Error& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

TEST_CASE("tokenizer: ids equal Hugging Face tokenizers' for the GPT-2, Llama-3 and Qwen2 styles",
          "[tokenizer]") {
  const std::string sample = slurp(fixture("sample.txt"));
  for (const std::string style : {"gpt2", "llama3", "qwen2"}) {
    INFO(style);
    const Tokenizer tok = Tokenizer::from_file(fixture(style + ".json"));
    CHECK(tok.vocab_size() == 700);
    CHECK(tok.encode(sample) == read_ids(fixture(style + ".sample.ids")));
    CHECK(tok.encode(sample, true) == read_ids(fixture(style + ".sample.special.ids")));
    // Encoding twice (the second from the word cache) gives the same ids.
    CHECK(tok.encode(sample) == tok.encode(sample));
  }
}

TEST_CASE("tokenizer: decode inverts encode; Qwen2's NFC composes the decomposed characters",
          "[tokenizer]") {
  const std::string sample = slurp(fixture("sample.txt"));
  for (const std::string style : {"gpt2", "llama3"}) {
    const Tokenizer tok = Tokenizer::from_file(fixture(style + ".json"));
    CHECK(tok.decode(tok.encode(sample)) == sample);
  }
  const Tokenizer qwen = Tokenizer::from_file(fixture("qwen2.json"));
  const std::vector<uint32_t> ids = qwen.encode(sample);
  const std::string text = qwen.decode(ids);
  CHECK(text != sample);  // "e\u0301" became "\u00e9"
  CHECK(text.find("e\xcc\x81") == std::string::npos);
  CHECK(qwen.encode(text) == ids);
}

TEST_CASE("tokenizer: special tokens are matched whole, skipped on request, templated on request",
          "[tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(fixture("llama3.json"));
  const uint32_t bos = *tok.token_to_id("<|begin_of_text|>");
  const uint32_t eot = *tok.token_to_id("<|eot_id|>");
  CHECK(tok.is_special(bos));
  CHECK_FALSE(tok.is_special(tok.encode("a")[0]));
  const std::vector<uint32_t> ids = tok.encode("hi<|eot_id|>there", true);
  REQUIRE(ids.size() >= 4);
  CHECK(ids.front() == bos);
  CHECK(std::count(ids.begin(), ids.end(), eot) == 1);
  CHECK(tok.decode(ids) == "<|begin_of_text|>hi<|eot_id|>there");
  CHECK(tok.decode(ids, true) == "hithere");
  CHECK_FALSE(tok.token_to_id("no such token").has_value());
}

TEST_CASE("tokenizer: streaming decode emits whole UTF-8 characters and adds up to decode",
          "[tokenizer]") {
  const std::string sample = slurp(fixture("sample.txt"));
  const Tokenizer tok = Tokenizer::from_file(fixture("gpt2.json"));
  const std::vector<uint32_t> ids = tok.encode(sample);
  Tokenizer::Stream stream(tok);
  std::string text;
  int split_chars = 0;
  for (uint32_t id : ids) {
    const std::string piece = stream.push(id);
    CHECK(valid_utf8(piece));
    split_chars += !valid_utf8(tok.id_to_bytes(id));
    text += piece;
  }
  text += stream.finish();
  CHECK(text == sample);
  CHECK(split_chars > 0);  // the sample does split characters across tokens
}

TEST_CASE("tokenizer: the byte tokenizer is encode_bytes", "[tokenizer]") {
  const Tokenizer tok = Tokenizer::bytes();
  const std::string text = "b\xc3\xa9t\x00e"s;
  const std::vector<uint16_t> reference = strata::encode_bytes(text);
  const std::vector<uint32_t> ids = tok.encode(text);
  CHECK(std::vector<uint32_t>(reference.begin(), reference.end()) == ids);
  CHECK(tok.decode(ids) == text);
  CHECK(tok.vocab_size() == 256);
}

TEST_CASE("tokenizer: settings strata does not implement are refused by name", "[tokenizer]") {
  using nlohmann::json;
  CHECK_THAT(refusal("gpt2", [](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }),
             Catch::Contains("normalizer 'Lowercase' is not implemented"));
  CHECK_THAT(refusal("gpt2", [](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }),
             Catch::Contains("pre_tokenizer 'Whitespace'"));
  CHECK_THAT(refusal("gpt2", [](json& j) { j["model"]["byte_fallback"] = true; }),
             Catch::Contains("model.byte_fallback"));
  CHECK_THAT(refusal("gpt2", [](json& j) { j["model"]["continuing_subword_prefix"] = "##"; }),
             Catch::Contains("model.continuing_subword_prefix"));
  CHECK_THAT(refusal("gpt2", [](json& j) { j["model"]["type"] = "WordPiece"; }),
             Catch::Contains("model type 'WordPiece'"));
  CHECK_THAT(refusal("gpt2", [](json& j) { j["truncation"] = {{"max_length", 8}}; }),
             Catch::Contains("'truncation' is set"));
  CHECK_THAT(refusal("gpt2", [](json& j) { j["decoder"] = {{"type", "Metaspace"}}; }),
             Catch::Contains("decoder"));
  CHECK_THAT(refusal("gpt2", [](json& j) { j["added_tokens"][0]["lstrip"] = true; }),
             Catch::Contains("lstrip = true"));
  CHECK_THAT(refusal("llama3", [](json& j) {
               j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
             }),
             Catch::Contains("behavior 'Removed'"));
  CHECK_THAT(refusal("llama3", [](json& j) {
               j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
             }),
             Catch::Contains("does not compile"));
  CHECK_THAT(refusal("gpt2", [](json& j) { j["model"]["merges"].push_back("zz qq"); }),
             Catch::Contains("names a token the vocabulary lacks"));
  CHECK_THAT(refusal("gpt2", [](json& j) { j.erase("model"); }),
             Catch::Contains("not a tokenizer.json strata can read"));
  CHECK_THROWS_WITH(Tokenizer::from_file(fixture("missing.json")), Catch::Contains("missing.json"));
}

TEST_CASE("tokenizer: decode refuses ids outside the vocabulary", "[tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(fixture("gpt2.json"));
  const std::vector<uint32_t> ids{1, 700};
  CHECK_THROWS_WITH(tok.decode(ids), Catch::Contains("token id 700 at index 1 is outside"));
}

TEST_CASE("tokenizer: encode_parallel equals a serial encode on text over several chunks",
          "[tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(fixture("llama3.json"));
  std::string text;
  const std::string sample = slurp(fixture("sample.txt"));
  while (text.size() < (size_t(3) << 18)) text += sample;
  CHECK(strata::encode_parallel(tok, text) == tok.encode(text));
}

TEST_CASE("tokenizer: prepare_text writes uint32 shards for a vocabulary over 65,536, cut at a "
          "line start", "[tokenizer]") {
  nlohmann::json j = nlohmann::json::parse(slurp(fixture("gpt2.json")));
  j["added_tokens"].push_back({{"id", 70000}, {"content", "<|big|>"}, {"special", true}});
  const Tokenizer tok = Tokenizer::from_json(j.dump(), "big.json");
  CHECK(tok.vocab_size() == 70001);
  char dir[] = "/tmp/strata_tok_XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  const std::string input = std::string(dir) + "/in.txt";
  const std::string text = "first line <|big|>\nsecond line\nthird line\n";
  std::ofstream(input, std::ios::binary) << text;
  const strata::PrepareResult r = strata::prepare_text({input}, std::string(dir) + "/out", 0.2, tok);
  const strata::TokenShard train(r.train_path), val(r.val_path);
  CHECK(train.tokens().width() == 4);
  // 20% of 42 bytes is 8: the split moves back from byte 34 to the start of "third line".
  const std::vector<uint32_t> v(val.tokens().begin(), val.tokens().end());
  CHECK(tok.decode(v) == "third line\n");
  const std::vector<uint32_t> t(train.tokens().begin(), train.tokens().end());
  CHECK(tok.decode(t) == "first line <|big|>\nsecond line\n");
  CHECK(std::count(t.begin(), t.end(), 70000u) == 1);
  CHECK_THROWS_WITH(train.validate_tokens(700), Catch::Contains("holds token 70000"));
  std::filesystem::remove_all(dir);
}
