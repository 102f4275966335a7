// Generation with a KV cache on the emulated CUDA device (kernels/cuda/attention_decode.cu
// and the Model's decode path through the CUDA dispatch) against the same model on a
// CPU device, and the attention_decode kernel against the CPU backend; left-padded
// batches bitwise equal to each row alone.
#include <catch2/catch.hpp>
#include <algorithm>
#include <array>
#include <cmath>

#include "emu_support.h"
#include "ops.h"
#include "train/generate_support.h"
#include "train/train_support.h"

namespace strata::test {
namespace {

TEST_CASE("cuda_emu: attention_decode matches the CPU backend", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  const int64_t window = GENERATE(0, 1, 4);  // sliding window (0: none)
  // {B, T, NH, NKV, HD, S, pos}: one new row after a filled cache, a prefill, grouped heads.
  for (auto [B, T, NH, NKV, HD, S, pos] : {std::array<int64_t, 7>{2, 1, 4, 2, 8, 20, 13},
                                           std::array<int64_t, 7>{1, 9, 2, 2, 16, 9, 0},
                                           std::array<int64_t, 7>{2, 3, 3, 1, 6, 12, 5}}) {
    INFO(dtype_name(dt) << " B " << B << " T " << T << " NH " << NH << " NKV " << NKV << " pos " << pos << " window "
                        << window);
    HostTensor qkv(dt, {B, T, (NH + 2 * NKV) * HD});
    HostTensor kc_w(dt, {B, NKV, S, HD}), vc_w(dt, {B, NKV, S, HD}), out_w(dt, {B, T, NH, HD}), out_g = out_w;
    qkv.uniform(1, -2, 2), kc_w.uniform(2, -2, 2), vc_w.uniform(3);
    HostTensor kc_g = kc_w, vc_g = vc_w;
    ops::attention_decode({out_w.view(), qkv.view(), kc_w.view(), vc_w.view(), NH, pos, window}, cpu().stream());
    cuda_emu::attention_decode({out_g.view(), qkv.view(), kc_g.view(), vc_g.view(), NH, pos, window}, emu());
    expect_match("out", out_g, out_w, 2.0);
    expect_match("k_cache", kc_g, kc_w, 0.0);  // copies: exact
    expect_match("v_cache", vc_g, vc_w, 0.0);
  }
}

TEST_CASE("cuda_emu: greedy generation with the KV cache matches the CPU device and the full-context path",
          "[cuda_emu]") {
  const std::string arch = GENERATE("gpt", "llama");
  const Precision precision = GENERATE(Precision::fp32, Precision::bf16);
  INFO(arch << " " << precision_name(precision));
  auto gpu = Device::cuda();
  auto cpu = Device::cpu();
  const ModelConfig c = tiny_config(arch);
  Model g(c, *gpu, precision, 3), h(c, *cpu, precision, 3);
  spread_weights(g, 21), spread_weights(h, 21);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17, 2}, {30, 1, 9}};
  SampleOptions so;
  so.max_new_tokens = 7, so.temperature = 0;
  const auto on_gpu = generate(g, prompts, so);
  CHECK(on_gpu == generate(h, prompts, so));
  for (size_t r = 0; r < prompts.size(); ++r) {
    const FullContextGreedy ref = full_context_greedy(g, prompts[r], 7);
    // In fp32 the tokens are the full-context path's. In bf16 the full-context path
    // runs the flash kernel, which rounds the probabilities to bf16 before P·V, so
    // near-ties may break differently: there the logits are compared, teacher-forced
    // along the reference's tokens, to bf16 tolerance (a few 2^-8 of the largest).
    if (precision == Precision::fp32) CHECK(on_gpu[r] == ref.tokens);
    KvCache cache(g, 1);
    std::vector<int32_t> step = prompts[r];
    for (size_t i = 0; i < ref.tokens.size(); ++i) {
      const std::vector<float> l = g.decode(TensorView(step.data(), DType::i32, {1, int64_t(step.size())}), cache);
      double err = 0, mag = 0;
      for (size_t v = 0; v < l.size(); ++v) {
        err = std::max(err, std::fabs(double(l[v]) - double(ref.logits[i][v])));
        mag = std::max(mag, std::fabs(double(ref.logits[i][v])));
      }
      CHECK(err <= (precision == Precision::fp32 ? 2e-5 : 3e-2) * mag);
      step = {ref.tokens[i]};
    }
  }
  so.temperature = 0.9f, so.top_k = 10, so.top_p = 0.9f, so.seed = 8;
  CHECK(generate(g, prompts, so) == generate(h, prompts, so));
}

TEST_CASE("cuda_emu: left-padded batched generation: each row is bitwise the row alone", "[cuda_emu]") {
  const std::string arch = GENERATE("gpt", "llama-gqa");
  const Precision precision = GENERATE(Precision::fp32, Precision::bf16);
  INFO(arch << " " << precision_name(precision));
  auto gpu = Device::cuda();
  ModelConfig c = tiny_config(arch);
  if (arch == "llama-gqa") c.rope_scaling = {RopeScalingKind::llama3, 4.0f, 1.0f, 4.0f, 8};
  Model g(c, *gpu, precision, 3);
  spread_weights(g, 23);
  const std::vector<std::vector<int32_t>> prompts = {{5, 17}, {30, 1, 9, 4}, {8}};
  SampleOptions so;
  so.max_new_tokens = 5, so.temperature = 0;
  const auto rows = generate(g, prompts, so);
  for (size_t r = 0; r < prompts.size(); ++r) CHECK(rows[r] == sample(g, prompts[r], so));
  // Prefill logits of the padded batch against each row alone, bitwise.
  const int64_t B = 3, P = 4, V = c.vocab_size;
  std::vector<int32_t> batch(size_t(B * P), 0), starts;
  for (int64_t b = 0; b < B; ++b) {
    starts.push_back(int32_t(P - int64_t(prompts[size_t(b)].size())));
    std::copy(prompts[size_t(b)].begin(), prompts[size_t(b)].end(), batch.begin() + b * P + starts.back());
  }
  KvCache padded(g, B, P + 1, starts);
  const std::vector<float> l = g.decode(TensorView(batch.data(), DType::i32, {B, P}), padded);
  for (int64_t b = 0; b < B; ++b) {
    KvCache alone(g, 1);
    std::vector<int32_t> p = prompts[size_t(b)];
    const std::vector<float> a = g.decode(TensorView(p.data(), DType::i32, {1, int64_t(p.size())}), alone);
    CHECK(std::equal(a.begin(), a.end(), l.begin() + b * V));
  }
  so.temperature = 0.9f, so.top_k = 10, so.seed = 8;
  CHECK(generate(g, prompts, so)[0] == sample(g, prompts[0], so));
}

}  // namespace
}  // namespace strata::test
