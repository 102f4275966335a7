// The head unit with a padded vocabulary (lib/model/embedding_head.cpp): its losses,
// input gradient and parameter gradients against the same ops composed unpadded here
// (norm, matmul into (N, V), cross-entropy over V), and the inference logits; a
// vocabulary already a multiple of 64 takes the unpadded path and is compared too.
// Invariant: the comparison is bit for bit — the padding changes the logits' row
// stride only, never a sum — and the reference never comes from the unit itself.
#include <catch2/catch.hpp>
#include <cmath>

#include "lib/model/unit.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

void expect_same_bits(const std::string& what, const HostTensor& got, const HostTensor& want) {
  REQUIRE(got.numel() == want.numel());
  int64_t bad = 0, first = -1;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got.get(i), w = want.get(i);
    if (!(g == w && std::signbit(g) == std::signbit(w))) bad += 1, first = first < 0 ? i : first;
  }
  INFO(what << ": " << bad << " elements differ, the first at " << first);
  CHECK(bad == 0);
}

struct HeadParams {
  HostTensor lnf_w, lnf_b, lm_head;       // working dtype
  HostTensor g_lnf_w, g_lnf_b, g_lm_head;  // f32, accumulated
};

TEST_CASE("the padded-vocabulary head is bitwise the unpadded head", "[train][cpu]") {
  const DType dt = GENERATE(DType::f32, DType::bf16);
  const int64_t vocab = GENERATE(int64_t(100), int64_t(128), int64_t(50257));
  const int64_t B = 2, T = 3, C = 16, N = B * T;
  ModelConfig cfg;
  cfg.vocab_size = vocab, cfg.d_model = C, cfg.n_heads = 2, cfg.n_layers = 1, cfg.d_mlp = 4 * C, cfg.max_seq = T;
  cfg.tied_embeddings = false;
  INFO("vocab " << vocab << ", " << dtype_name(dt));
  auto head = make_head_unit(cfg);
  const auto specs = head->param_specs();
  REQUIRE(specs.size() == 3);
  CHECK(specs[2].shape == std::vector<int64_t>{vocab, C});  // the parameter is never padded

  HeadParams p{HostTensor(dt, {C}),           HostTensor(dt, {C}),           HostTensor(dt, {vocab, C}),
               HostTensor(DType::f32, {C}),   HostTensor(DType::f32, {C}),   HostTensor(DType::f32, {vocab, C})};
  p.lnf_w.uniform(1, 0.5, 1.5), p.lnf_b.uniform(2, -0.1, 0.1), p.lm_head.uniform(3, -0.3, 0.3);
  p.g_lnf_w.uniform(4), p.g_lnf_b.uniform(5), p.g_lm_head.uniform(6);  // gradients accumulate
  HostTensor x(dt, {B, T, C}), targets(DType::i32, {B, T});
  x.uniform(7, -2, 2);
  targets.tokens(8, int32_t(vocab));
  targets.set(0, int32_t(vocab - 1)), targets.set(1, -100);
  const float d_loss = 1.0f / float(N - 1);

  // The unit.
  Stream& s = cpu().stream();
  UnitContext ctx{s, cfg, dt, 0, B, T, StepKey{}, true};
  head->reserve(cpu(), dt, B, T);
  std::vector<float> scratch(head->scratch_bytes(dt, N) / sizeof(float) + 16);
  HeadParams u{p.lnf_w, p.lnf_b, p.lm_head, p.g_lnf_w, p.g_lnf_b, p.g_lm_head};
  UnitParams up{{u.lnf_w.view(), u.lnf_b.view(), u.lm_head.view()},
                {u.g_lnf_w.view(), u.g_lnf_b.view(), u.g_lm_head.view()}};
  HostTensor losses(DType::f32, {N}), dx(dt, {B, T, C});
  UnitIO io;
  io.x = x.view(), io.targets = targets.view(), io.losses = losses.view(), io.dx = dx.view(), io.d_loss = d_loss;
  head->forward(ctx, up, io);
  head->backward(ctx, up, io, scratch.data());

  // The same ops, unpadded.
  HostTensor lnf(dt, {N, C}), mean(DType::f32, {N}), rstd(DType::f32, {N}), logits(dt, {N, vocab});
  HostTensor r_losses(DType::f32, {N}), lse(DType::f32, {N}), r_dx(dt, {N, C}), d_lnf(dt, {N, C});
  ops::norm_forward({lnf.view(), mean.view(), rstd.view(), x.view().reshape({N, C}), p.lnf_w.view(), p.lnf_b.view(),
                     cfg.norm_eps, false},
                    s);
  ops::matmul_forward({logits.view(), lnf.view(), p.lm_head.view(), {}}, s);
  ops::cross_entropy_forward({r_losses.view(), lse.view(), logits.view(), targets.view().reshape({N}), -100}, s);
  ops::cross_entropy_backward({logits.view(), logits.view(), lse.view(), targets.view().reshape({N}), d_loss, -100},
                              s);
  ops::matmul_backward({d_lnf.view(), p.g_lm_head.view(), {}, logits.view(), lnf.view(), p.lm_head.view()}, s);
  ops::norm_backward({r_dx.view(), p.g_lnf_w.view(), p.g_lnf_b.view(), d_lnf.view(), x.view().reshape({N, C}),
                      p.lnf_w.view(), mean.view(), rstd.view(), false},
                     s);
  s.synchronize();

  expect_same_bits("losses", losses, r_losses);
  for (int64_t r = 0; r < N; ++r) REQUIRE(std::isfinite(losses.get(r)));
  expect_same_bits("dx", dx, r_dx);
  expect_same_bits("d lm_head", u.g_lm_head, p.g_lm_head);
  expect_same_bits("d ln_f.weight", u.g_lnf_w, p.g_lnf_w);
  expect_same_bits("d ln_f.bias", u.g_lnf_b, p.g_lnf_b);

  // Inference logits (B rows): (B, V) f32, bitwise the unpadded GEMM's.
  UnitContext one{s, cfg, dt, 0, B, 1, StepKey{}, false};
  HostTensor last(dt, {B, C}), got(DType::f32, {B, vocab}), lnf1(dt, {B, C}), want(dt, {B, vocab});
  last.uniform(9);
  head_logits(*head, one, up, last.view(), got.view());
  ops::norm_forward({lnf1.view(), mean.view().slice_rows(0, B), rstd.view().slice_rows(0, B), last.view(),
                     p.lnf_w.view(), p.lnf_b.view(), cfg.norm_eps, false},
                    s);
  ops::matmul_forward({want.view(), lnf1.view(), p.lm_head.view(), {}}, s);
  s.synchronize();
  expect_same_bits("logits", got, want);
}

}  // namespace
}  // namespace strata::test
