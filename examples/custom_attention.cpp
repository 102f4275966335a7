// A research block written only against the public headers (strata/unit.h, strata/ops.h):
// the "parallel" transformer block of GPT-J and PaLM, where attention and the MLP read
// the same normed input and both add into the residual stream,
//   h = LN(x);  y = x + proj(attention(qkv(h))) + fc2(gelu(fc(h))),
// instead of the built-in sequential block. The program gradient-checks the block
// (strata::check_unit_gradients), composes a model from it (built-in embedding, these
// blocks, built-in head), trains it with its whole state paged to NVMe, and reports
// exact-match accuracy on held-out strings of a synthetic task: reversing a string
// (docs/custom_units.md shows a run's output).
//   build/examples/custom_attention                 # swap files in a fresh /tmp dir
//   build/examples/custom_attention --nvme /mnt/nvme/strata --steps 600 --length 8
// Invariants kept by the block: parameter gradients +=, dx =, nothing allocated in
// forward or backward (everything sized in reserve / scratch_bytes).
#include <strata/offload.h>
#include <strata/strata.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

namespace {

class ParallelBlock final : public strata::Unit {
 public:
  ParallelBlock(const strata::ModelConfig& c, int layer)
      : c_(c), layer_(layer), C_(c.d_model), H_(c.d_mlp), NH_(c.n_heads) {}
  std::string name() const override { return "parallel." + std::to_string(layer_); }

  std::vector<strata::ParamSpec> param_specs() const override {
    using I = strata::ParamSpec::Init;
    using R = strata::ParamRole;
    return {{"ln.weight", {C_}, I::ones, 0, R::norm},          {"ln.bias", {C_}, I::zeros, 0, R::bias},
            {"attn.qkv.weight", {3 * C_, C_}, I::normal, 0.02f}, {"attn.qkv.bias", {3 * C_}, I::zeros, 0, R::bias},
            {"attn.proj.weight", {C_, C_}, I::normal, 0.02f},    {"attn.proj.bias", {C_}, I::zeros, 0, R::bias},
            {"mlp.fc.weight", {H_, C_}, I::normal, 0.02f},       {"mlp.fc.bias", {H_}, I::zeros, 0, R::bias},
            {"mlp.proj.weight", {C_, H_}, I::normal, 0.02f},     {"mlp.proj.bias", {C_}, I::zeros, 0, R::bias}};
  }

  void reserve(strata::Device& device, strata::DType dt, int64_t B, int64_t T) override {
    const size_t bytes = saved_bytes(dt, B, T);
    if (saved_.size() < bytes) saved_ = strata::Buffer(device, bytes, "parallel block activations");
  }
  // d_act (H), d_h (C), d_att (C), d_qkv (3C) and the attention branch's d_h (C), per row.
  size_t scratch_bytes(strata::DType dt, int64_t n) const override {
    return strata::carve_bytes(dt, n * H_) + 3 * strata::carve_bytes(dt, n * C_) + strata::carve_bytes(dt, n * 3 * C_);
  }

  void forward(const strata::UnitContext& ctx, const strata::UnitParams& p, strata::UnitIO& io) override {
    namespace ops = strata::ops;
    Saved a = saved(ctx);
    strata::Stream& s = ctx.stream;
    const auto& P = p.params;
    const strata::TensorView x = io.x.reshape({ctx.rows(), C_}), y = io.y.reshape({ctx.rows(), C_});
    ops::norm_forward({a.h, a.mean, a.rstd, x, P[0], P[1], c_.norm_eps, false}, s);
    ops::matmul_forward({a.qkv, a.h, P[2], P[3]}, s);
    ops::attention_forward({heads(ctx, a.att), a.lse, a.qkv.reshape({ctx.B, ctx.T, 3 * C_}), NH_, c_.causal, 0.0f, {}},
                           s);
    ops::matmul_forward({y, a.att, P[4], P[5]}, s);
    ops::matmul_forward({a.act, a.h, P[6], P[7], a.pre}, s);  // act = gelu(pre), one pass
    ops::matmul_forward({a.mlp, a.act, P[8], P[9]}, s);
    ops::add({y, y, a.mlp}, s);
    ops::add({y, y, x}, s);
  }

  void backward(const strata::UnitContext& ctx, const strata::UnitParams& p, strata::UnitIO& io,
                void* scratch) override {
    namespace ops = strata::ops;
    Saved a = saved(ctx);
    strata::Stream& s = ctx.stream;
    const auto& P = p.params;
    const auto& G = p.grads;
    const int64_t n = ctx.rows();
    char* cur = static_cast<char*>(scratch);
    const strata::TensorView d_act = strata::carve(cur, ctx.dtype, {n, H_});
    const strata::TensorView d_h = strata::carve(cur, ctx.dtype, {n, C_});
    const strata::TensorView d_h_attn = strata::carve(cur, ctx.dtype, {n, C_});
    const strata::TensorView d_att = strata::carve(cur, ctx.dtype, {n, C_});
    const strata::TensorView d_qkv = strata::carve(cur, ctx.dtype, {n, 3 * C_});
    const strata::TensorView x = io.x.reshape({n, C_}), dy = io.dy.reshape({n, C_});
    // MLP branch.
    ops::matmul_backward({d_act, G[8], G[9], dy, a.act, P[8]}, s);
    ops::gelu_backward({d_act, d_act, a.pre}, s);
    ops::matmul_backward({d_h, G[6], G[7], d_act, a.h, P[6]}, s);
    // Attention branch.
    ops::matmul_backward({d_att, G[4], G[5], dy, a.att, P[4]}, s);
    ops::attention_backward({d_qkv.reshape({ctx.B, ctx.T, 3 * C_}), heads(ctx, d_att),
                             a.qkv.reshape({ctx.B, ctx.T, 3 * C_}), heads(ctx, a.att), a.lse, NH_, c_.causal, 0.0f, {}},
                            s);
    ops::matmul_backward({d_h_attn, G[2], G[3], d_qkv, a.h, P[2]}, s);
    ops::add({d_h, d_h, d_h_attn}, s);
    // dx = dy (the residual) + the norm's input gradient, in one pass.
    ops::residual_norm_backward({io.dx.reshape({n, C_}), G[0], G[1], dy, d_h, x, P[0], a.mean, a.rstd, false}, s);
  }

 private:
  struct Saved {
    strata::TensorView h, mean, rstd, qkv, att, lse, pre, act, mlp;
  };
  size_t saved_bytes(strata::DType dt, int64_t B, int64_t T) const {
    const int64_t n = B * T;
    return 3 * strata::carve_bytes(dt, n * C_) + strata::carve_bytes(dt, n * 3 * C_) +
           2 * strata::carve_bytes(dt, n * H_) + 2 * strata::carve_bytes(strata::DType::f32, n) +
           strata::carve_bytes(strata::DType::f32, B * NH_ * T);
  }
  Saved saved(const strata::UnitContext& ctx) {
    const int64_t n = ctx.rows();
    char* cur = static_cast<char*>(saved_.data());
    Saved a;
    a.h = strata::carve(cur, ctx.dtype, {n, C_});
    a.att = strata::carve(cur, ctx.dtype, {n, C_});
    a.mlp = strata::carve(cur, ctx.dtype, {n, C_});
    a.qkv = strata::carve(cur, ctx.dtype, {n, 3 * C_});
    a.pre = strata::carve(cur, ctx.dtype, {n, H_});
    a.act = strata::carve(cur, ctx.dtype, {n, H_});
    a.mean = strata::carve(cur, strata::DType::f32, {n});
    a.rstd = strata::carve(cur, strata::DType::f32, {n});
    a.lse = strata::carve(cur, strata::DType::f32, {ctx.B, NH_, ctx.T});
    return a;
  }
  strata::TensorView heads(const strata::UnitContext& ctx, const strata::TensorView& t) const {
    return t.reshape({ctx.B, ctx.T, NH_, C_ / NH_});
  }
  strata::ModelConfig c_;
  int layer_;
  int64_t C_, H_, NH_;
  strata::Buffer saved_;
};

// The reversal task: k symbols from 1..V-1, the separator 0, the symbols reversed.
// Only the reversed half is scored (targets -100 elsewhere).
constexpr int32_t kSep = 0;
struct Task {
  int64_t k, vocab;
  // String `id`: k symbols from a splitmix64 stream of the id.
  std::vector<int32_t> string(uint64_t id) const {
    std::vector<int32_t> s;
    uint64_t z = id * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < k; ++i) {
      z ^= z >> 31;
      z *= 0xBF58476D1CE4E5B9ull;
      z ^= z >> 29;
      s.push_back(int32_t(1 + z % uint64_t(vocab - 1)));
    }
    return s;
  }
  // Rows of (inputs, targets), each 2k long: s, SEP, reverse(s) shifted by one.
  void batch(uint64_t first_id, int64_t B, std::vector<int32_t>& in, std::vector<int32_t>& tg) const {
    in.clear();
    tg.clear();
    for (int64_t b = 0; b < B; ++b) {
      std::vector<int32_t> s = string(first_id + uint64_t(b)), seq = s;
      seq.push_back(kSep);
      seq.insert(seq.end(), s.rbegin(), s.rend());
      for (int64_t t = 0; t < 2 * k; ++t) {
        in.push_back(seq[size_t(t)]);
        tg.push_back(t >= k ? seq[size_t(t + 1)] : -100);
      }
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string nvme;
  int64_t steps = 300, batch = 64, k = 6;
  float lr = 3e-3f;
  CLI::App app("Gradient-checks and trains a user-defined parallel attention block, state paged to NVMe.",
               "custom_attention");
  app.add_option("--nvme", nvme, "swap directory on a local drive (default: a fresh directory in /tmp)");
  app.add_option("--steps", steps, "optimizer steps")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  app.add_option("--batch", batch, "strings per step")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  app.add_option("--length", k, "symbols per string")->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--lr", lr, "AdamW learning rate")->capture_default_str()->check(CLI::Range(0.0f, 1.0f));
  CLI11_PARSE(app, argc, argv);

  try {
    strata::ModelConfig c;
    c.vocab_size = 10;
    c.n_layers = 2;
    c.n_heads = 4;
    c.d_model = 64;
    c.d_mlp = 256;
    c.max_seq = 2 * k;
    c.bias = true;
    auto device = strata::Device::cpu();

    ParallelBlock probe(c, 0);
    const strata::UnitGradCheckReport report = strata::check_unit_gradients(probe, c, *device);
    std::printf("gradient check of %s: %s\n%s", probe.name().c_str(), report.ok() ? "ok" : "FAILED",
                report.str().c_str());
    if (!report.ok()) return 1;

    std::vector<std::unique_ptr<strata::Unit>> units;
    units.push_back(strata::make_embedding_unit(c));
    for (int l = 0; l < int(c.n_layers); ++l) units.push_back(std::make_unique<ParallelBlock>(c, l));
    units.push_back(strata::make_head_unit(c));
    strata::Model model(c, std::move(units), *device, strata::Precision::fp32, 1);

    // A swap directory made here is removed at exit, after the Trainer (declared later)
    // has closed its files.
    struct Scratch {
      std::string path;
      ~Scratch() {
        std::error_code ec;
        if (!path.empty()) std::filesystem::remove_all(path, ec);
      }
    } scratch;
    if (nvme.empty()) {
      char tmpl[] = "/tmp/strata-custom-attention-XXXXXX";
      if (!mkdtemp(tmpl)) throw strata::Error("custom_attention: cannot create a swap directory in /tmp");
      nvme = scratch.path = tmpl;
    }
    strata::offload::OffloadOptions off;
    off.params = off.grads = off.optimizer = strata::offload::Tier::nvme;
    off.nvme_paths = {nvme};
    off.pinned_bytes = size_t(64) << 20;
    strata::TrainOptions to;
    to.adamw.lr = lr;
    to.adamw.weight_decay = 0.0f;
    strata::Trainer trainer(model, to, off);

    const Task task{k, c.vocab_size};
    std::vector<int32_t> in, tg;
    std::set<std::vector<int32_t>> seen;  // training strings, kept out of the held-out count
    for (int64_t step = 0; step < steps; ++step) {
      task.batch(uint64_t(step * batch), batch, in, tg);  // ids below 2^40: training strings
      strata::Batch b{strata::TensorView(in.data(), strata::DType::i32, {batch, 2 * k}, device.get()),
                      strata::TensorView(tg.data(), strata::DType::i32, {batch, 2 * k}, device.get())};
      const strata::StepReport r = trainer.train_step({b});
      if ((step + 1) % 100 == 0 || step == 0)
        std::printf("step %lld loss %.4f (state on NVMe: %.2f MiB in %s)\n", (long long)(step + 1), r.loss,
                    double(r.nvme_bytes) / double(1 << 20), nvme.c_str());
      for (int64_t b2 = 0; b2 < batch; ++b2) seen.insert(task.string(uint64_t(step * batch + b2)));
    }

    // Held-out strings (ids from 2^40, none seen in training), decoded greedily after
    // the separator.
    int64_t held = 0, exact = 0;
    for (uint64_t id = uint64_t(1) << 40; held < 256; ++id) {
      std::vector<int32_t> s = task.string(id), seq = s;
      if (seen.count(s)) continue;
      ++held;
      seq.push_back(kSep);
      for (int64_t i = 0; i < k; ++i) {
        const strata::TensorView v(seq.data(), strata::DType::i32, {1, int64_t(seq.size())}, device.get());
        const std::vector<float> logits = model.last_logits(v);
        seq.push_back(int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin()));
      }
      exact += std::equal(s.rbegin(), s.rend(), seq.begin() + k + 1);
    }
    std::printf("held-out exact match: %lld / %lld = %.1f%%\n", (long long)exact, (long long)held,
                100.0 * double(exact) / double(held));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "custom_attention: %s\n", e.what());
    return 1;
  }
}
