// Generation: time per generated token with the KV cache (Model::decode, one token
// per step after the prompt's prefill) at contexts 16 and 1024, against the
// full-context path (Model::last_logits over the whole context for every token) it
// replaced, on gpt-mini (4 layers, width 256, max_seq raised to 1088), batch 1, CPU.
// The target: a token at context 1024 within 1.3x the time of one at context 16.
#include <chrono>
#include <cstdio>
#include <vector>

#include "bench.h"
#include "common/philox.h"
#include "strata/strata.h"

namespace strata::bench {

namespace {

constexpr int64_t kSteps = 32;  // decoded tokens timed per context

std::vector<int32_t> random_tokens(uint64_t seed, int64_t n, int64_t vocab) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = int32_t(num::philox_word(num::RandomKey{seed, 0, 0}, uint64_t(i)) % vocab);
  return v;
}

// Seconds per token decoded after a prompt of `context` tokens (the best of 3 runs).
double decode_seconds(Model& m, int64_t context) {
  const std::vector<int32_t> prompt = random_tokens(1, context, m.config().vocab_size);
  double best = 1e300;
  for (int run = 0; run < 3; ++run) {
    KvCache cache(m, 1, context + kSteps);
    m.decode(TensorView(const_cast<int32_t*>(prompt.data()), DType::i32, {1, context}), cache);
    int32_t next = 1;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < kSteps; ++i) {
      const std::vector<float> l = m.decode(TensorView(&next, DType::i32, {1, 1}), cache);
      next = int32_t(i % m.config().vocab_size);
      (void)l;
    }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / kSteps);
  }
  return best;
}

// Seconds per token of the full-context path: last_logits over `context` tokens.
double full_context_seconds(Model& m, int64_t context) {
  std::vector<int32_t> tokens = random_tokens(2, context, m.config().vocab_size);
  return min_seconds([&] { m.last_logits(TensorView(tokens.data(), DType::i32, {1, context})); }, 1, 3, 0.2);
}

void bench_generate() {
  auto device = Device::cpu();
  ModelConfig c = ModelConfig::preset("gpt-mini");
  c.max_seq = 1024 + 64;
  Table t({"precision", "context", "KV cache / token", "tokens/s", "full context / token", "speed-up"});
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    Model m(c, *device, p, 1);
    double at16 = 0;
    for (int64_t context : {int64_t(16), int64_t(1024)}) {
      const double kv = decode_seconds(m, context), full = full_context_seconds(m, context);
      if (context == 16) at16 = kv;
      t.row({precision_name(p), std::to_string(context), format_seconds(kv), format_fixed(1.0 / kv, 0),
             format_seconds(full), format_ratio(full / kv)});
    }
    t.row({precision_name(p), "1024 / 16", format_ratio(decode_seconds(m, 1024) / at16), "", "", ""});
  }
  t.print("generation, gpt-mini batch 1 (KV cache vs re-running the context)");
}

}  // namespace

STRATA_BENCH("generate", bench_generate);

}  // namespace strata::bench
