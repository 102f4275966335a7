// Hugging Face interop: export/import round trips for GPT-2 and LLaMA layouts, and
// known answers: HF-layout weights written by the test are imported, and strata's
// logits and loss are compared with a plain double-precision forward of the same
// HF weights written here (Conv1D [in, out] for GPT-2; separate q/k/v, gate/up and
// rotate-half RoPE for LLaMA, with GQA, a head_dim of its own and a sliding window),
// so a wrong transpose, split, rotation or mask fails.
#include <catch2/catch.hpp>
#include <cmath>
#include <filesystem>
#include <map>

#include "io_support.h"

using namespace strata;
using namespace strata::test;
namespace fs = std::filesystem;

namespace {

using Mat = std::vector<double>;  // row-major
using Weights = std::map<std::string, std::vector<float>>;

struct HfModel {
  ModelConfig c;
  HfLayout layout;
  Weights w;
  std::map<std::string, std::vector<int64_t>> shapes;

  const std::vector<float>& at(const std::string& n) const { return w.at(n); }

  void add(const std::string& name, std::vector<int64_t> shape, float scale, float offset, uint32_t k) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    num::RandomKey key{4242, k, 1};
    for (size_t i = 0; i < v.size(); ++i) v[i] = offset + scale * num::philox_normal(key, i);
    w[name] = std::move(v);
    shapes[name] = std::move(shape);
  }

  void save(const std::string& path) {
    std::vector<NamedTensor> t;
    for (auto& [name, v] : w) {
      TensorView view(v.data(), DType::f32, {int64_t(v.size())});
      const auto& s = shapes[name];
      view.ndim = int(s.size());
      for (size_t i = 0; i < s.size(); ++i) view.shape[i] = s[i];
      t.push_back({name, view});
    }
    save_safetensors(path, t, {{"format", "pt"}});
  }
};

HfModel random_hf(const ModelConfig& c, HfLayout layout) {
  HfModel m{c, layout, {}, {}};
  const int64_t C = c.d_model, H = c.d_mlp, V = c.vocab_size;
  uint32_t k = 0;
  if (layout == HfLayout::gpt2) {
    m.add("transformer.wte.weight", {V, C}, 0.5f, 0, ++k);
    m.add("transformer.wpe.weight", {c.max_seq, C}, 0.3f, 0, ++k);
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const std::string h = "transformer.h." + std::to_string(i) + ".";
      m.add(h + "ln_1.weight", {C}, 0.1f, 1, ++k);
      m.add(h + "ln_1.bias", {C}, 0.1f, 0, ++k);
      m.add(h + "attn.c_attn.weight", {C, 3 * C}, 0.3f, 0, ++k);
      m.add(h + "attn.c_attn.bias", {3 * C}, 0.1f, 0, ++k);
      m.add(h + "attn.c_proj.weight", {C, C}, 0.2f, 0, ++k);
      m.add(h + "attn.c_proj.bias", {C}, 0.1f, 0, ++k);
      m.add(h + "ln_2.weight", {C}, 0.1f, 1, ++k);
      m.add(h + "ln_2.bias", {C}, 0.1f, 0, ++k);
      m.add(h + "mlp.c_fc.weight", {C, H}, 0.3f, 0, ++k);
      m.add(h + "mlp.c_fc.bias", {H}, 0.1f, 0, ++k);
      m.add(h + "mlp.c_proj.weight", {H, C}, 0.2f, 0, ++k);
      m.add(h + "mlp.c_proj.bias", {C}, 0.1f, 0, ++k);
    }
    m.add("transformer.ln_f.weight", {C}, 0.1f, 1, ++k);
    m.add("transformer.ln_f.bias", {C}, 0.1f, 0, ++k);
  } else {
    m.add("model.embed_tokens.weight", {V, C}, 0.5f, 0, ++k);
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const std::string h = "model.layers." + std::to_string(i) + ".";
      m.add(h + "input_layernorm.weight", {C}, 0.1f, 1, ++k);
      const int64_t Q = c.attention_width(), KV = c.kv_heads() * c.head_dim();  // q and k/v widths
      m.add(h + "self_attn.q_proj.weight", {Q, C}, 0.3f, 0, ++k);
      m.add(h + "self_attn.k_proj.weight", {KV, C}, 0.3f, 0, ++k);
      m.add(h + "self_attn.v_proj.weight", {KV, C}, 0.3f, 0, ++k);
      m.add(h + "self_attn.o_proj.weight", {C, Q}, 0.3f, 0, ++k);
      m.add(h + "post_attention_layernorm.weight", {C}, 0.1f, 1, ++k);
      m.add(h + "mlp.gate_proj.weight", {H, C}, 0.3f, 0, ++k);
      m.add(h + "mlp.up_proj.weight", {H, C}, 0.3f, 0, ++k);
      m.add(h + "mlp.down_proj.weight", {C, H}, 0.2f, 0, ++k);
    }
    m.add("model.norm.weight", {C}, 0.1f, 1, ++k);
    m.add("lm_head.weight", {V, C}, 0.3f, 0, ++k);
  }
  return m;
}

// y (T, N) = x (T, K) @ W where W is (K, N) ("in_out") or (N, K) (torch Linear).
Mat matmul(const Mat& x, int64_t T, int64_t K, const std::vector<float>& W, int64_t N, bool in_out,
           const std::vector<float>* bias = nullptr) {
  Mat y(size_t(T * N), 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t n = 0; n < N; ++n) {
      double s = bias ? (*bias)[size_t(n)] : 0.0;
      for (int64_t k = 0; k < K; ++k)
        s += x[size_t(t * K + k)] * double(in_out ? W[size_t(k * N + n)] : W[size_t(n * K + k)]);
      y[size_t(t * N + n)] = s;
    }
  return y;
}

Mat norm(const Mat& x, int64_t T, int64_t C, const std::vector<float>& w, const std::vector<float>* b, bool rms,
         double eps) {
  Mat y(x.size());
  for (int64_t t = 0; t < T; ++t) {
    const double* r = &x[size_t(t * C)];
    double mean = 0, var = 0;
    if (!rms)
      for (int64_t i = 0; i < C; ++i) mean += r[i] / double(C);
    for (int64_t i = 0; i < C; ++i) var += (r[i] - mean) * (r[i] - mean) / double(C);
    const double rstd = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < C; ++i) y[size_t(t * C + i)] = (r[i] - mean) * rstd * w[size_t(i)] + (b ? (*b)[size_t(i)] : 0.0);
  }
  return y;
}

// Causal attention over q (T, NH*D) and k, v (T, NKV*D): query head h reads kv head
// h / (NH / NKV); RoPE (rotate half) when asked; a sliding window W > 0 keeps keys
// (i - W, i]. Returns (T, NH*D).
Mat attention(Mat q, Mat k, const Mat& v, int64_t T, int64_t NH, int64_t NKV, int64_t D, bool rope, double theta,
              int64_t window) {
  if (rope)
    for (Mat* m : {&q, &k})
      for (int64_t t = 0; t < T; ++t)
        for (int64_t h = 0; h < (m == &q ? NH : NKV); ++h) {
          double* x = &(*m)[size_t((t * (m == &q ? NH : NKV) + h) * D)];
          for (int64_t i = 0; i < D / 2; ++i) {
            const double a = double(t) * std::pow(theta, -2.0 * double(i) / double(D));
            const double x0 = x[i], x1 = x[i + D / 2];
            x[i] = x0 * std::cos(a) - x1 * std::sin(a);
            x[i + D / 2] = x1 * std::cos(a) + x0 * std::sin(a);
          }
        }
  const int64_t Q = NH * D, K = NKV * D;
  Mat out(size_t(T * Q), 0.0);
  for (int64_t h = 0; h < NH; ++h)
    for (int64_t i = 0; i < T; ++i) {
      const int64_t g = h / (NH / NKV), first = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
      std::vector<double> s(size_t(i + 1), 0.0);
      double mx = -1e300, sum = 0;
      for (int64_t j = first; j <= i; ++j) {
        double d = 0;
        for (int64_t e = 0; e < D; ++e) d += q[size_t(i * Q + h * D + e)] * k[size_t(j * K + g * D + e)];
        s[size_t(j)] = d / std::sqrt(double(D));
        mx = std::max(mx, s[size_t(j)]);
      }
      for (int64_t j = first; j <= i; ++j) sum += (s[size_t(j)] = std::exp(s[size_t(j)] - mx));
      for (int64_t j = first; j <= i; ++j)
        for (int64_t e = 0; e < D; ++e) out[size_t(i * Q + h * D + e)] += s[size_t(j)] / sum * v[size_t(j * K + g * D + e)];
    }
  return out;
}

// Logits (T, V) of one sequence, straight from the HF weights.
Mat reference_logits(const HfModel& m, const std::vector<int32_t>& tokens) {
  const ModelConfig& c = m.c;
  const int64_t T = int64_t(tokens.size()), C = c.d_model, H = c.d_mlp, V = c.vocab_size;
  const bool gpt = m.layout == HfLayout::gpt2;
  Mat x(size_t(T * C));
  const auto& wte = m.at(gpt ? "transformer.wte.weight" : "model.embed_tokens.weight");
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < C; ++i)
      x[size_t(t * C + i)] = double(wte[size_t(tokens[size_t(t)] * C + i)]) +
                             (gpt ? double(m.at("transformer.wpe.weight")[size_t(t * C + i)]) : 0.0);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    Mat att, mlp;
    if (gpt) {
      const std::string h = "transformer.h." + std::to_string(l) + ".";
      Mat a = norm(x, T, C, m.at(h + "ln_1.weight"), &m.at(h + "ln_1.bias"), false, c.norm_eps);
      Mat qkv = matmul(a, T, C, m.at(h + "attn.c_attn.weight"), 3 * C, true, &m.at(h + "attn.c_attn.bias"));
      Mat q(size_t(T * C)), k(size_t(T * C)), v(size_t(T * C));
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < C; ++i) {
          q[size_t(t * C + i)] = qkv[size_t(t * 3 * C + i)];
          k[size_t(t * C + i)] = qkv[size_t(t * 3 * C + C + i)];
          v[size_t(t * C + i)] = qkv[size_t(t * 3 * C + 2 * C + i)];
        }
      att = matmul(attention(q, k, v, T, c.n_heads, c.n_heads, C / c.n_heads, false, 0, 0), T, C,
                   m.at(h + "attn.c_proj.weight"), C, true, &m.at(h + "attn.c_proj.bias"));
      for (size_t i = 0; i < x.size(); ++i) x[i] += att[i];
      Mat b = norm(x, T, C, m.at(h + "ln_2.weight"), &m.at(h + "ln_2.bias"), false, c.norm_eps);
      Mat f = matmul(b, T, C, m.at(h + "mlp.c_fc.weight"), H, true, &m.at(h + "mlp.c_fc.bias"));
      for (double& u : f) u = 0.5 * u * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (u + 0.044715 * u * u * u)));
      mlp = matmul(f, T, H, m.at(h + "mlp.c_proj.weight"), C, true, &m.at(h + "mlp.c_proj.bias"));
    } else {
      const std::string h = "model.layers." + std::to_string(l) + ".";
      Mat a = norm(x, T, C, m.at(h + "input_layernorm.weight"), nullptr, true, c.norm_eps);
      const int64_t D = c.head_dim(), NKV = c.kv_heads(), Q = c.n_heads * D;
      Mat q = matmul(a, T, C, m.at(h + "self_attn.q_proj.weight"), Q, false);
      Mat k = matmul(a, T, C, m.at(h + "self_attn.k_proj.weight"), NKV * D, false);
      Mat v = matmul(a, T, C, m.at(h + "self_attn.v_proj.weight"), NKV * D, false);
      att = matmul(attention(q, k, v, T, c.n_heads, NKV, D, true, c.rope_theta, c.sliding_window), T, Q,
                   m.at(h + "self_attn.o_proj.weight"), C, false);
      for (size_t i = 0; i < x.size(); ++i) x[i] += att[i];
      Mat b = norm(x, T, C, m.at(h + "post_attention_layernorm.weight"), nullptr, true, c.norm_eps);
      Mat g = matmul(b, T, C, m.at(h + "mlp.gate_proj.weight"), H, false);
      Mat u = matmul(b, T, C, m.at(h + "mlp.up_proj.weight"), H, false);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      mlp = matmul(g, T, H, m.at(h + "mlp.down_proj.weight"), C, false);
    }
    for (size_t i = 0; i < x.size(); ++i) x[i] += mlp[i];
  }
  Mat f = gpt ? norm(x, T, C, m.at("transformer.ln_f.weight"), &m.at("transformer.ln_f.bias"), false, c.norm_eps)
              : norm(x, T, C, m.at("model.norm.weight"), nullptr, true, c.norm_eps);
  return matmul(f, T, C, gpt ? wte : m.at("lm_head.weight"), V, false);
}

ModelConfig hf_tiny(const std::string& arch) {
  ModelConfig c = tiny_config(arch == "qwen2-window" ? "qwen2" : arch);
  if (arch == "qwen2-window") c.sliding_window = 3;
  if (arch == "llama") c.rope_theta = 500.0f;  // a visible rotation at short lengths
  return c;
}

}  // namespace

TEST_CASE("HF export then import is the identity, and config.json reads back", "[io][cpu]") {
  for (const char* arch : {"gpt", "llama", "llama-gqa", "llama-mqa", "qwen2", "llama-hd", "llama-window",
                           "qwen2-window"}) {
    DYNAMIC_SECTION(arch) {
      TempDir dir;
      ModelConfig c = hf_tiny(arch);
      Model a(c, cpu(), Precision::fp32, 17);
      const HfLayout layout = hf_layout_for(c);
      export_hf(a, dir.path(), layout, DType::f32);
      HfLayout read_layout;
      ModelConfig back = read_hf_config(dir.path(), &read_layout);
      CHECK(read_layout == layout);
      // The architecture by shape: q/k/v-only biases are qwen2's, a window (no biases) mistral's.
      const std::string arch_name = arch;
      CHECK(back.hf_model_type == (arch_name == "gpt"             ? "gpt2"
                                   : arch_name.rfind("qwen2", 0) == 0 ? "qwen2"
                                   : arch_name == "llama-window"      ? "mistral"
                                                                      : "llama"));
      back.hf_model_type.clear();  // c was not imported
      CHECK(model_config_to_json(back) == model_config_to_json(c));
      Model b(back, cpu(), Precision::fp32, 18);
      import_hf(b, dir.path(), layout);
      for (int u = 0; u < a.num_units(); ++u)
        CHECK(std::memcmp(a.unit_params(u).data, b.unit_params(u).data, a.unit_params(u).nbytes()) == 0);
      // bf16 export: each value is the f32 value rounded.
      export_hf(a, dir.file("bf"), layout, DType::bf16);
      Model h(c, cpu(), Precision::fp32, 19);
      import_hf(h, dir.file("bf"), layout);
      TensorView wa = a.parameter("blocks.1.attn.qkv.weight"), wh = h.parameter("blocks.1.attn.qkv.weight");
      for (int64_t i = 0; i < wa.numel(); ++i)
        REQUIRE(wh.ptr<float>()[i] == bf16_to_float(float_to_bf16(wa.ptr<float>()[i])));
    }
  }
}

TEST_CASE("HF-layout weights give the logits and loss of an independent double forward", "[io][cpu]") {
  for (const char* arch : {"gpt", "llama", "llama-hd", "llama-window"}) {
    DYNAMIC_SECTION(arch) {
      TempDir dir;
      const ModelConfig c = hf_tiny(arch);
      HfModel hf = random_hf(c, hf_layout_for(c));
      hf.save(dir.file("model.safetensors"));
      Model m(c, cpu(), Precision::fp32, 1);
      import_hf(m, dir.file("model.safetensors"), hf.layout);

      const int64_t T = 9;
      RandomBatch batch(2, T, c.vocab_size, 31);
      double ref_loss = 0;
      std::vector<float> last = m.last_logits(batch.batch().inputs);
      for (int64_t b = 0; b < 2; ++b) {
        std::vector<int32_t> tokens(batch.inputs.begin() + b * T, batch.inputs.begin() + (b + 1) * T);
        Mat logits = reference_logits(hf, tokens);
        for (int64_t v = 0; v < c.vocab_size; ++v) {
          const double want = logits[size_t((T - 1) * c.vocab_size + v)];
          REQUIRE(std::abs(last[size_t(b * c.vocab_size + v)] - want) <= 1e-4 * (1 + std::abs(want)));
        }
        for (int64_t t = 0; t < T; ++t) {
          const double* row = &logits[size_t(t * c.vocab_size)];
          double mx = -1e300, s = 0;
          for (int64_t v = 0; v < c.vocab_size; ++v) mx = std::max(mx, row[v]);
          for (int64_t v = 0; v < c.vocab_size; ++v) s += std::exp(row[v] - mx);
          ref_loss += (mx + std::log(s) - row[batch.targets[size_t(b * T + t)]]) / double(2 * T);
        }
      }
      const float loss = m.forward(batch.batch(), StepKey{}, false);
      CHECK(loss == Approx(ref_loss).epsilon(1e-5));
    }
  }
}

TEST_CASE("HF import rejects missing, misshapen and foreign tensors before writing", "[io][cpu]") {
  TempDir dir;
  const ModelConfig c = hf_tiny("llama");
  HfModel hf = random_hf(c, HfLayout::llama);
  Model m(c, cpu(), Precision::fp32, 1);
  std::vector<char> before(size_t(m.unit_params(1).nbytes()));
  std::memcpy(before.data(), m.unit_params(1).data, before.size());
  SECTION("missing") {
    hf.w.erase("model.layers.1.mlp.up_proj.weight");
    hf.save(dir.file("a.safetensors"));
    REQUIRE_THROWS_WITH(import_hf(m, dir.file("a.safetensors"), HfLayout::llama),
                        Catch::Contains("missing tensor \"model.layers.1.mlp.up_proj.weight\""));
  }
  SECTION("misshapen") {
    hf.shapes["model.layers.0.self_attn.k_proj.weight"] = {4, 64};
    hf.save(dir.file("b.safetensors"));
    REQUIRE_THROWS_WITH(import_hf(m, dir.file("b.safetensors"), HfLayout::llama),
                        Catch::Contains("model.layers.0.self_attn.k_proj.weight") && Catch::Contains("wrong shape"));
  }
  SECTION("foreign") {
    hf.add("model.layers.0.self_attn.q_norm.weight", {8}, 1, 0, 99);
    hf.save(dir.file("c.safetensors"));
    REQUIRE_THROWS_WITH(import_hf(m, dir.file("c.safetensors"), HfLayout::llama), Catch::Contains("q_norm"));
  }
  SECTION("another layout") {
    hf.save(dir.file("d.safetensors"));
    Model g(tiny_config("gpt"), cpu(), Precision::fp32, 1);
    REQUIRE_THROWS_WITH(import_hf(g, dir.file("d.safetensors"), HfLayout::llama), Catch::Contains("gpt2 model"));
  }
  CHECK(std::memcmp(before.data(), m.unit_params(1).data, before.size()) == 0);
  ModelConfig odd = c;
  odd.mlp = MlpKind::gelu;
  REQUIRE_THROWS_WITH(hf_layout_for(odd), Catch::Contains("fits neither"));
}
