// The SentencePiece tokenizer against the Python `sentencepiece` library: the fixture
// tests/data/tokenizers/spm.model (made by tools/hf/make_spm_fixture.py: BPE with byte
// fallback, vocabulary 1000) and the ids `sentencepiece` gives for sample.txt.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "strata/data.h"
#include "strata/error.h"
#include "strata/tokenizer.h"
#include "data/tokenizer_fixtures.h"

using strata::Tokenizer;
using strata::test::fixture;
using strata::test::read_ids;
using strata::test::slurp;

TEST_CASE("sentencepiece: ids equal the sentencepiece library's for sample.txt", "[tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(fixture("spm.model"));
  CHECK(tok.kind() == Tokenizer::Kind::sentencepiece);
  CHECK(tok.vocab_size() == 1000);
  const std::string sample = slurp(fixture("sample.txt"));
  CHECK(tok.encode(sample) == read_ids(fixture("spm.sample.ids")));
  CHECK(tok.encode(sample, true) == read_ids(fixture("spm.sample.special.ids")));
  // The file's bytes without the .model name are recognised by content.
  const Tokenizer by_content = Tokenizer::from_sentencepiece(slurp(fixture("spm.model")), "x");
  CHECK(by_content.encode(sample) == tok.encode(sample));
}

TEST_CASE("sentencepiece: special ids, decode round trip and skip_special_tokens", "[tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(fixture("spm.model"));
  CHECK(tok.unk_id() == 0u);
  CHECK(tok.bos_id() == 1u);
  CHECK(tok.eos_id() == 2u);
  CHECK(tok.is_special(1));
  CHECK(tok.token_to_id("</s>") == 2u);
  CHECK_FALSE(tok.token_to_id("no such piece").has_value());
  const std::string sample = slurp(fixture("sample.txt"));
  std::vector<uint32_t> ids = tok.encode(sample, true);
  ids.push_back(*tok.eos_id());
  CHECK(tok.decode(ids, true) == sample);  // the dummy-prefix space is dropped, as spm does
  CHECK(tok.decode(ids) == "<s>" + sample + "</s>");
  // The sample has characters outside the 1000 pieces: byte fallback encodes them.
  const std::vector<uint32_t> plain = tok.encode(sample);
  CHECK(std::count_if(plain.begin(), plain.end(), [&](uint32_t id) {
          return tok.id_to_bytes(id).size() == 1 && uint8_t(tok.id_to_bytes(id)[0]) >= 0x80;
        }) > 0);
}

TEST_CASE("sentencepiece: streaming decode adds up to decode", "[tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(fixture("spm.model"));
  const std::string sample = slurp(fixture("sample.txt"));
  Tokenizer::Stream stream(tok, true);
  std::string text;
  for (uint32_t id : tok.encode(sample, true)) text += stream.push(id);
  text += stream.finish();
  CHECK(text == sample);
}

TEST_CASE("sentencepiece: a file that is neither format is refused by name", "[tokenizer]") {
  CHECK_THROWS_WITH(Tokenizer::from_file(fixture("sample.txt")),
                    Catch::Contains("sample.txt: neither a Hugging Face tokenizer.json") &&
                        Catch::Contains("nor a SentencePiece model"));
  CHECK_THROWS_WITH(Tokenizer::from_sentencepiece("not a model", "junk.model"),
                    Catch::Contains("junk.model: neither"));
  CHECK_THROWS_WITH(Tokenizer::from_file(fixture("missing.model")),
                    Catch::Contains("missing.model") && Catch::Contains("tokenizer.model"));
}

TEST_CASE("sentencepiece: prepare_text writes the ids of a whole-file encode", "[tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(fixture("spm.model"));
  char dir[] = "/tmp/strata_spm_XXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  const std::string sample = slurp(fixture("sample.txt"));
  std::string text;
  while (text.size() < (size_t(3) << 18)) text += sample;  // more than one parallel chunk
  CHECK(strata::encode_parallel(tok, text) == tok.encode(text));
  const std::string input = std::string(dir) + "/in.txt";
  std::ofstream(input, std::ios::binary) << sample;
  const strata::PrepareResult r = strata::prepare_text({input}, std::string(dir) + "/out", 0, tok);
  const strata::TokenShard train(r.train_path);
  CHECK(std::vector<uint32_t>(train.tokens().begin(), train.tokens().end()) == tok.encode(sample));
  std::filesystem::remove_all(dir);
}
