// Instruction data: prompt/response JSONL -> shards with a loss mask -> batches whose
// targets are -100 on exactly the prompt positions -> a training step on them. Uses the
// SentencePiece fixture (tests/data/tokenizers/spm.model: <s> = 1, </s> = 2).
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "strata/error.h"
#include "strata/strata.h"
#include "data/temp_dir.h"
#include "data/tokenizer_fixtures.h"
#include "support/host_tensor.h"

using namespace strata;
using strata::test::cpu;
using strata::test::TempDir;
using strata::test::fixture;

namespace {

std::string write_text(const strata::test::TempDir& dir, const std::string& name, const std::string& text) {
  std::ofstream(dir.file(name), std::ios::binary) << text;
  return dir.file(name);
}



const std::vector<std::pair<std::string, std::string>> kExamples = {
    {"What is the capital of France?", "Paris."},
    {"Name a fruit.", "An apple, or a pear."},
    {"Translate 'cat' to French.", "chat"},
    {"Add 2 and 3.", "5"},
    {"Say hello.", "Hello there, friend!"},
};

std::string jsonl() {
  std::string s;
  for (const auto& [p, r] : kExamples)
    s += nlohmann::json{{"prompt", p}, {"response", r}, {"id", 7}}.dump() + "\n\n";
  return s;
}

}  // namespace

TEST_CASE("instructions: an example is prompt with bos, response, eos; the mask marks the response",
          "[data][tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(fixture("spm.model"));
  const InstructionTokens t = encode_instruction(tok, "Name a fruit.", "An apple.", *tok.eos_id());
  const std::vector<uint32_t> prompt = tok.encode("Name a fruit.", true), response = tok.encode("An apple.");
  REQUIRE(t.tokens.size() == prompt.size() + response.size() + 1);
  CHECK(t.tokens.front() == *tok.bos_id());
  CHECK(t.tokens.back() == *tok.eos_id());
  CHECK(std::equal(prompt.begin(), prompt.end(), t.tokens.begin()));
  for (size_t i = 0; i < t.tokens.size(); ++i) CHECK(t.loss_mask[i] == (i >= prompt.size() ? 1 : 0));
}

TEST_CASE("instructions: batch targets are -100 on exactly the prompt positions, and a step runs",
          "[data][tokenizer][train]") {
  const Tokenizer tok = Tokenizer::from_file(fixture("spm.model"));
  TempDir dir;
  const PrepareResult r = prepare_instructions(write_text(dir, "sft.jsonl", jsonl()), dir.path() + "/sft", 0.2,
                                               tok, *tok.eos_id());
  // The expected stream: the first four examples (the fifth is validation).
  std::vector<uint32_t> tokens;
  std::vector<uint16_t> mask;
  for (size_t i = 0; i < 4; ++i) {
    const InstructionTokens t = encode_instruction(tok, kExamples[i].first, kExamples[i].second, 2);
    tokens.insert(tokens.end(), t.tokens.begin(), t.tokens.end());
    mask.insert(mask.end(), t.loss_mask.begin(), t.loss_mask.end());
  }
  CHECK(r.train_tokens == int64_t(tokens.size()));
  CHECK(r.val_tokens == int64_t(encode_instruction(tok, kExamples[4].first, kExamples[4].second, 2).tokens.size()));
  const auto data = std::make_shared<const TokenDataset>(r.train_path);
  REQUIRE(data->has_loss_mask());
  const int64_t T = 16;
  LoaderOptions lo;
  lo.seq_len = T;
  lo.shuffle = false;
  BatchLoader loader(data, lo);
  int64_t prompt_targets = 0, response_targets = 0;
  for (int64_t k = 0; k < loader.num_batches(); ++k) {
    const TokenBatch b = loader.next();
    const int64_t p = b.positions[0];
    for (int64_t t = 0; t < T; ++t) {
      const size_t target = size_t(p + t + 1);
      CHECK(b.inputs[size_t(t)] == int32_t(tokens[target - 1]));
      CHECK(b.targets[size_t(t)] == (mask[target] ? int32_t(tokens[target]) : -100));
      (mask[target] ? response_targets : prompt_targets) += 1;
    }
  }
  CHECK(prompt_targets > 0);
  CHECK(response_targets > 0);

  // The masked loss is the mean of the per-position losses of the response targets only.
  ModelConfig c = ModelConfig::preset("demo");
  c.n_layers = 1, c.d_model = 32, c.n_heads = 2, c.d_mlp = 64, c.vocab_size = 1024, c.max_seq = T;
  Model m(c, cpu(), Precision::fp32, 1);
  TrainOptions o;
  o.schedule.kind = ScheduleKind::constant;
  Trainer trainer(m, o);
  loader.reset();
  TokenBatch b = loader.next();
  const float masked = trainer.evaluate(b.batch());
  double sum = 0;
  int n = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (b.targets[size_t(t)] == -100) continue;
    TokenBatch one = b;
    for (int64_t u = 0; u < T; ++u)
      if (u != t) one.targets[size_t(u)] = -100;
    sum += trainer.evaluate(one.batch());
    ++n;
  }
  REQUIRE(n > 0);
  CHECK(masked == Approx(sum / n).epsilon(1e-5));
  const StepReport step = trainer.train_step({b.batch()});
  CHECK(std::isfinite(step.loss));
  CHECK(trainer.evaluate(b.batch()) < masked);
}

TEST_CASE("instructions: a malformed line is refused by line number and key, writing nothing",
          "[data][tokenizer]") {
  const Tokenizer tok = Tokenizer::from_file(fixture("spm.model"));
  TempDir dir;
  const std::string good = R"({"prompt": "a", "response": "b"})";
  auto refusal = [&](const std::string& bad_line) {
    const std::string path = write_text(dir, "bad.jsonl", good + "\n\n" + bad_line + "\n");
    try {
      prepare_instructions(path, dir.path() + "/out", 0, tok, 2);
    } catch (const Error& e) {
      CHECK_FALSE(std::filesystem::exists(dir.path() + "/out_train.bin"));
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };
  CHECK_THAT(refusal(R"({"prompt": "a"})"), Catch::Contains("bad.jsonl:3: no \"response\" key"));
  CHECK_THAT(refusal(R"({"prompt": 5, "response": "b"})"),
             Catch::Contains("bad.jsonl:3: \"prompt\" is a number, not a string"));
  CHECK_THAT(refusal(R"({"prompt": "a", "response": ""})"), Catch::Contains(":3: \"response\" is empty"));
  CHECK_THAT(refusal(R"({"prompt": "a", "respo)"), Catch::Contains("bad.jsonl:3: not a JSON object"));
  CHECK_THAT(refusal(R"(["a", "b"])"), Catch::Contains("bad.jsonl:3: a JSON array"));
  CHECK_THROWS_WITH(prepare_instructions(write_text(dir, "e.jsonl", "\n"), dir.path() + "/out", 0, tok, 2),
                    Catch::Contains("holds no examples"));
  CHECK_THROWS_WITH(prepare_instructions(write_text(dir, "ok.jsonl", good), dir.path() + "/out", 0, tok, 5000),
                    Catch::Contains("end-of-sequence id 5000 is outside"));
}

TEST_CASE("instructions: shards with and without a loss mask are not mixed", "[data]") {
  TempDir dir;
  const std::vector<uint32_t> t(8, 1);
  const std::vector<uint16_t> short_mask(4, 1);
  write_token_shard(dir.path() + "/a.bin", std::span<const uint32_t>(t), 256);
  write_token_shard(dir.path() + "/b.bin", std::span<const uint32_t>(t), 256);
  write_token_shard(dir.path() + "/a.lossmask", std::span<const uint16_t>(short_mask));
  CHECK_THROWS_WITH(TokenDataset(dir.path() + "/*.bin"), Catch::Contains("holds 4 entries for the 8 tokens"));
  std::filesystem::remove(dir.path() + "/a.lossmask");
  write_token_shard(dir.path() + "/a.lossmask", std::span<const uint16_t>(std::vector<uint16_t>(8, 1)));
  CHECK_THROWS_WITH(TokenDataset(dir.path() + "/*.bin"), Catch::Contains("1 of 2 shards have a loss mask"));
}
