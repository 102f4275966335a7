// The sequence-classification head and masked-LM training (strata/unit.h heads,
// strata/data.h mask_tokens): the classifier's loss against a double-precision
// reference computed from the trunk's output, its gradients against finite
// differences, its target convention enforced before anything runs; BERT masking
// reproducible and in its proportions; a masked LM's trunk really bidirectional.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include "strata/data.h"
#include "strata/gradcheck.h"
#include "strata/strata.h"
#include "train_support.h"

using namespace strata;
using namespace strata::test;

namespace {

constexpr int64_t kClasses = 3;

ModelConfig encoder_config(const char* arch) {
  ModelConfig c = tiny_config(arch);
  c.causal = false;
  return c;
}

Model classifier(const ModelConfig& c, Pooling pooling, Precision p = Precision::fp32) {
  return Model(c, make_classifier_units(c, kClasses, pooling), cpu(), p, 3);
}

// Random tokens and one label per row at position 0, -100 elsewhere.
struct LabelledBatch {
  RandomBatch tokens;
  std::vector<int32_t> targets;
  LabelledBatch(int64_t B, int64_t T, int64_t vocab, uint64_t seed) : tokens(B, T, vocab, seed) {
    targets.assign(size_t(B * T), -100);
    for (int64_t b = 0; b < B; ++b) targets[size_t(b * T)] = int32_t(tokens.stream[size_t(b)] % kClasses);
  }
  Batch batch() {
    return Batch{TensorView(tokens.inputs.data(), DType::i32, {tokens.B, tokens.T}, &cpu()),
                 TensorView(targets.data(), DType::i32, {tokens.B, tokens.T}, &cpu())};
  }
};

// U(-0.25, 0.25) weights (norm weights 1 + U(-0.5, 0.5)), so no gradient sits near the
// f32 differencing noise (as in test_model's whole-model check).
void spread_weights(Model& m) {
  for (const ParamInfo& p : m.parameters()) {
    float* x = m.parameter(p.name).ptr<float>();
    const num::RandomKey key{7, uint32_t(p.unit), uint32_t(p.offset)};
    for (int64_t i = 0; i < p.numel(); ++i) {
      const double u = num::philox_uniform(key, uint64_t(i)) - 0.5;
      x[i] = float(p.role == ParamRole::norm ? 1.0 + u : 0.5 * u);
    }
  }
}

// body(config, pooling, model) for each architecture and pooling: an f32 encoder
// classifier with spread weights.
template <class Body>
void for_each_classifier(Body&& body) {
  for (const char* arch : {"gpt", "llama"})
    for (Pooling pooling : {Pooling::cls, Pooling::mean}) {
      INFO(arch << " " << pooling_name(pooling));
      const ModelConfig c = encoder_config(arch);
      Model m = classifier(c, pooling);
      spread_weights(m);
      body(c, pooling, m);
    }
}

std::vector<float> host(const TensorView& t) {
  const float* p = t.ptr<float>();
  return std::vector<float>(p, p + t.numel());
}

}  // namespace

TEST_CASE("the classifier head's loss is the double-precision reference of its pooled rows", "[train][cpu]") {
  for_each_classifier([&](const ModelConfig& c, Pooling pooling, Model& m) {
    const int64_t B = 3, T = 6, C = c.d_model;
    LabelledBatch data(B, T, c.vocab_size, 11);
    const float loss = m.forward(data.batch(), {}, false);
    // The reference from the last block's output, in double.
    const std::vector<float> x = host(m.unit_output(int(c.n_layers)));
    const std::vector<float> w = host(m.parameter("head.ln_f.weight"));
    const std::vector<float> cw = host(m.parameter("head.classifier.weight"));
    const std::vector<float> cb = host(m.parameter("head.classifier.bias"));
    std::vector<float> lb(size_t(C), 0.0f);
    if (c.norm == NormKind::layernorm) lb = host(m.parameter("head.ln_f.bias"));
    double total = 0;
    for (int64_t b = 0; b < B; ++b) {
      std::vector<double> pooled(size_t(C), 0.0);
      const int64_t positions = pooling == Pooling::cls ? 1 : T;
      for (int64_t t = 0; t < positions; ++t) {
        const float* row = &x[size_t((b * T + t) * C)];
        double mean = 0, var = 0;
        if (c.norm == NormKind::layernorm) {
          for (int64_t i = 0; i < C; ++i) mean += row[i];
          mean /= double(C);
        }
        for (int64_t i = 0; i < C; ++i) var += (row[i] - mean) * (row[i] - mean);
        const double rstd = 1.0 / std::sqrt(var / double(C) + double(c.norm_eps));
        for (int64_t i = 0; i < C; ++i)
          pooled[size_t(i)] += ((row[i] - mean) * rstd * w[size_t(i)] + lb[size_t(i)]) / double(positions);
      }
      std::vector<double> logits(static_cast<size_t>(kClasses));
      double top = -1e30, sum = 0;
      for (int64_t k = 0; k < kClasses; ++k) {
        logits[size_t(k)] = cb[size_t(k)];
        for (int64_t i = 0; i < C; ++i) logits[size_t(k)] += cw[size_t(k * C + i)] * pooled[size_t(i)];
        top = std::max(top, logits[size_t(k)]);
      }
      for (double l : logits) sum += std::exp(l - top);
      total += top + std::log(sum) - logits[size_t(data.targets[size_t(b * T)])];
    }
    CHECK(std::fabs(double(loss) - total / double(B)) <= 2e-5 * std::fabs(total / double(B)) + 1e-6);
  });
}

TEST_CASE("classifier head gradients match finite differences", "[train][cpu]") {
  const double tol = 3e-3;
  for_each_classifier([&](const ModelConfig& c, Pooling pooling, Model& m) {
    LabelledBatch data(3, 5, c.vocab_size, 99);
    data.targets[size_t(2 * 5)] = -100;  // an unlabelled row counts in neither the loss nor the mean
    m.zero_grad();
    m.forward(data.batch(), StepKey{1, 0, 0}, true);
    m.backward(1.0f);
    auto loss = [&] { return double(m.forward(data.batch(), StepKey{1, 0, 0}, false)); };
    for (const ParamInfo& p : m.parameters()) {
      TensorView w = m.parameter(p.name), g = m.parameter_grad(p.name);
      float* x = w.ptr<float>();
      const std::vector<double> analytic(g.ptr<float>(), g.ptr<float>() + g.numel());
      std::vector<int64_t> elements;
      const int64_t n = p.numel(), spread = std::min<int64_t>(n, 32);
      for (int64_t k = 0; k < spread; ++k) elements.push_back(k * n / spread);
      const GradientCheck r = gradient_check(
          elements, [&](int64_t i) { return double(x[i]); }, [&](int64_t i, double v) { x[i] = float(v); }, loss,
          analytic, 2e-2);
      INFO(p.name << ": ||g - g_fd|| / ||g_fd|| = " << r.rel_error << " over " << r.checked << " elements; "
                  << r.bad_signs << " of the " << r.largest << " largest with a wrong sign or zero");
      CHECK(r.ok(tol));
      std::vector<double> scaled = analytic;
      for (double& v : scaled) v *= 1.01;
      CHECK_FALSE(r.against(scaled).ok(tol));
    }
  });
}

TEST_CASE("a classifier's targets are checked against its convention before anything runs", "[train][cpu]") {
  const ModelConfig c = encoder_config("gpt");
  Model m = classifier(c, Pooling::cls);
  const std::vector<float> before = host(m.unit_params(m.num_units() - 1));
  LabelledBatch data(2, 4, c.vocab_size, 5);
  data.targets[4] = int32_t(kClasses);  // row 1's label
  REQUIRE_THROWS_WITH(m.forward(data.batch(), {}, true),
                      Catch::Contains("label 3 of row 1") && Catch::Contains("classes [0, 3)"));
  data.targets[4] = 0;
  data.targets[2] = 1;  // a target past position 0
  REQUIRE_THROWS_WITH(m.forward(data.batch(), {}, true),
                      Catch::Contains("row 0, position 2") && Catch::Contains("at position 0"));
  CHECK_THROWS_WITH(m.backward(1.0f), Catch::Contains("call forward"));
  CHECK(host(m.unit_params(m.num_units() - 1)) == before);
  REQUIRE_THROWS_WITH(m.last_logits(data.batch().inputs), Catch::Contains("built-in LM head"));
  REQUIRE_THROWS_WITH(m.logits(data.batch()), Catch::Contains("built-in LM head"));
  CHECK_THROWS_WITH(make_classifier_head(c, 1), Catch::Contains("at least 2"));
}

TEST_CASE("mask_tokens masks BERT's way, reproducibly", "[data][cpu]") {
  const int64_t B = 64, T = 512, V = 1000;
  std::vector<int32_t> tokens(size_t(B * T));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t(1 + i * 7919 % (V - 1));  // never the mask id 0
  const TensorView view(tokens.data(), DType::i32, {B, T});
  MaskOptions o;
  o.mask_token = 0;
  o.vocab_size = V;
  o.seed = 42;
  const MaskedBatch a = mask_tokens(view, o, 7);
  int64_t chosen = 0, masked = 0, replaced = 0, kept = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (a.targets[i] == -100) {
      REQUIRE(a.inputs[i] == tokens[i]);  // unchosen positions are untouched
      continue;
    }
    REQUIRE(a.targets[i] == tokens[i]);
    ++chosen;
    if (a.inputs[i] == 0)
      ++masked;
    else if (a.inputs[i] == tokens[i])
      ++kept;
    else
      ++replaced;
  }
  // 32768 positions: the proportions are within a few standard deviations.
  CHECK(std::fabs(double(chosen) / double(B * T) - 0.15) < 0.01);
  CHECK(std::fabs(double(masked) / double(chosen) - 0.8) < 0.02);
  CHECK(std::fabs(double(replaced) / double(chosen) - 0.1) < 0.02);  // a random draw equal to the token counts as kept
  CHECK(std::fabs(double(kept) / double(chosen) - 0.1) < 0.02);
  const MaskedBatch again = mask_tokens(view, o, 7), next = mask_tokens(view, o, 8);
  CHECK(again.inputs == a.inputs);
  CHECK(again.targets == a.targets);
  CHECK(next.targets != a.targets);
  o.seed = 43;
  CHECK(mask_tokens(view, o, 7).targets != a.targets);

  o.mask_token = int32_t(V);
  CHECK_THROWS_WITH(mask_tokens(view, o, 0), Catch::Contains("mask_token 1000") && Catch::Contains("[0, 1000)"));
  o.mask_token = 0;
  o.probability = 1.5;
  CHECK_THROWS_WITH(mask_tokens(view, o, 0), Catch::Contains("probability 1.5"));
  o.probability = 0.15;
  o.vocab_size = 10;
  CHECK_THROWS_WITH(mask_tokens(view, o, 0), Catch::Contains("outside the vocabulary [0, 10)"));
}

TEST_CASE("a masked LM's loss at a position sees the tokens after it", "[train][cpu]") {
  // One target, at position 0: with a bidirectional trunk its loss changes with the
  // last token, with a causal one it cannot.
  for (bool causal : {false, true}) {
    INFO((causal ? "causal" : "bidirectional"));
    ModelConfig c = tiny_config("gpt");
    c.causal = causal;
    Model m(c, cpu(), Precision::fp32, 3);
    RandomBatch b(1, 6, c.vocab_size, 4);
    MaskOptions o;
    o.mask_token = int32_t(c.vocab_size - 1);
    o.vocab_size = c.vocab_size;
    o.probability = 1.0;
    MaskedBatch mb = mask_tokens(b.batch().inputs, o, 0);
    std::fill(mb.targets.begin() + 1, mb.targets.end(), -100);
    const float before = m.forward(mb.batch(), {}, false);
    mb.inputs.back() = (mb.inputs.back() + 1) % int32_t(c.vocab_size);
    const float after = m.forward(mb.batch(), {}, false);
    if (causal)
      CHECK(after == before);
    else
      CHECK(after != before);
  }
}

TEST_CASE("a masked LM learns to fill in masked tokens", "[train][cpu]") {
  // Each row repeats one token: a masked position is whatever its unmasked row-mates hold.
  ModelConfig c = tiny_config("gpt");
  c.causal = false;
  Model m(c, cpu(), Precision::fp32, 3);
  TrainOptions to;
  to.adamw.lr = 1e-2f;
  Trainer t(m, to);
  MaskOptions o;
  o.mask_token = int32_t(c.vocab_size - 1);
  o.vocab_size = c.vocab_size;
  const int64_t B = 16, T = 10;
  double first = 0, last = 0;  // means of the first and last 10 steps
  for (int step = 0; step < 150; ++step) {
    std::vector<int32_t> rows;
    for (int64_t b = 0; b < B; ++b) rows.insert(rows.end(), size_t(T), int32_t((step * 7 + b * 5) % (c.vocab_size - 1)));
    MaskedBatch mb = mask_tokens(TensorView(rows.data(), DType::i32, {B, T}), o, step);
    const float loss = t.train_step({mb.batch()}).loss;
    if (step < 10) first += loss / 10.0;
    if (step >= 140) last += loss / 10.0;
  }
  INFO("masked-LM loss " << first << " -> " << last);
  CHECK(last < 0.25 * first);
}
