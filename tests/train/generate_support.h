// Support for the generation tests: models whose logits are far from uniform (so a
// greedy choice is not decided by rounding), and the full-context reference that
// generation with a KV cache must reproduce.
// Invariant: the reference re-runs the whole context through Model::last_logits for
// every token — the path generation used before the KV cache — and shares no code
// with Model::decode.
#pragma once
#include <algorithm>
#include <random>
#include <vector>

#include "strata/model.h"

namespace strata::test {

// Every parameter uniform in [-scale, scale] (norm weights around 1), from `seed`.
inline void spread_weights(Model& m, uint64_t seed, float scale = 0.3f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  for (const ParamInfo& p : m.parameters()) {
    const bool norm = p.shape.size() == 1 && p.name.find("ln_") != std::string::npos;
    std::vector<float> v(size_t(p.numel()));
    for (float& x : v) x = (norm ? 1.0f : 0.0f) + u(rng);
    copy_from_host_f32(m.parameter(p.name), v.data());
  }
}

struct FullContextGreedy {
  std::vector<int32_t> tokens;
  std::vector<std::vector<float>> logits;  // the logits each token was chosen from
};

inline FullContextGreedy full_context_greedy(Model& m, std::vector<int32_t> context, int64_t n) {
  FullContextGreedy r;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> l =
        m.last_logits(TensorView(context.data(), DType::i32, {1, int64_t(context.size())}, &m.device()));
    const int32_t next = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
    r.tokens.push_back(next);
    r.logits.push_back(std::move(l));
    context.push_back(next);
  }
  return r;
}

}  // namespace strata::test
