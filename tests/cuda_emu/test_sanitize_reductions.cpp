// The two-pass reductions of the CUDA backend (bias gradient, norm parameter
// gradients, bucketed embedding backward) under the sanitizing emulator, at shapes
// that span many chunks, column tiles and buckets: each matches the CPU backend and
// gives the same bits under every thread order (fixed chunks, fixed summation order).
#include <catch2/catch.hpp>

#include "cuda/emu/emu.h"
#include "emu_support.h"
#include "ops.h"

namespace strata::test {
namespace {

// Restores the thread-order seed when a test that changes it ends.
struct SeedGuard {
  uint64_t seed = emu::thread_order_seed();
  ~SeedGuard() { emu::set_thread_order_seed(seed); }
};

void expect_bitwise(const std::string& what, const HostTensor& a, const HostTensor& b) {
  REQUIRE(a.numel() == b.numel());
  int64_t differ = 0;
  for (int64_t i = 0; i < a.numel(); ++i) differ += a.get(i) != b.get(i);
  INFO(what);
  CHECK(differ == 0);
}

TEST_CASE("two-pass bias gradient: many chunks and column tiles, one result for every order",
          "[cuda_emu][sanitize]") {
  SeedGuard keep;
  const DType dt = GENERATE(DType::f32, DType::bf16);
  const int64_t rows = 1000, cols = 300, ic = 3;  // 16 row chunks, 2 column tiles
  HostTensor d_out(dt, {rows, cols}), inp(dt, {rows, ic}), weight(dt, {cols, ic}), db_w(DType::f32, {cols});
  d_out.uniform(4), inp.uniform(5), weight.uniform(6), db_w.uniform(7);
  const HostTensor db0 = db_w;
  ops::MatmulBackwardArgs mb;
  mb.d_bias = db_w.view(), mb.d_out = d_out.view(), mb.inp = inp.view(), mb.weight = weight.view();
  ops::matmul_backward(mb, cpu().stream());
  HostTensor first;
  for (uint64_t seed : {0, 1, 9}) {
    emu::set_thread_order_seed(seed);
    HostTensor db_g = db0;
    cuda_emu::bias_grad(db_g.view(), d_out.view(), emu());
    expect_match("d_bias", db_g, db_w, 4.0);
    if (first.numel() == 0) first = db_g;
    expect_bitwise("d_bias under seed " + std::to_string(seed), db_g, first);
  }
}

TEST_CASE("norm parameter gradients over more chunks than warps, one result for every order",
          "[cuda_emu][sanitize]") {
  SeedGuard keep;
  const int64_t n = 330, c = 70;  // 11 chunks of 32 rows
  HostTensor inp(DType::f32, {n, c}), weight(DType::f32, {c}), bias(DType::f32, {c}), d_out(DType::f32, {n, c});
  inp.uniform(1, -1, 3), weight.uniform(2, 0.5, 1.5), bias.uniform(3), d_out.uniform(4);
  HostTensor out(DType::f32, {n, c}), mean(DType::f32, {n}), rstd(DType::f32, {n});
  ops::norm_forward({out.view(), mean.view(), rstd.view(), inp.view(), weight.view(), bias.view()}, cpu().stream());
  auto run = [&](bool on_cpu, HostTensor& dw, HostTensor& db) {
    HostTensor dx(DType::f32, {n, c});
    dw = HostTensor(DType::f32, {c}), db = HostTensor(DType::f32, {c});
    dw.fill(0.5), db.fill(-0.25);
    const ops::NormBackwardArgs a{dx.view(),  dw.view(),     db.view(),   d_out.view(), inp.view(),
                                  weight.view(), mean.view(), rstd.view(), false};
    if (on_cpu)
      ops::norm_backward(a, cpu().stream());
    else
      cuda_emu::norm_backward(a, emu());
  };
  HostTensor dw_want, db_want, dw_first, db_first;
  run(true, dw_want, db_want);
  for (uint64_t seed : {0, 1, 9}) {
    emu::set_thread_order_seed(seed);
    HostTensor dw, db;
    run(false, dw, db);
    expect_match("d_weight", dw, dw_want, 4.0);
    expect_match("d_bias", db, db_want, 4.0);
    if (dw_first.numel() == 0) dw_first = dw, db_first = db;
    expect_bitwise("d_weight under seed " + std::to_string(seed), dw, dw_first);
    expect_bitwise("d_bias under seed " + std::to_string(seed), db, db_first);
  }
}

TEST_CASE("bucketed embedding backward over many token chunks matches the CPU bit for bit",
          "[cuda_emu][sanitize]") {
  SeedGuard keep;
  const DType dt = GENERATE(DType::f32, DType::bf16);
  const int64_t b = 4, t = 1300, v = 300, c = 40;  // 5200 tokens: 82 chunks of 64; 5 buckets
  HostTensor tokens(DType::i32, {b, t}), d_out(dt, {b, t, c});
  tokens.tokens(1, int32_t(v));
  for (int64_t i = 0; i < 700; i += 3) tokens.set(i, 65);  // one row of a middle bucket, many times
  d_out.uniform(2);
  HostTensor dwte_want(DType::f32, {v, c});
  dwte_want.uniform(3);
  const HostTensor dwte0 = dwte_want;
  ops::embedding_backward({dwte_want.view(), TensorView(), d_out.view(), tokens.view(), 0}, cpu().stream());
  for (uint64_t seed : {0, 1, 9}) {
    emu::set_thread_order_seed(seed);
    HostTensor dwte = dwte0;
    cuda_emu::embedding_backward({dwte.view(), TensorView(), d_out.view(), tokens.view(), 0}, emu());
    INFO("seed " << seed);
    expect_match("d_wte", dwte, dwte_want, 0.0);  // the same sums in the same order
  }
}

}  // namespace
}  // namespace strata::test
