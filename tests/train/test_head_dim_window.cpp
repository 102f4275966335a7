// A separate head width (ModelConfig::d_head, heads not d_model / n_heads wide) and
// sliding-window attention (ModelConfig::sliding_window) at model level: the f32 loss
// of a one-block LLaMA-shaped model against a double-precision reference written from
// the definitions (RMSNorm, q/k/v, rotate-half RoPE, windowed GQA softmax, o_proj,
// SwiGLU, head, cross-entropy); the reference is also checked on the plain shape, so a
// wrong reference fails there. Also: a window of at least T is the unwindowed model
// bitwise, a window of 1 differs, bad values are refused by name, and the memory plan
// counts the q/k/v and attention widths GQA and d_head give (and no window term).
// (Finite differences of these shapes: test_model.cpp.)
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "strata/error.h"
#include "strata/plan.h"
#include "strata/strata.h"
#include "train_support.h"

using namespace strata;
using namespace strata::test;

namespace {

using Vec = std::vector<double>;

Vec param(const Model& m, const std::string& name) {
  TensorView t = m.parameter(name);
  return Vec(t.ptr<float>(), t.ptr<float>() + t.numel());
}

// y (n, out) = x (n, in) W^T for W (out, in).
Vec linear(const Vec& x, const Vec& w, int64_t n, int64_t in, int64_t out) {
  Vec y(size_t(n * out), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t k = 0; k < in; ++k) s += x[size_t(r * in + k)] * w[size_t(o * in + k)];
      y[size_t(r * out + o)] = s;
    }
  return y;
}

Vec rmsnorm(const Vec& x, const Vec& w, int64_t n, int64_t C, double eps) {
  Vec y(x.size());
  for (int64_t r = 0; r < n; ++r) {
    double ss = 0;
    for (int64_t k = 0; k < C; ++k) ss += x[size_t(r * C + k)] * x[size_t(r * C + k)];
    const double inv = 1.0 / std::sqrt(ss / double(C) + eps);
    for (int64_t k = 0; k < C; ++k) y[size_t(r * C + k)] = x[size_t(r * C + k)] * inv * w[size_t(k)];
  }
  return y;
}

// Mean cross-entropy of a one-block RMSNorm / RoPE / SwiGLU model, untied head, in double.
double reference_loss(const Model& m, const RandomBatch& batch) {
  const ModelConfig& c = m.config();
  const int64_t B = batch.B, T = batch.T, n = B * T, C = c.d_model, V = c.vocab_size, H = c.d_mlp;
  const int64_t NH = c.n_heads, NKV = c.kv_heads(), HD = c.head_dim(), A = NH * HD, W = c.qkv_width();
  const Vec wte = param(m, "embedding.wte.weight");
  Vec x(size_t(n * C));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t k = 0; k < C; ++k) x[size_t(r * C + k)] = wte[size_t(batch.inputs[size_t(r)] * C + k)];
  const double eps = c.norm_eps;
  Vec qkv = linear(rmsnorm(x, param(m, "blocks.0.ln_1.weight"), n, C, eps), param(m, "blocks.0.attn.qkv.weight"),
                   n, C, W);
  // RoPE on the q and k heads: element i pairs with i + HD/2, angle pos * theta^(-2i/HD).
  for (int64_t r = 0; r < n; ++r)
    for (int64_t h = 0; h < NH + NKV; ++h)
      for (int64_t i = 0; i < HD / 2; ++i) {
        const double angle = double(r % T) * std::pow(double(c.rope_theta), -2.0 * double(i) / double(HD));
        double& a = qkv[size_t(r * W + h * HD + i)];
        double& b = qkv[size_t(r * W + h * HD + i + HD / 2)];
        const double a0 = a, b0 = b;
        a = a0 * std::cos(angle) - b0 * std::sin(angle);
        b = b0 * std::cos(angle) + a0 * std::sin(angle);
      }
  Vec att(size_t(n * A), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < NH; ++h)
      for (int64_t i = 0; i < T; ++i) {
        const int64_t kv = h / (NH / NKV);
        const int64_t first = c.sliding_window > 0 ? std::max<int64_t>(0, i - c.sliding_window + 1) : 0;
        Vec s(size_t(i + 1), 0.0);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = first; j <= i; ++j) {
          double d = 0;
          for (int64_t k = 0; k < HD; ++k)
            d += qkv[size_t((b * T + i) * W + h * HD + k)] * qkv[size_t((b * T + j) * W + (NH + kv) * HD + k)];
          s[size_t(j)] = d / std::sqrt(double(HD));
          mx = std::max(mx, s[size_t(j)]);
        }
        for (int64_t j = first; j <= i; ++j) sum += s[size_t(j)] = std::exp(s[size_t(j)] - mx);
        for (int64_t j = first; j <= i; ++j)
          for (int64_t k = 0; k < HD; ++k)
            att[size_t((b * T + i) * A + h * HD + k)] +=
                s[size_t(j)] / sum * qkv[size_t((b * T + j) * W + (NH + NKV + kv) * HD + k)];
      }
  Vec x2 = linear(att, param(m, "blocks.0.attn.proj.weight"), n, A, C);
  for (size_t k = 0; k < x2.size(); ++k) x2[k] += x[k];
  const Vec fc = linear(rmsnorm(x2, param(m, "blocks.0.ln_2.weight"), n, C, eps), param(m, "blocks.0.mlp.fc.weight"),
                        n, C, 2 * H);
  Vec act(size_t(n * H));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t k = 0; k < H; ++k) {
      const double g = fc[size_t(r * 2 * H + k)], u = fc[size_t(r * 2 * H + H + k)];
      act[size_t(r * H + k)] = g / (1.0 + std::exp(-g)) * u;
    }
  Vec y = linear(act, param(m, "blocks.0.mlp.proj.weight"), n, H, C);
  for (size_t k = 0; k < y.size(); ++k) y[k] += x2[k];
  const Vec logits =
      linear(rmsnorm(y, param(m, "head.ln_f.weight"), n, C, eps), param(m, "head.lm_head.weight"), n, C, V);
  double loss = 0;
  for (int64_t r = 0; r < n; ++r) {
    double mx = -INFINITY, sum = 0;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, logits[size_t(r * V + v)]);
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[size_t(r * V + v)] - mx);
    loss += mx + std::log(sum) - logits[size_t(r * V + batch.targets[size_t(r)])];
  }
  return loss / double(n);
}

ModelConfig one_block(int64_t d_head, int64_t window) {
  ModelConfig c = tiny_config("llama-gqa");  // 4 query heads, 2 kv heads, width 16
  c.n_layers = 1;
  c.d_head = d_head;
  c.sliding_window = window;
  return c;
}

}  // namespace

TEST_CASE("d_head and sliding_window: the model's loss is the double-precision reference", "[train][cpu]") {
  struct Shape {
    int64_t d_head, window;
  };
  // d_head 0: 16 / 4 = 4 wide (the reference checked on the plain model); 6 and 10:
  // q 24 and 40 wide against a width of 16; windows 1, 3 and one past T.
  for (Shape s : {Shape{0, 0}, Shape{6, 0}, Shape{10, 0}, Shape{0, 3}, Shape{6, 1}, Shape{10, 3}, Shape{6, 20}}) {
    const ModelConfig c = one_block(s.d_head, s.window);
    Model m(c, cpu(), Precision::fp32, 21);
    CHECK(m.parameter("blocks.0.attn.qkv.weight").shape[0] == (4 + 2 * 2) * c.head_dim());
    CHECK(m.parameter("blocks.0.attn.proj.weight").shape[1] == 4 * c.head_dim());
    RandomBatch batch(2, 9, c.vocab_size, 5);
    const double got = m.forward(batch.batch(), StepKey{1, 0, 0}, false);
    const double want = reference_loss(m, batch);
    INFO("d_head " << s.d_head << " window " << s.window << ": loss " << got << ", reference " << want);
    CHECK(std::fabs(got - want) <= 2e-6 * std::fabs(want));
  }
}

TEST_CASE("a sliding window of at least T is the unwindowed model bitwise; a window of 1 is not", "[train][cpu]") {
  const ModelConfig plain = one_block(6, 0);
  RandomBatch batch(2, 9, plain.vocab_size, 8);
  auto run = [&](int64_t window, std::vector<float>* grads) {
    ModelConfig c = plain;
    c.sliding_window = window;
    Model m(c, cpu(), Precision::fp32, 4);
    m.zero_grad();
    const float loss = m.forward(batch.batch(), StepKey{1, 0, 0}, true);
    m.backward(1.0f);
    TensorView g = m.parameter_grad("blocks.0.attn.qkv.weight");
    grads->assign(g.ptr<float>(), g.ptr<float>() + g.numel());
    return loss;
  };
  std::vector<float> g0, g9, g1;
  const float l0 = run(0, &g0), l9 = run(9, &g9), l1 = run(1, &g1);
  CHECK(std::memcmp(&l0, &l9, sizeof l0) == 0);
  CHECK(g0 == g9);
  CHECK(l1 != l0);
}

TEST_CASE("bad d_head and sliding_window are refused by name", "[train][cpu]") {
  ModelConfig c = one_block(0, 0);
  c.d_head = -1;
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("d_head -1"));
  c.d_head = 5;  // RoPE pairs halves of a head
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("RoPE needs an even head dimension, got 5 (d_head)"));
  c = one_block(0, -2);
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("sliding_window -2"));
  c = one_block(0, 4);
  c.causal = false;
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("sliding_window 4 needs causal attention"));
  // A width that does not divide into the heads is fine once d_head says the head width.
  c = one_block(6, 0);
  c.d_model = 18;
  REQUIRE_NOTHROW(c.validate());
  c.d_head = 0;
  REQUIRE_THROWS_WITH(c.validate(), Catch::Contains("d_model 18 does not divide into n_heads 4"));
}

TEST_CASE("plan: saved activations and the largest unit follow the qkv and attention widths", "[train][cpu]") {
  PlanRequest q;
  q.config = ModelConfig::preset("llama-1b");  // 32 heads of 64 on a width of 2048
  q.config.vocab_size = 1000;                   // so a block, not the embedding, is the largest unit
  q.batch = 2, q.seq = 512, q.ram_bytes = size_t(1) << 40;
  const Plan mha = make_plan(q, Rates{});
  PlanRequest g = q;
  g.config.n_kv_heads = 8;  // k and v: 8 heads instead of 32
  const Plan gqa = make_plan(g, Rates{});
  const double rows = double(q.batch * q.seq), L = double(q.config.n_layers), bf16 = 2;
  const double kv_saved = 2.0 * (32 - 8) * 64;  // qkv columns GQA drops
  CHECK(double(mha.bytes_activations - gqa.bytes_activations) == rows * bf16 * L * kv_saved);
  CHECK(double(mha.largest_unit - gqa.largest_unit) == kv_saved * 2048);
  PlanRequest h = q;
  h.config.d_head = 128;  // q, k, v and att twice as wide
  const Plan wide = make_plan(h, Rates{});
  CHECK(double(wide.bytes_activations - mha.bytes_activations) == rows * bf16 * L * (3 * 2048 + 2048));
  PlanRequest w = q;
  w.config.sliding_window = 64;  // attention stores no T x T scores: memory unchanged
  CHECK(make_plan(w, Rates{}).bytes_activations == mha.bytes_activations);
}
