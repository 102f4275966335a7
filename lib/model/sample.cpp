// Autoregressive generation with a KV cache: the prompts are left-padded to the
// longest (KvCache's starts) and prefilled in one Model::decode call, then each step
// decodes one token per row. The next token is
// greedy (temperature 0) or drawn with temperature, top-k and top-p from the
// counter-based RNG: token i of row r uses Philox (seed, r, i), so a sample is
// reproducible, and row 0 draws what a single-prompt sample draws.
// Invariant: every option and the prompts are checked before the model runs.
#include <algorithm>
#include <cmath>
#include <sstream>

#include "common/philox.h"
#include "strata/error.h"
#include "strata/model.h"

namespace strata {

namespace {

constexpr uint32_t kSampleSite = 0x5a3d1e;

void check_options(const Model& model, const std::vector<std::vector<int32_t>>& prompts, const SampleOptions& o) {
  STRATA_CHECK(!prompts.empty(), "sample: no prompts; give at least one");
  size_t P = 0;  // the longest
  for (size_t r = 0; r < prompts.size(); ++r) {
    STRATA_CHECK(!prompts[r].empty(), "sample: prompt " << r << " is empty; give at least one token");
    P = std::max(P, prompts[r].size());
  }
  STRATA_CHECK(o.max_new_tokens >= 1, "sample: max_new_tokens " << o.max_new_tokens << " must be at least 1");
  STRATA_CHECK(o.temperature >= 0, "sample: temperature " << o.temperature << " must be non-negative");
  STRATA_CHECK(o.top_k >= 0, "sample: top_k " << o.top_k << " must be non-negative (0 = whole vocabulary)");
  STRATA_CHECK(o.top_p > 0 && o.top_p <= 1, "sample: top_p " << o.top_p << " must be in (0, 1] (1 = no nucleus cut)");
  const ModelConfig& c = model.config();
  for (int32_t t : o.stop)
    STRATA_CHECK(t >= 0 && t < c.vocab_size,
                 "sample: stop token " << t << " is outside the vocabulary [0, " << c.vocab_size << ")");
  const int64_t need = int64_t(P) + o.max_new_tokens;
  if (need > c.max_seq) {
    std::ostringstream what;
    what << "sample: the " << (prompts.size() > 1 ? "longest " : "") << "prompt's " << P << " tokens + " << o.max_new_tokens << " new tokens = " << need
         << " exceed the model's max_seq " << c.max_seq << "; ";
    if (o.max_new_tokens < c.max_seq) what << "shorten the prompt to at most " << c.max_seq - o.max_new_tokens << " tokens or ";
    if (int64_t(P) < c.max_seq)
      what << "generate at most " << c.max_seq - int64_t(P) << " tokens";
    else
      what << "shorten the prompt below " << c.max_seq << " tokens";
    STRATA_FAIL(what.str());
  }
}

// The next token of row `row` at step `i` from its logits (V).
int32_t pick(const float* logits, int64_t V, const SampleOptions& o, int64_t row, int64_t i,
             std::vector<std::pair<float, int32_t>>& ranked) {
  if (o.temperature == 0) return int32_t(std::max_element(logits, logits + V) - logits);
  for (int64_t v = 0; v < V; ++v) ranked[size_t(v)] = {logits[v] / o.temperature, int32_t(v)};
  int64_t k = o.top_k > 0 ? std::min(o.top_k, V) : V;
  std::partial_sort(ranked.begin(), ranked.begin() + k, ranked.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<double> weight(static_cast<size_t>(k));  // unnormalised probabilities, descending
  double total = 0;
  for (int64_t j = 0; j < k; ++j) total += weight[size_t(j)] = std::exp(double(ranked[size_t(j)].first - ranked[0].first));
  if (o.top_p < 1) {  // the smallest prefix whose probability reaches top_p
    double kept = 0;
    int64_t n = 0;
    while (n < k && (n == 0 || kept < double(o.top_p) * total)) kept += weight[size_t(n++)];
    k = n;
    total = kept;
  }
  double u = double(num::philox_uniform(num::RandomKey{o.seed, kSampleSite, uint32_t(row)}, uint64_t(i))) * total;
  for (int64_t j = 0; j < k; ++j) {
    u -= weight[size_t(j)];
    if (u < 0) return ranked[size_t(j)].second;
  }
  return ranked[size_t(k - 1)].second;
}

}  // namespace

std::vector<std::vector<int32_t>> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const SampleOptions& o) {
  check_options(model, prompts, o);
  const int64_t B = int64_t(prompts.size()), V = model.config().vocab_size;
  int64_t P = 0;
  for (const auto& p : prompts) P = std::max(P, int64_t(p.size()));
  // Left padding to the longest prompt; the padding id (0) is never seen by a real token.
  std::vector<int32_t> step(size_t(B * P), 0);  // (B, T) host tokens of the next call
  std::vector<int32_t> starts;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t pad = P - int64_t(prompts[b].size());
    std::copy(prompts[b].begin(), prompts[b].end(), step.begin() + b * P + pad);
    starts.push_back(int32_t(pad));
  }
  if (std::all_of(starts.begin(), starts.end(), [](int32_t s) { return s == 0; })) starts.clear();
  KvCache cache(model, B, P + o.max_new_tokens, std::move(starts));
  std::vector<float> logits = model.decode(TensorView(step.data(), DType::i32, {B, P}, &model.device()), cache);
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(B));
  std::vector<bool> done(static_cast<size_t>(B), false);
  std::vector<std::pair<float, int32_t>> ranked(static_cast<size_t>(V));
  int64_t running = B;
  for (int64_t i = 0; i < o.max_new_tokens && running > 0; ++i) {
    step.resize(size_t(B));
    for (int64_t b = 0; b < B; ++b) {
      if (done[b]) continue;  // a finished row keeps decoding its last token; its output is ignored
      const int32_t next = pick(logits.data() + b * V, V, o, b, i, ranked);
      step[size_t(b)] = next;
      out[size_t(b)].push_back(next);
      if (o.on_token) o.on_token(b, next);
      if (std::find(o.stop.begin(), o.stop.end(), next) != o.stop.end()) {
        done[b] = true;
        --running;
      }
    }
    if (running > 0 && i + 1 < o.max_new_tokens)
      logits = model.decode(TensorView(step.data(), DType::i32, {B, 1}, &model.device()), cache);
  }
  return out;
}

std::vector<int32_t> sample(Model& model, const std::vector<int32_t>& prompt, const SampleOptions& o) {
  return generate(model, {prompt}, o)[0];
}

}  // namespace strata
