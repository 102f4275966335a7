// Emulated CUDA embedding, cross-entropy (with the padded-vocabulary head's GEMMs),
// AdamW and the bias gradient (kernels/cuda/{embedding,cross_entropy,matmul_tiled,
// adamw,reduce}.cu) against the CPU backend. global_norm and count_nonfinite run in
// the shared op table (tests/ops/cases/reduce.cpp).
#include <catch2/catch.hpp>
#include <cmath>

#include "emu_support.h"
#include "ops.h"

namespace strata::test {
namespace {

TEST_CASE("cuda_emu: embedding forward and backward", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  // {B, T, V, C}: V past one block of vocabulary rows, C past one block of columns.
  for (auto s : std::vector<std::vector<int64_t>>{{1, 1, 1, 1}, {2, 17, 70, 3}, {3, 40, 150, 130}}) {
    const int64_t b = s[0], t = s[1], v = s[2], c = s[3];
    for (DType gdt : {dt, DType::f32}) {
      HostTensor tokens(DType::i32, {b, t}), wte(dt, {v, c}), wpe(dt, {t + 2, c}), d_out(dt, {b, t, c});
      tokens.tokens(1, int32_t(v));
      if (v > 3) tokens.set(0, 3), tokens.set(1, 3);  // repeated tokens must sum in order
      wte.uniform(2);
      wpe.uniform(3);
      d_out.uniform(4);
      HostTensor want(dt, {b, t, c}), got(dt, {b, t, c});
      ops::embedding_forward({want.view(), tokens.view(), wte.view(), wpe.view(), 2}, cpu().stream());
      cuda_emu::embedding_forward({got.view(), tokens.view(), wte.view(), wpe.view(), 2}, emu());
      expect_match("embedding_forward", got, want, 0.0);
      ops::embedding_forward({want.view(), tokens.view(), wte.view(), TensorView(), 0}, cpu().stream());
      cuda_emu::embedding_forward({got.view(), tokens.view(), wte.view(), TensorView(), 0}, emu());
      expect_match("embedding_forward without wpe", got, want, 0.0);

      HostTensor dwte_want(gdt, {v, c}), dwpe_want(gdt, {t + 2, c});
      dwte_want.uniform(5);
      dwpe_want.uniform(6);
      HostTensor dwte_got = dwte_want, dwpe_got = dwpe_want;
      ops::embedding_backward({dwte_want.view(), dwpe_want.view(), d_out.view(), tokens.view(), 2}, cpu().stream());
      cuda_emu::embedding_backward({dwte_got.view(), dwpe_got.view(), d_out.view(), tokens.view(), 2}, emu());
      expect_match("d_wte", dwte_got, dwte_want, 0.0);  // same sums in the same order: bitwise
      expect_match("d_wpe", dwpe_got, dwpe_want, 0.0);
    }
  }
}

TEST_CASE("cuda_emu: cross-entropy forward and backward", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  for (auto [n, v] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {5, 17}, {3, 1000}, {2, 3000}}) {
    HostTensor logits(dt, {n, v}), targets(DType::i32, {n});
    logits.uniform(1, -8, 8);
    targets.tokens(2, int32_t(v));
    if (n > 2) targets.set(1, -100);  // ignored row
    HostTensor loss_w(DType::f32, {n}), lse_w(DType::f32, {n}), loss_g(DType::f32, {n}), lse_g(DType::f32, {n});
    ops::cross_entropy_forward({loss_w.view(), lse_w.view(), logits.view(), targets.view()}, cpu().stream());
    cuda_emu::cross_entropy_forward({loss_g.view(), lse_g.view(), logits.view(), targets.view()}, emu());
    expect_match("losses", loss_g, loss_w, 2.0);
    expect_match("lse", lse_g, lse_w, 2.0);
    HostTensor d_w(dt, {n, v}), d_g(dt, {n, v});
    ops::cross_entropy_backward({d_w.view(), logits.view(), lse_w.view(), targets.view(), 0.25f}, cpu().stream());
    cuda_emu::cross_entropy_backward({d_g.view(), logits.view(), lse_w.view(), targets.view(), 0.25f}, emu());
    expect_match("d_logits", d_g, d_w, 2.0);
    // In place: d_logits aliases logits.
    HostTensor inplace = logits;
    cuda_emu::cross_entropy_backward({inplace.view(), inplace.view(), lse_w.view(), targets.view(), 0.25f}, emu());
    expect_match("d_logits in place", inplace, d_w, 2.0);
  }
}

// The head with a padded vocabulary (row stride Vp = 64, V = 50): the tiled GEMM
// writing and reading a padded row stride, and cross-entropy with vocab = V, against
// the CPU backend on the same padded buffers. The padding starts as NaN: the forward
// GEMM must leave it, cross-entropy must not read it, its gradient must be 0 there,
// and the backward GEMM must not read it (d_inp and d_weight would turn NaN).
TEST_CASE("cuda_emu: padded vocabulary head matches the CPU", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  const int64_t n = 9, c = 24, v = 50, vp = 64;
  HostTensor x(dt, {n, c}), w(dt, {v, c}), targets(DType::i32, {n});
  x.uniform(1), w.uniform(2, -0.3, 0.3);
  targets.tokens(3, int32_t(v));
  targets.set(0, int32_t(v - 1)), targets.set(1, -100);
  HostTensor logits_w(dt, {n, vp});
  logits_w.fill(NAN);
  HostTensor logits_g = logits_w;
  ops::MatmulForwardArgs f{logits_w.view(), x.view(), w.view(), {}};
  f.out_padded = true;
  ops::matmul_forward(f, cpu().stream());
  f.out = logits_g.view();
  cuda_emu::matmul_forward(f, emu());
  expect_match("padded logits", logits_g, logits_w, 2.0);

  HostTensor loss_w(DType::f32, {n}), lse_w(DType::f32, {n}), loss_g(DType::f32, {n}), lse_g(DType::f32, {n});
  ops::CrossEntropyForwardArgs cf{loss_w.view(), lse_w.view(), logits_w.view(), targets.view()};
  cf.vocab = v;
  ops::cross_entropy_forward(cf, cpu().stream());
  cf.losses = loss_g.view(), cf.lse = lse_g.view(), cf.logits = logits_g.view();
  cuda_emu::cross_entropy_forward(cf, emu());
  expect_match("losses", loss_g, loss_w, 2.0);
  expect_match("lse", lse_g, lse_w, 2.0);
  for (int64_t r = 0; r < n; ++r) REQUIRE(std::isfinite(loss_w.get(r)));

  // In place, as the head does: d_logits overwrite the logits.
  ops::CrossEntropyBackwardArgs cb{logits_w.view(), logits_w.view(), lse_w.view(), targets.view(), 0.25f};
  cb.vocab = v;
  ops::cross_entropy_backward(cb, cpu().stream());
  cb.d_logits = cb.logits = logits_g.view(), cb.lse = lse_g.view();
  cuda_emu::cross_entropy_backward(cb, emu());
  expect_match("d_logits", logits_g, logits_w, 2.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = v; j < vp; ++j) REQUIRE(logits_g.get(r * vp + j) == 0.0);

  for (int64_t r = 0; r < n; ++r)  // NaN padding again: the backward GEMM must not read it
    for (int64_t j = v; j < vp; ++j) logits_w.set(r * vp + j, NAN), logits_g.set(r * vp + j, NAN);
  HostTensor dx_w(dt, {n, c}), dw_w(DType::f32, {v, c});
  dw_w.uniform(4);
  HostTensor dx_g = dx_w, dw_g = dw_w;
  ops::MatmulBackwardArgs b{dx_w.view(), dw_w.view(), {}, logits_w.view(), x.view(), w.view()};
  b.d_out_padded = true;
  ops::matmul_backward(b, cpu().stream());
  b.d_inp = dx_g.view(), b.d_weight = dw_g.view(), b.d_out = logits_g.view();
  cuda_emu::matmul_backward(b, emu());
  expect_match("d_inp", dx_g, dx_w, 2.0);
  expect_match("d_weight", dw_g, dw_w, 2.0);
  for (int64_t i = 0; i < n * c; ++i) REQUIRE(std::isfinite(dx_w.get(i)));
  for (int64_t i = 0; i < v * c; ++i) REQUIRE(std::isfinite(dw_w.get(i)));
}

TEST_CASE("cuda_emu: adamw step matches the CPU bit for bit", "[cuda_emu]") {
  const DType wdt = GENERATE(from_range(kFloatTypes));
  for (int64_t n : {1, 17, 1000}) {
    HostTensor master(DType::f32, {n}), grad(DType::f32, {n}), m(DType::f32, {n}), v(DType::f32, {n});
    master.uniform(1);
    grad.uniform(2);
    m.uniform(3, -0.1, 0.1);
    v.uniform(4, 0, 0.01);
    HostTensor master_g = master, m_g = m, v_g = v, work_w(wdt, {n}), work_g(wdt, {n});
    ops::AdamWArgs a;
    a.lr = 3e-3f, a.weight_decay = 0.1f, a.grad_scale = 0.5f, a.step = 7;
    a.grad = grad.view();
    a.master = master.view(), a.m = m.view(), a.v = v.view(), a.working = work_w.view();
    ops::adamw_step(a, cpu().stream());
    a.master = master_g.view(), a.m = m_g.view(), a.v = v_g.view(), a.working = work_g.view();
    cuda_emu::adamw_step(a, emu());
    expect_match("master", master_g, master, 0.0);
    expect_match("m", m_g, m, 0.0);
    expect_match("v", v_g, v, 0.0);
    expect_match("working", work_g, work_w, 0.0);
  }
}

// The bias gradient of matmul_backward against the CPU backend (weight-free case).
TEST_CASE("cuda_emu: bias gradient", "[cuda_emu]") {
  const DType dt = GENERATE(from_range(kFloatTypes));
  for (DType gdt : {dt, DType::f32}) {
    const int64_t rows = 37, oc = 19, ic = 5;
    HostTensor d_out(dt, {rows, oc}), inp(dt, {rows, ic}), weight(dt, {oc, ic}), db_w(gdt, {oc});
    d_out.uniform(4), inp.uniform(5), weight.uniform(6), db_w.uniform(7);
    HostTensor db_g = db_w;
    ops::MatmulBackwardArgs mb;
    mb.d_bias = db_w.view(), mb.d_out = d_out.view(), mb.inp = inp.view(), mb.weight = weight.view();
    ops::matmul_backward(mb, cpu().stream());
    cuda_emu::bias_grad(db_g.view(), d_out.view(), emu());
    expect_match("d_bias", db_g, db_w, 2.0);
  }
}

}  // namespace
}  // namespace strata::test
