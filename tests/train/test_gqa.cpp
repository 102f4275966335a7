// Grouped-query attention at model level: a GQA model equals the multi-head model whose
// k/v heads are copies of its kv heads (the definition of GQA), n_kv_heads = n_heads is
// the multi-head model bitwise, a GQA model trains, and bad n_kv_heads is refused.
// (Finite-difference gradients of the GQA / MQA / qkv-bias shapes: test_model.cpp.)
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "strata/error.h"
#include "strata/strata.h"
#include "train_support.h"

using namespace strata;
using namespace strata::test;

namespace {

void copy_parameters(const Model& from, Model& to) {
  for (const ParamInfo& p : from.parameters()) {
    TensorView a = from.parameter(p.name), b = to.parameter(p.name);
    std::memcpy(b.ptr<float>(), a.ptr<float>(), size_t(a.numel()) * sizeof(float));
  }
}

}  // namespace

TEST_CASE("a GQA model computes the multi-head model with repeated kv heads", "[train][cpu]") {
  for (const char* arch : {"llama-gqa", "llama-mqa", "qwen2"}) {
    SECTION(arch) {
      const ModelConfig g = tiny_config(arch);
      ModelConfig h = g;
      h.n_kv_heads = 0;
      Model gqa(g, cpu(), Precision::fp32, 5), mha(h, cpu(), Precision::fp32, 6);
      for (const ParamInfo& p : gqa.parameters()) {
        if (p.name.find("attn.qkv") != std::string::npos) continue;
        TensorView a = gqa.parameter(p.name), b = mha.parameter(p.name);
        std::memcpy(b.ptr<float>(), a.ptr<float>(), size_t(a.numel()) * sizeof(float));
      }
      // qkv rows: q heads, then k heads, then v heads; MHA head j takes kv head j / group.
      const int64_t HD = g.head_dim(), NH = g.n_heads, NKV = g.kv_heads(), group = NH / NKV, C = g.d_model;
      for (int64_t l = 0; l < g.n_layers; ++l)
        for (const char* part : {"weight", "bias"}) {
          const std::string name = "blocks." + std::to_string(l) + ".attn.qkv." + part;
          if (std::string(part) == "bias" && !g.qkv_bias) continue;
          const float* src = gqa.parameter(name).ptr<float>();
          float* dst = mha.parameter(name).ptr<float>();
          const int64_t cols = std::string(part) == "weight" ? C : 1;
          auto rows = [&](float* d, const float* s, int64_t n) { std::memcpy(d, s, size_t(n * cols) * sizeof(float)); };
          rows(dst, src, NH * HD);  // q
          for (int64_t j = 0; j < NH; ++j) {
            rows(dst + (NH + j) * HD * cols, src + (NH + j / group) * HD * cols, HD);             // k
            rows(dst + (2 * NH + j) * HD * cols, src + (NH + NKV + j / group) * HD * cols, HD);  // v
          }
        }
      RandomBatch batch(2, 7, g.vocab_size, 17);
      const double lg = gqa.forward(batch.batch(), StepKey{1, 0, 0}, false);
      const double lh = mha.forward(batch.batch(), StepKey{1, 0, 0}, false);
      INFO(arch << ": GQA loss " << lg << ", repeated-kv MHA loss " << lh);
      CHECK(std::fabs(lg - lh) <= 1e-6 * std::fabs(lh));
    }
  }
}

TEST_CASE("n_kv_heads = n_heads is the multi-head model bitwise", "[train][cpu]") {
  ModelConfig a = tiny_config("llama-gqa"), b = a;
  a.n_kv_heads = 0;
  b.n_kv_heads = b.n_heads;
  Model ma(a, cpu(), Precision::fp32, 9), mb(b, cpu(), Precision::fp32, 9);
  RandomBatch batch(2, 6, a.vocab_size, 3);
  for (Model* m : {&ma, &mb}) {
    m->zero_grad();
    m->forward(batch.batch(), StepKey{1, 0, 0}, true);
    m->backward(1.0f);
  }
  for (const ParamInfo& p : ma.parameters()) {
    TensorView ga = ma.parameter_grad(p.name), gb = mb.parameter_grad(p.name);
    INFO(p.name);
    CHECK(std::memcmp(ga.ptr<float>(), gb.ptr<float>(), size_t(ga.numel()) * sizeof(float)) == 0);
  }
}

TEST_CASE("a grouped-query model trains", "[train][cpu]") {
  const ModelConfig c = tiny_config("llama-mqa");
  Model m(c, cpu(), Precision::fp32, 11);
  RandomBatch batch(2, 8, c.vocab_size, 23);
  const double first = m.forward(batch.batch(), StepKey{1, 0, 0}, false);
  double last = first;
  for (int step = 0; step < 30; ++step) {  // plain SGD on one batch
    m.zero_grad();
    last = m.forward(batch.batch(), StepKey{1, 0, 0}, true);
    m.backward(1.0f);
    for (const ParamInfo& p : m.parameters()) {
      float* w = m.parameter(p.name).ptr<float>();
      const float* g = m.parameter_grad(p.name).ptr<float>();
      for (int64_t i = 0; i < p.numel(); ++i) w[i] -= 0.1f * g[i];
    }
  }
  INFO("loss " << first << " -> " << last);
  CHECK(last < 0.7 * first);
}

TEST_CASE("n_kv_heads that does not divide n_heads is refused by name", "[train][cpu]") {
  ModelConfig c = tiny_config("llama-gqa");
  c.n_kv_heads = 3;
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("n_kv_heads 3") && Catch::Contains("must divide n_heads 4"));
  c.n_kv_heads = -1;
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("n_kv_heads"));
}
