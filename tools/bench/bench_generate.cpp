// Generation: time per generated token with the KV cache (Model::decode, one token
// per step after the prompt's prefill) at contexts 16 and 1024, batch 1, CPU:
// - gpt-mini (4 layers, width 256, max_seq raised to 1088), against the full-context
//   path (Model::last_logits over the whole context for every token) it replaced;
// - gpt2-small (124M, max_seq raised to 1088), decoding only.
// The target: a token at context 1024 within 1.3x the time of one at context 16. A
// decoded token reads every weight once and the KV cache once, so when both stream
// from memory the ratio cannot beat (weights + cache at 1024) / (weights + cache at
// 16), printed as the memory-bound ratio: for gpt-mini the cache at 1024 is most of
// the weights' size, for gpt2-small a small part.
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

// Seconds per token decoded after a prompt of `context` tokens (the best of `runs`).
double decode_seconds(Model& m, int64_t context, int runs = 3) {
  const std::vector<int32_t> prompt = random_tokens(1, context, m.config().vocab_size);
  double best = 1e300;
  for (int run = 0; run < runs; ++run) {
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

// Bytes a decoded token reads: every weight but the position table (one row of it),
// and the k and v of `context` cached positions in every layer.
double weight_bytes(const Model& m) {
  const ModelConfig& c = m.config();
  const int64_t positions = c.positions == PositionKind::learned ? c.max_seq * c.d_model : 0;
  return double(m.num_parameters() - positions) * double(dtype_size(precision_dtype(m.precision())));
}
double cache_bytes(const Model& m, int64_t context) {
  const ModelConfig& c = m.config();
  return double(2 * c.n_layers * context * c.kv_heads() * c.head_dim()) *
         double(dtype_size(precision_dtype(m.precision())));
}

// One model's rows: per precision, contexts 16 and 1024, their ratio and its memory bound.
void decode_rows(Table& t, const std::string& preset, bool full_context, int runs) {
  auto device = Device::cpu();
  ModelConfig c = ModelConfig::preset(preset);
  c.max_seq = 1024 + 64;
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    Model m(c, *device, p, 1);
    double kv[2] = {};
    int i = 0;
    for (int64_t context : {int64_t(16), int64_t(1024)}) {
      kv[i] = decode_seconds(m, context, runs);
      const double full = full_context ? full_context_seconds(m, context) : 0;
      t.row({preset, precision_name(p), std::to_string(context), format_seconds(kv[i]), format_fixed(1.0 / kv[i], 0),
             format_fixed((weight_bytes(m) + cache_bytes(m, context)) / 1e6, 1),
             full_context ? format_seconds(full) : "", full_context ? format_ratio(full / kv[i]) : ""});
      ++i;
    }
    const double bound = (weight_bytes(m) + cache_bytes(m, 1024)) / (weight_bytes(m) + cache_bytes(m, 16));
    t.row({preset, precision_name(p), "1024 / 16", format_ratio(kv[1] / kv[0]), "", "bound " + format_ratio(bound),
           "", ""});
  }
}

void bench_generate() {
  Table t({"model", "precision", "context", "KV cache / token", "tokens/s", "MB read / token", "full context / token",
           "speed-up"});
  decode_rows(t, "gpt-mini", true, 3);
  decode_rows(t, "gpt2-small", false, 2);
  t.print("generation, batch 1 (KV cache; gpt-mini also against re-running the context)");
}

}  // namespace

STRATA_BENCH("generate", bench_generate);

}  // namespace strata::bench
