// Generation with a KV cache (lib/model/decode.cpp, lib/model/sample.cpp) against the
// full-context path it replaces, on tiny GPT and LLaMA models in fp32 and bf16:
// greedy tokens identical and logits equal to fp32 noise; batched rows independent;
// top-p and top-k against a reference sampler; stop tokens; streaming; errors.
#include <catch2/catch.hpp>
#include <cmath>
#include <set>

#include "common/philox.h"
#include "generate_support.h"
#include "strata/error.h"
#include "strata/lora.h"
#include "train_support.h"

namespace strata::test {
namespace {

// Max |a - b| over two logit vectors, relative to max |b|.
double relative_max_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0, mag = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    err = std::max(err, std::fabs(double(a[i]) - double(b[i])));
    mag = std::max(mag, std::fabs(double(b[i])));
  }
  return err / mag;
}

// fp32: the two paths run the same ops except attention, whose sums run in another
// order (attention_decode vs attention_forward's blocked GEMMs), and GEMMs over 1
// row instead of T may block their sums differently: fp32 rounding noise, a few
// 1e-6 relative per op through 2 layers. bf16 stores every activation rounded to 8
// bits, so one such noise flip of a rounding is 2^-8 of that value: a few 1e-3.
double logit_tolerance(Precision p) { return p == Precision::fp32 ? 2e-5 : 3e-2; }

TEST_CASE("greedy generation with the KV cache gives the full-context path's tokens and logits", "[train][cpu]") {
  const std::string arch = GENERATE("gpt", "llama", "llama-gqa", "llama-mqa", "qwen2", "llama-hd", "llama-window");
  const Precision precision = GENERATE(Precision::fp32, Precision::bf16);
  INFO(arch << " " << precision_name(precision));
  auto cpu = Device::cpu();
  const ModelConfig c = tiny_config(arch);
  Model m(c, *cpu, precision, 3);
  spread_weights(m, 11);
  const std::vector<int32_t> prompt = {5, 17, 2, 30};
  const int64_t n = c.max_seq - int64_t(prompt.size());  // up to the last position
  const FullContextGreedy ref = full_context_greedy(m, prompt, n);

  // Model::decode step by step, logits compared at every step.
  KvCache cache(m, 1);
  std::vector<int32_t> step = prompt;
  std::vector<int32_t> got;
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<float> l = m.decode(TensorView(step.data(), DType::i32, {1, int64_t(step.size())}), cache);
    CHECK(relative_max_error(l, ref.logits[size_t(i)]) <= logit_tolerance(precision));
    if (precision == Precision::fp32) CHECK(l != ref.logits[size_t(i)]);  // two paths ran, not one twice
    got.push_back(int32_t(std::max_element(l.begin(), l.end()) - l.begin()));
    step = {got.back()};
  }
  CHECK(cache.length() == int64_t(prompt.size()) + n - 1);  // the last token is never fed back
  CHECK(got == ref.tokens);

  SampleOptions so;
  so.max_new_tokens = n, so.temperature = 0;
  CHECK(sample(m, prompt, so) == ref.tokens);
}

TEST_CASE("greedy generation with the KV cache runs attached LoRA adapters as the full-context path does",
          "[train][cpu][lora]") {
  const std::string arch = GENERATE("gpt", "llama", "llama-gqa", "qwen2");
  INFO(arch);
  auto cpu = Device::cpu();
  Model m(tiny_config(arch), *cpu, Precision::fp32, 3);
  spread_weights(m, 15);
  LoraOptions lo;
  lo.targets = LoraTargets::all_linear, lo.rank = 2, lo.alpha = 4.0f, lo.seed = 5;
  Lora lora(m, lo);
  std::mt19937_64 rng(16);  // B = 0 would make the adapters a no-op
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  for (const LoraTensor& t : lora.tensors())
    if (t.key.find("lora_B") != std::string::npos) {
      TensorView b = lora.tensor(t.key);
      std::vector<float> v(size_t(b.numel()));
      for (float& x : v) x = u(rng);
      copy_from_host_f32(b, v.data());
    }
  const std::vector<int32_t> prompt = {4, 8, 15};
  SampleOptions so;
  so.max_new_tokens = 8, so.temperature = 0;
  const std::vector<int32_t> with_lora = sample(m, prompt, so);
  CHECK(with_lora == full_context_greedy(m, prompt, 8).tokens);
  m.attach_lora(nullptr, nullptr);
  CHECK(sample(m, prompt, so) != with_lora);  // the adapters changed the tokens
}

TEST_CASE("batched generation: each row is what its prompt gives alone", "[train][cpu]") {
  auto cpu = Device::cpu();
  Model m(tiny_config("llama"), *cpu, Precision::fp32, 3);
  spread_weights(m, 12);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3}, {9, 8, 7}, {30, 0, 12}};
  SampleOptions so;
  so.max_new_tokens = 6, so.temperature = 0;
  const auto rows = generate(m, prompts, so);
  REQUIRE(rows.size() == 3);
  for (size_t r = 0; r < 3; ++r) CHECK(rows[r] == full_context_greedy(m, prompts[r], 6).tokens);
  // Sampled: row 0 draws what a single prompt draws; row r's draws are keyed by r.
  so.temperature = 1.0f, so.seed = 4;
  CHECK(generate(m, prompts, so)[0] == sample(m, prompts[0], so));
  CHECK(generate(m, prompts, so) == generate(m, prompts, so));
}

// The reference sampler: softmax in double over the logits / temperature, the top k
// by probability, the smallest prefix reaching top_p, then inverse CDF at Philox's u.
int32_t reference_pick(const std::vector<float>& logits, float temperature, int64_t top_k, double top_p, uint64_t seed,
                       int64_t i) {
  std::vector<std::pair<double, int32_t>> p;
  for (size_t v = 0; v < logits.size(); ++v) p.push_back({double(logits[v]) / temperature, int32_t(v)});
  std::stable_sort(p.begin(), p.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  if (top_k > 0) p.resize(size_t(top_k));
  const double max = p[0].first;
  double total = 0;
  for (auto& x : p) total += x.first = std::exp(x.first - max);
  size_t keep = 0;
  double kept = 0;
  while (keep < p.size() && (keep == 0 || kept < top_p * total)) kept += p[keep++].first;
  double u = double(num::philox_uniform(num::RandomKey{seed, 0x5a3d1e, 0}, uint64_t(i))) * kept;
  for (size_t j = 0; j < keep; ++j)
    if ((u -= p[j].first) < 0) return p[j].second;
  return p[keep - 1].second;
}

TEST_CASE("sampling: top-p and top-k draw as the reference sampler; top-p near 0 is greedy", "[train][cpu]") {
  auto cpu = Device::cpu();
  Model m(tiny_config("gpt"), *cpu, Precision::fp32, 3);
  spread_weights(m, 13, 0.15f);  // a flatter distribution: several tokens in every nucleus
  const std::vector<int32_t> prompt = {3, 1, 4, 1};
  const std::vector<float> logits =
      m.last_logits(TensorView(const_cast<int32_t*>(prompt.data()), DType::i32, {1, 4}));
  SampleOptions so;
  so.max_new_tokens = 1;
  std::set<int32_t> seen;
  for (auto [top_k, top_p] : {std::pair<int64_t, float>{0, 1.0f}, {0, 0.5f}, {5, 1.0f}, {5, 0.7f}}) {
    so.top_k = top_k, so.top_p = top_p;
    for (uint64_t seed = 1; seed <= 40; ++seed) {
      so.seed = seed;
      const int32_t want = reference_pick(logits, so.temperature, top_k, top_p, seed, 0);
      INFO("top_k " << top_k << " top_p " << top_p << " seed " << seed);
      REQUIRE(sample(m, prompt, so)[0] == want);
      seen.insert(want);
    }
  }
  CHECK(seen.size() > 3);  // the draws really vary
  // A vanishing nucleus keeps only the most likely token: greedy, at any temperature.
  so.top_k = 0, so.top_p = 1e-6f, so.temperature = 1.5f, so.max_new_tokens = 7;
  SampleOptions greedy = so;
  greedy.temperature = 0;
  for (uint64_t seed : {1, 2, 3}) {
    so.seed = seed;
    CHECK(sample(m, prompt, so) == sample(m, prompt, greedy));
  }
}

TEST_CASE("sampling: a row stops after its stop token; tokens stream in order", "[train][cpu]") {
  auto cpu = Device::cpu();
  Model m(tiny_config("gpt"), *cpu, Precision::fp32, 3);
  spread_weights(m, 14);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2}, {7, 7}};
  SampleOptions so;
  so.max_new_tokens = 8, so.temperature = 0;
  const auto free_run = generate(m, prompts, so);
  REQUIRE(free_run[0].size() == 8);
  const int32_t stop = free_run[0][3];
  so.stop = {stop, 36};
  std::vector<std::vector<int32_t>> streamed(2);
  so.on_token = [&](int64_t row, int32_t t) { streamed[size_t(row)].push_back(t); };
  const auto stopped = generate(m, prompts, so);
  for (size_t r = 0; r < 2; ++r) {
    // Up to and including the first stop token, then nothing: each row on its own.
    std::vector<int32_t> want;
    for (int32_t t : free_run[r]) {
      want.push_back(t);
      if (t == stop || t == 36) break;
    }
    CHECK(stopped[r] == want);
    CHECK(streamed[r] == want);
  }
  CHECK(stopped[0].size() <= 4);
}

TEST_CASE("generation refuses prompts past max_seq and bad options before running", "[train][cpu]") {
  auto cpu = Device::cpu();
  const ModelConfig c = tiny_config("gpt");  // max_seq 12
  Model m(c, *cpu, Precision::fp32, 3);
  SampleOptions so;
  so.max_new_tokens = 5;
  REQUIRE_THROWS_WITH(sample(m, std::vector<int32_t>(8, 1), so),
                      Catch::Contains("the prompt's 8 tokens + 5 new tokens = 13 exceed the model's max_seq 12") &&
                          Catch::Contains("shorten the prompt to at most 7 tokens or generate at most 4 tokens"));
  REQUIRE_THROWS_WITH(generate(m, {{1, 2}, {}}, so), Catch::Contains("prompt 1 is empty"));  // unequal lengths are left-padded
  so.top_p = 0;
  REQUIRE_THROWS_WITH(sample(m, {1}, so), Catch::Contains("top_p 0 must be in (0, 1]"));
  so.top_p = 1, so.stop = {37};
  REQUIRE_THROWS_WITH(sample(m, {1}, so), Catch::Contains("stop token 37 is outside the vocabulary [0, 37)"));
  // Model::decode: the cache's room and batch.
  KvCache cache(m, 1, 4);
  std::vector<int32_t> five(5, 1), two(2, 1);
  REQUIRE_THROWS_WITH(m.decode(TensorView(five.data(), DType::i32, {1, 5}), cache),
                      Catch::Contains("5 new positions after 0 cached ones exceed the cache's capacity 4"));
  REQUIRE_THROWS_WITH(m.decode(TensorView(two.data(), DType::i32, {2, 1}), cache),
                      Catch::Contains("2 rows of tokens for a KV cache of batch 1"));
  CHECK(cache.length() == 0);  // nothing ran
  REQUIRE_THROWS_WITH(KvCache(m, 1, 13), Catch::Contains("capacity 13 must be in [1, max_seq = 12]"));
}

}  // namespace
}  // namespace strata::test
