// Autoregressive sampling with temperature and top-k, drawing from the counter-based
// RNG: token i of a sample uses Philox (seed, i), so a sample is reproducible.
#include <algorithm>
#include <cmath>

#include "common/philox.h"
#include "strata/error.h"
#include "strata/model.h"

namespace strata {

std::vector<int32_t> sample(Model& model, const std::vector<int32_t>& prompt, const SampleOptions& o) {
  STRATA_CHECK(!prompt.empty(), "sample: the prompt is empty; give at least one token");
  STRATA_CHECK(o.temperature >= 0, "sample: temperature " << o.temperature << " must be non-negative");
  STRATA_CHECK(o.top_k >= 0, "sample: top_k " << o.top_k << " must be non-negative (0 = whole vocabulary)");
  const int64_t V = model.config().vocab_size;
  std::vector<int32_t> context = prompt, out;
  std::vector<std::pair<float, int32_t>> ranked(static_cast<size_t>(V));
  for (int64_t i = 0; i < o.max_new_tokens; ++i) {
    const int64_t T = std::min<int64_t>(int64_t(context.size()), model.config().max_seq);
    TensorView in(context.data() + context.size() - size_t(T), DType::i32, {1, T}, &model.device());
    std::vector<float> logits = model.last_logits(in);
    int32_t next = 0;
    if (o.temperature == 0) {
      next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    } else {
      for (int64_t v = 0; v < V; ++v) ranked[size_t(v)] = {logits[size_t(v)] / o.temperature, int32_t(v)};
      const int64_t k = o.top_k > 0 ? std::min(o.top_k, V) : V;
      std::partial_sort(ranked.begin(), ranked.begin() + k, ranked.end(),
                        [](const auto& a, const auto& b) { return a.first > b.first; });
      double total = 0;
      for (int64_t j = 0; j < k; ++j) total += std::exp(double(ranked[size_t(j)].first - ranked[0].first));
      double u = double(num::philox_uniform(num::RandomKey{o.seed, 0x5a3d1e, 0}, uint64_t(i))) * total;
      next = ranked[size_t(k - 1)].second;
      for (int64_t j = 0; j < k; ++j) {
        u -= std::exp(double(ranked[size_t(j)].first - ranked[0].first));
        if (u < 0) {
          next = ranked[size_t(j)].second;
          break;
        }
      }
    }
    context.push_back(next);
    out.push_back(next);
  }
  return out;
}

}  // namespace strata
