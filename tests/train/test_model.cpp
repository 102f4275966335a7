// Model-level properties: parameter accounting against published counts, the
// layout invariants, init determinism, whole-model gradients against finite
// differences, and bad input rejected before any state changes.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "strata/error.h"
#include "strata/strata.h"
#include "support/host_tensor.h"
#include "train_support.h"

using namespace strata;
using namespace strata::test;

TEST_CASE("preset parameter counts match the published models", "[train][cpu]") {
  // GPT-2 small as released by OpenAI / Hugging Face: 124,439,808 parameters.
  CHECK(ModelConfig::preset("gpt2-small").num_parameters() == 124439808);
  // GPT-2 medium: 354,823,168; large: 774,030,080; xl: 1,557,611,200.
  CHECK(ModelConfig::preset("gpt2-medium").num_parameters() == 354823168);
  CHECK(ModelConfig::preset("gpt2-large").num_parameters() == 774030080);
  CHECK(ModelConfig::preset("gpt2-xl").num_parameters() == 1557611200);
  // LLaMA-2 7B: 6,738,415,616.
  CHECK(ModelConfig::preset("llama-7b").num_parameters() == 6738415616);
  REQUIRE_THROWS_WITH(ModelConfig::preset("gpt5"), Catch::Contains("unknown model preset 'gpt5'") &&
                                                       Catch::Contains("gpt2-small"));
}

TEST_CASE("a model's views tile its flat buffers", "[train][cpu]") {
  for (const char* arch : {"gpt", "llama"}) {
    ModelConfig c = tiny_config(arch);
    Model m(c, cpu(), Precision::fp32, 7);
    CHECK(m.num_parameters() == c.num_parameters());
    CHECK(m.num_units() == int(c.n_layers) + 2);
    for (int u = 0; u < m.num_units(); ++u) {
      CHECK(m.unit_numel(u) * 4 % 4096 == 0);
      CHECK(reinterpret_cast<uintptr_t>(m.unit_params(u).data) % 4096 == 0);
    }
    // Views never overlap and stay inside their unit.
    for (const ParamInfo& a : m.parameters()) {
      CHECK(a.offset + a.numel() <= m.unit_numel(a.unit));
      for (const ParamInfo& b : m.parameters())
        if (&a != &b && a.unit == b.unit) CHECK((a.offset + a.numel() <= b.offset || b.offset + b.numel() <= a.offset));
    }
  }
}

TEST_CASE("initialisation depends on the seed only, and follows GPT-2", "[train][cpu]") {
  ModelConfig c = tiny_config("gpt");
  c.n_layers = 2;
  Model a(c, cpu(), Precision::fp32, 11), b(c, cpu(), Precision::fp32, 11), d(c, cpu(), Precision::fp32, 12);
  Model h(c, cpu(), Precision::bf16, 11);
  for (int u = 0; u < a.num_units(); ++u) {
    CHECK(std::memcmp(a.unit_params(u).data, b.unit_params(u).data, a.unit_params(u).nbytes()) == 0);
    // The head holds only norms (ones, zeros) when tied: the same for every seed.
    if (u + 1 < a.num_units())
      CHECK(std::memcmp(a.unit_params(u).data, d.unit_params(u).data, a.unit_params(u).nbytes()) != 0);
  }
  // bf16 parameters are the rounding of the same f32 values.
  TensorView w32 = a.parameter("blocks.0.attn.qkv.weight"), w16 = h.parameter("blocks.0.attn.qkv.weight");
  for (int64_t i = 0; i < w32.numel(); ++i)
    REQUIRE(w16.ptr<uint16_t>()[i] == float_to_bf16(w32.ptr<float>()[i]));
  // Standard deviations: 0.02 for qkv, 0.02/sqrt(2 L) for residual projections; norms 1, biases 0.
  auto stddev = [](const TensorView& t) {
    double s = 0;
    for (int64_t i = 0; i < t.numel(); ++i) s += double(t.ptr<float>()[i]) * t.ptr<float>()[i];
    return std::sqrt(s / double(t.numel()));
  };
  CHECK(stddev(a.parameter("blocks.0.attn.qkv.weight")) == Approx(0.02).epsilon(0.1));
  CHECK(stddev(a.parameter("blocks.1.mlp.proj.weight")) == Approx(0.02 / std::sqrt(4.0)).epsilon(0.1));
  CHECK(a.parameter("blocks.1.ln_2.weight").ptr<float>()[3] == 1.0f);
  CHECK(a.parameter("blocks.1.attn.qkv.bias").ptr<float>()[5] == 0.0f);
}

TEST_CASE("whole-model gradients match finite differences", "[train][cpu]") {
  for (const char* arch : {"gpt", "llama"}) {
    SECTION(arch) {
      ModelConfig c = tiny_config(arch);
      Model m(c, cpu(), Precision::fp32, 3);
      RandomBatch batch(2, 5, c.vocab_size, 99);
      m.zero_grad();
      m.forward(batch.batch(), StepKey{1, 0, 0}, true);
      m.backward(1.0f);
      // Check a sample of elements of every parameter tensor.
      for (const ParamInfo& p : m.parameters()) {
        TensorView w = m.parameter(p.name), g = m.parameter_grad(p.name);
        for (int64_t k = 0; k < 3; ++k) {
          int64_t i = (k * 7919 + 13) % w.numel();
          float* x = w.ptr<float>() + i;
          const float orig = *x, eps = 1e-2f;
          *x = orig + eps;
          double up = m.forward(batch.batch(), StepKey{1, 0, 0}, false);
          *x = orig - eps;
          double down = m.forward(batch.batch(), StepKey{1, 0, 0}, false);
          *x = orig;
          double numeric = (up - down) / (2.0 * eps);
          double analytic = g.ptr<float>()[i];
          INFO(arch << " " << p.name << "[" << i << "]: analytic " << analytic << ", numeric " << numeric);
          CHECK(std::fabs(numeric - analytic) <= 2e-3 + 5e-2 * std::fabs(analytic));
        }
      }
    }
  }
}

TEST_CASE("bad input is rejected before any state changes", "[train][cpu]") {
  ModelConfig c = tiny_config("gpt");
  Model m(c, cpu(), Precision::fp32, 5);
  std::vector<float> before(size_t(m.unit_numel(1)));
  std::memcpy(before.data(), m.unit_params(1).data, before.size() * 4);

  RandomBatch good(2, 4, c.vocab_size, 1);
  RandomBatch bad = good;
  bad.inputs[5] = int32_t(c.vocab_size);
  REQUIRE_THROWS_WITH(m.forward(bad.batch(), {}, true), Catch::Contains("token id " + std::to_string(c.vocab_size)) &&
                                                             Catch::Contains("row 1, position 1") &&
                                                             Catch::Contains("outside the vocabulary"));
  RandomBatch long_batch(1, c.max_seq + 1, c.vocab_size, 1);
  REQUIRE_THROWS_WITH(m.forward(long_batch.batch(), {}, true),
                      Catch::Contains("sequence length " + std::to_string(c.max_seq + 1)) && Catch::Contains("max_seq"));
  RandomBatch bad_target = good;
  bad_target.targets[0] = -7;
  REQUIRE_THROWS_WITH(m.forward(bad_target.batch(), {}, true), Catch::Contains("target -7"));
  REQUIRE_THROWS_WITH(m.backward(1.0f), Catch::Contains("call forward"));
  CHECK(std::memcmp(before.data(), m.unit_params(1).data, before.size() * 4) == 0);

  ModelConfig odd = c;
  odd.n_heads = 3;
  REQUIRE_THROWS_WITH(Model(odd, cpu(), Precision::fp32, 1),
                      Catch::Contains("d_model " + std::to_string(c.d_model)) && Catch::Contains("n_heads 3"));
  ModelConfig d = c;
  d.dropout_attention = 1.0f;
  REQUIRE_THROWS_WITH(d.validate(), Catch::Contains("dropout 1"));
}

TEST_CASE("the device arena budget is enforced with a clear error", "[train][cpu]") {
  auto small = Device::cpu(1, 64 << 10);
  REQUIRE_THROWS_WITH(Model(ModelConfig::preset("gpt-mini"), *small, Precision::fp32, 1),
                      Catch::Contains("cpu:1: cannot allocate") && Catch::Contains("capacity"));
}
