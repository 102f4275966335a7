// Batched generation of prompts of different lengths (left padding: KvCache's starts,
// lib/model/decode.cpp, lib/model/sample.cpp): every row's logits and tokens are
// bitwise those of the row alone, on GPT-2 (learned positions) and LLaMA shapes
// (RoPE, grouped-query, rope scaling, sliding window), fp32 and bf16; the padding id
// changes nothing, and attending the padding would (so the equality can fail).
#include <catch2/catch.hpp>

#include "generate_support.h"
#include "strata/error.h"
#include "train_support.h"

namespace strata::test {
namespace {

ModelConfig padded_config(const std::string& arch) {
  if (arch != "llama-llama3" && arch != "llama-linear") return tiny_config(arch);
  ModelConfig c = tiny_config("llama-gqa");
  c.rope_scaling.kind = arch == "llama-llama3" ? RopeScalingKind::llama3 : RopeScalingKind::linear;
  c.rope_scaling.factor = 4.0f;
  c.rope_scaling.original_max_seq = 8;
  return c;
}

// Per step, each row's logits (V) from Model::decode: the prompts left-padded with
// `pad` into one batch, then teacher-forced along `next` (one token per row per step).
std::vector<std::vector<std::vector<float>>> batched_logits(Model& m, const std::vector<std::vector<int32_t>>& prompts,
                                                            const std::vector<std::vector<int32_t>>& next, int32_t pad,
                                                            bool use_starts = true) {
  const int64_t B = int64_t(prompts.size()), V = m.config().vocab_size;
  int64_t P = 0;
  for (const auto& p : prompts) P = std::max(P, int64_t(p.size()));
  std::vector<int32_t> step(size_t(B * P), pad), starts;
  for (int64_t b = 0; b < B; ++b) {
    starts.push_back(int32_t(P - int64_t(prompts[size_t(b)].size())));
    std::copy(prompts[size_t(b)].begin(), prompts[size_t(b)].end(), step.begin() + b * P + starts.back());
  }
  KvCache cache(m, B, P + int64_t(next[0].size()), use_starts ? starts : std::vector<int32_t>{});
  std::vector<std::vector<std::vector<float>>> out;
  for (size_t i = 0;; ++i) {
    const std::vector<float> l = m.decode(TensorView(step.data(), DType::i32, {B, int64_t(step.size()) / B}), cache);
    out.emplace_back();
    for (int64_t b = 0; b < B; ++b) out.back().emplace_back(l.begin() + b * V, l.begin() + (b + 1) * V);
    if (i == next[0].size()) return out;
    step.resize(size_t(B));
    for (int64_t b = 0; b < B; ++b) step[size_t(b)] = next[size_t(b)][i];
  }
}

TEST_CASE("left-padded batched generation: each row is bitwise the row alone", "[train][cpu]") {
  const std::string arch = GENERATE("gpt", "llama", "llama-gqa", "llama-mqa", "qwen2", "llama-hd", "llama-window",
                                    "llama-llama3", "llama-linear");
  const Precision precision = GENERATE(Precision::fp32, Precision::bf16);
  INFO(arch << " " << precision_name(precision));
  auto cpu = Device::cpu();
  Model m(padded_config(arch), *cpu, precision, 3);
  spread_weights(m, 31);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17}, {30, 1, 9, 4, 22}, {8, 3, 12}};
  const int64_t n = 6;
  SampleOptions so;
  so.max_new_tokens = n, so.temperature = 0;
  const auto rows = generate(m, prompts, so);
  REQUIRE(rows.size() == prompts.size());
  std::vector<std::vector<int32_t>> alone;
  for (size_t r = 0; r < prompts.size(); ++r) {
    alone.push_back(sample(m, prompts[r], so));
    CHECK(rows[r] == alone[r]);
    if (precision == Precision::fp32) CHECK(rows[r] == full_context_greedy(m, prompts[r], n).tokens);
  }

  // Logits, teacher-forced along each row's own tokens: bitwise equal to the row alone,
  // whatever the padding id; without the starts the padding is attended and they differ.
  const auto batched = batched_logits(m, prompts, alone, 0);
  const auto other_pad = batched_logits(m, prompts, alone, 29);
  const auto attended = batched_logits(m, prompts, alone, 0, false);
  for (size_t r = 0; r < prompts.size(); ++r) {
    const auto single = batched_logits(m, {prompts[r]}, {alone[r]}, 0);
    for (size_t i = 0; i < single.size(); ++i) {
      INFO("row " << r << " step " << i);
      CHECK(batched[i][r] == single[i][0]);
      CHECK(other_pad[i][r] == single[i][0]);
    }
    if (prompts[r].size() < 5) CHECK(attended[0][r] != single[0][0]);  // a padded row
  }

  // Sampled: row 0 draws as a single prompt does, whether it is padded or the longest.
  so.temperature = 1.0f, so.top_k = 12, so.top_p = 0.9f, so.seed = 6;
  for (const auto& order : {prompts, std::vector<std::vector<int32_t>>{prompts[1], prompts[0], prompts[2]}}) {
    const auto drawn = generate(m, order, so);
    CHECK(drawn[0] == sample(m, order[0], so));
    CHECK(drawn == generate(m, order, so));
  }
}

TEST_CASE("left-padded generation with stop tokens: a padded row stops where it stops alone", "[train][cpu]") {
  auto cpu = Device::cpu();
  Model m(tiny_config("llama-gqa"), *cpu, Precision::fp32, 3);
  spread_weights(m, 32);
  const std::vector<std::vector<int32_t>> prompts = {{7}, {2, 14, 9, 30}};
  SampleOptions so;
  so.max_new_tokens = 8, so.temperature = 0;
  const std::vector<int32_t> short_alone = sample(m, prompts[0], so);
  so.stop = {short_alone[2]};  // the short row stops at its third token at the latest
  const auto rows = generate(m, prompts, so);
  CHECK(rows[0] == sample(m, prompts[0], so));
  CHECK(rows[0].size() <= 3);
  CHECK(rows[1] == sample(m, prompts[1], so));
}

TEST_CASE("left padding: bad starts and prompts are refused before anything runs", "[train][cpu]") {
  auto cpu = Device::cpu();
  const ModelConfig c = tiny_config("llama");
  Model m(c, *cpu, Precision::fp32, 3);
  REQUIRE_THROWS_WITH(KvCache(m, 2, 8, {1}), Catch::Contains("1 padding starts for a batch of 2"));
  REQUIRE_THROWS_WITH(KvCache(m, 2, 8, {0, 8}), Catch::Contains("row 1 starts at 8") && Catch::Contains("[0, 8)"));
  REQUIRE_THROWS_WITH(KvCache(m, 1, 8, {-1}), Catch::Contains("row 0 starts at -1"));
  SampleOptions so;
  so.max_new_tokens = 2;
  REQUIRE_THROWS_WITH(generate(m, {{1, 2}, {}}, so), Catch::Contains("prompt 1 is empty"));
  const std::vector<int32_t> longest(size_t(c.max_seq - 1), 3);
  REQUIRE_THROWS_WITH(generate(m, {{1}, longest}, so),
                      Catch::Contains("longest prompt's " + std::to_string(c.max_seq - 1) + " tokens"));
}

}  // namespace
}  // namespace strata::test
