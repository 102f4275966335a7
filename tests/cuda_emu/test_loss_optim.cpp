// Emulated CUDA padded-vocabulary head (the tiled GEMMs and cross-entropy together)
// and the bias gradient (kernels/cuda/{cross_entropy,matmul_tiled,reduce}.cu) against
// the CPU backend. Embedding, cross-entropy, AdamW, global_norm and count_nonfinite
// run in the shared op table (tests/ops/cases/*.cpp).
#include <catch2/catch.hpp>
#include <cmath>

#include "emu_support.h"
#include "ops.h"

namespace strata::test {
namespace {

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
