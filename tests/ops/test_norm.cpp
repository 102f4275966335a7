// CPU-only cases for norm_forward / norm_backward (LayerNorm and RMSNorm) and the
// residual-fused residual_norm_forward / residual_norm_backward: finite differences,
// argument errors, thread-count independence of the parameter-gradient sums, and the
// fused ops against add + norm. Reference cases for every backend: tests/ops/cases/norm.cpp.
// Shapes are {N, C}; every case runs LayerNorm (with bias) and RMSNorm.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "norm_reference.h"
#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

// Loss L = dot(out, w): analytic gradients from norm_backward with d_out = w.
STRATA_OP_CASE({"norm_backward", CaseKind::gradcheck, {{3, 17}, {2, 5}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  for (bool rms : {false, true}) {
                    INFO((rms ? "RMSNorm" : "LayerNorm"));
                    NormCase k(dtype, dtype, shape[0], shape[1], rms);
                    const std::vector<double> w = k.d_out.values();
                    auto loss = [&] {
                      k.forward();
                      return dot(k.out, w);
                    };
                    k.forward();
                    k.d_weight.fill(0);
                    if (!rms) k.d_bias.fill(0);
                    k.backward();
                    expect_gradient("d_inp", k.inp, loss, k.d_inp.values());
                    expect_gradient("d_weight", k.weight, loss, k.d_weight.values());
                    if (!rms) expect_gradient("d_bias", k.bias, loss, k.d_bias.values());
                  }
                }});

template <class F>
void expect_error(F&& f, const char* op, const char* arg) {
  REQUIRE_THROWS_WITH(f(), Catch::Contains(op) && Catch::Contains(std::string("'") + arg + "'"));
}

STRATA_OP_CASE({"norm_forward", CaseKind::errors, {{4, 8}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const char* op = "norm_forward";
                  NormCase k(DType::bf16, DType::bf16, shape[0], shape[1], false);
                  Stream& s = cpu().stream();
                  auto a = k.forward_args();
                  auto run = [&](auto change, const char* arg) {
                    auto b = a;
                    change(b);
                    expect_error([&] { ops::norm_forward(b, s); }, op, arg);
                  };
                  HostTensor wrong_c(DType::bf16, {shape[1] + 1});
                  HostTensor f32_c(DType::f32, {shape[1]});
                  HostTensor bf16_n(DType::bf16, {shape[0]});
                  HostTensor f32_short(DType::f32, {shape[0] - 1});
                  HostTensor empty(DType::bf16, {0, shape[1]});
                  HostTensor out_t(DType::bf16, {shape[1], shape[0]});
                  run([&](auto& b) { b.inp = TensorView(); }, "inp");
                  run([&](auto& b) { b.inp = empty.view(); }, "inp");
                  run([&](auto& b) { b.out = TensorView(); }, "out");
                  run([&](auto& b) { b.out = out_t.view(); }, "out");
                  run([&](auto& b) { b.weight = wrong_c.view(); }, "weight");
                  run([&](auto& b) { b.weight = f32_c.view(); }, "weight");
                  run([&](auto& b) { b.bias = f32_c.view(); }, "bias");
                  run([&](auto& b) { b.mean = TensorView(); }, "mean");
                  run([&](auto& b) { b.mean = bf16_n.view(); }, "mean");
                  run([&](auto& b) { b.rstd = f32_short.view(); }, "rstd");
                  run([&](auto& b) { b.eps = -1.0f; }, "eps");
                  run([&](auto& b) { b.rms = true; }, "mean");  // RMSNorm takes no mean
                  run([&](auto& b) { b.rms = true, b.mean = TensorView(); }, "bias");
                }});

STRATA_OP_CASE({"norm_backward", CaseKind::errors, {{4, 8}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const char* op = "norm_backward";
                  NormCase k(DType::bf16, DType::f32, shape[0], shape[1], false);
                  Stream& s = cpu().stream();
                  auto a = k.backward_args();
                  auto run = [&](auto change, const char* arg) {
                    auto b = a;
                    change(b);
                    expect_error([&] { ops::norm_backward(b, s); }, op, arg);
                  };
                  HostTensor f16_c(DType::f16, {shape[1]});
                  HostTensor f32_wide(DType::f32, {shape[1] + 1});
                  HostTensor other_rows(DType::bf16, {shape[0] + 1, shape[1]});
                  HostTensor f32_nc(DType::f32, {shape[0], shape[1]});
                  HostTensor f32_short(DType::f32, {shape[0] - 1});
                  run([&](auto& b) { b.d_inp = TensorView(); }, "d_inp");
                  run([&](auto& b) { b.d_inp = f32_nc.view(); }, "d_inp");
                  run([&](auto& b) { b.d_out = other_rows.view(); }, "d_out");
                  run([&](auto& b) { b.d_weight = TensorView(); }, "d_weight");
                  run([&](auto& b) { b.d_weight = f16_c.view(); }, "d_weight");
                  run([&](auto& b) { b.d_bias = f32_wide.view(); }, "d_bias");
                  run([&](auto& b) { b.weight = TensorView(); }, "weight");
                  run([&](auto& b) { b.mean = TensorView(); }, "mean");
                  run([&](auto& b) { b.rstd = f32_short.view(); }, "rstd");
                  run([&](auto& b) { b.rms = true, b.mean = TensorView(); }, "d_bias");
                }});

// L = dot(out, w) + dot(res_out, w2): d_out = w, d_resid = w2, and d_x = d_y = d_res.
STRATA_OP_CASE({"residual_norm_backward", CaseKind::gradcheck, {{3, 17}, {2, 5}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  for (bool rms : {false, true}) {
                    INFO((rms ? "RMSNorm" : "LayerNorm"));
                    ResidualNormCase r(dtype, dtype, shape[0], shape[1], rms);
                    const std::vector<double> w = r.k.d_out.values(), w2 = r.d_resid.values();
                    auto loss = [&] {
                      r.forward();
                      return dot(r.k.out, w) + dot(r.k.inp, w2);
                    };
                    r.forward();
                    r.k.d_weight.fill(0);
                    if (!rms) r.k.d_bias.fill(0);
                    r.backward();
                    expect_gradient("d_x", r.x, loss, r.d_res.values());
                    expect_gradient("d_y", r.y, loss, r.d_res.values());
                    expect_gradient("d_weight", r.k.weight, loss, r.k.d_weight.values());
                    if (!rms) expect_gradient("d_bias", r.k.bias, loss, r.k.d_bias.values());
                  }
                }});

STRATA_OP_CASE({"residual_norm_forward", CaseKind::errors, {{4, 8}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const char* op = "residual_norm_forward";
                  ResidualNormCase r(DType::bf16, DType::bf16, shape[0], shape[1], false);
                  Stream& s = cpu().stream();
                  auto a = r.forward_args();
                  auto run = [&](auto change, const char* arg) {
                    auto b = a;
                    change(b);
                    expect_error([&] { ops::residual_norm_forward(b, s); }, op, arg);
                  };
                  HostTensor f32_nc(DType::f32, {shape[0], shape[1]});
                  HostTensor other_rows(DType::bf16, {shape[0] + 1, shape[1]});
                  HostTensor wrong_c(DType::bf16, {shape[1] + 1});
                  run([&](auto& b) { b.x = TensorView(); }, "x");
                  run([&](auto& b) { b.y = TensorView(); }, "y");
                  run([&](auto& b) { b.y = f32_nc.view(); }, "y");
                  run([&](auto& b) { b.y = other_rows.view(); }, "y");
                  run([&](auto& b) { b.res_out = TensorView(); }, "res_out");
                  run([&](auto& b) { b.res_out = other_rows.view(); }, "res_out");
                  run([&](auto& b) { b.weight = wrong_c.view(); }, "weight");
                  run([&](auto& b) { b.out = b.x; }, "out");  // out must not alias the sum's inputs
                  run([&](auto& b) { b.out = b.res_out; }, "out");
                  // res_out one row into x: a partial overlap, not an in-place alias
                  run([&](auto& b) { b.res_out = TensorView(r.x.view().ptr<uint16_t>() + shape[1], DType::bf16,
                                                             {shape[0] - 1, shape[1]}, &cpu()); },
                      "res_out");
                  run([&](auto& b) { b.rms = true; }, "mean");
                  run([&](auto& b) { b.eps = -1.0f; }, "eps");
                  // in place is allowed: res_out may be x or y
                  auto in_place = a;
                  in_place.res_out = in_place.y;
                  REQUIRE_NOTHROW(ops::residual_norm_forward(in_place, s));
                }});

STRATA_OP_CASE({"residual_norm_backward", CaseKind::errors, {{4, 8}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const char* op = "residual_norm_backward";
                  ResidualNormCase r(DType::bf16, DType::f32, shape[0], shape[1], false);
                  Stream& s = cpu().stream();
                  auto a = r.backward_args();
                  auto run = [&](auto change, const char* arg) {
                    auto b = a;
                    change(b);
                    expect_error([&] { ops::residual_norm_backward(b, s); }, op, arg);
                  };
                  HostTensor f32_nc(DType::f32, {shape[0], shape[1]});
                  HostTensor other_rows(DType::bf16, {shape[0] + 1, shape[1]});
                  HostTensor f16_c(DType::f16, {shape[1]});
                  run([&](auto& b) { b.d_res = TensorView(); }, "d_res");
                  run([&](auto& b) { b.d_res = f32_nc.view(); }, "d_res");
                  run([&](auto& b) { b.d_resid = TensorView(); }, "d_resid");
                  run([&](auto& b) { b.d_resid = other_rows.view(); }, "d_resid");
                  run([&](auto& b) { b.d_resid = f32_nc.view(); }, "d_resid");
                  run([&](auto& b) { b.d_out = other_rows.view(); }, "d_out");
                  run([&](auto& b) { b.d_weight = f16_c.view(); }, "d_weight");
                  run([&](auto& b) { b.d_res = b.d_out; }, "d_res");
                  run([&](auto& b) { b.d_res = b.inp; }, "d_res");
                  run([&](auto& b) { b.rms = true, b.mean = TensorView(); }, "d_bias");
                  auto in_place = a;
                  in_place.d_res = in_place.d_resid;
                  REQUIRE_NOTHROW(ops::residual_norm_backward(in_place, s));
                }});

}  // namespace

// The fused forward normalises the stored sum: bitwise add then norm_forward, so a
// norm replayed from res_out (recompute) matches it. The fused backward is bitwise
// norm_backward then add in f32 (16-bit rounds the sum once instead of twice).
TEST_CASE("residual_norm equals add then norm bitwise", "[ops][cpu]") {
  const DType dt = GENERATE(DType::f32, DType::bf16, DType::f16);
  const bool rms = GENERATE(false, true);
  INFO(dtype_name(dt) << (rms ? " RMSNorm" : " LayerNorm"));
  Stream& s = cpu().stream();
  ResidualNormCase fused(dt, DType::f32, 70, 33, rms), plain(dt, DType::f32, 70, 33, rms);
  fused.forward();
  ops::add({plain.k.inp.view(), plain.x.view(), plain.y.view()}, s);
  plain.k.forward();
  auto same = [](const HostTensor& a, const HostTensor& b) { return a.values() == b.values(); };
  CHECK(same(fused.k.inp, plain.k.inp));
  CHECK(same(fused.k.out, plain.k.out));
  CHECK(same(fused.k.rstd, plain.k.rstd));
  if (!rms) CHECK(same(fused.k.mean, plain.k.mean));

  fused.backward();
  HostTensor d_inp(dt, {70, 33});
  auto nb = plain.k.backward_args();
  nb.d_inp = d_inp.view();
  ops::norm_backward(nb, s);
  ops::add({plain.d_res.view(), plain.d_resid.view(), d_inp.view()}, s);
  CHECK(same(fused.k.d_weight, plain.k.d_weight));
  if (!rms) CHECK(same(fused.k.d_bias, plain.k.d_bias));
  if (dt == DType::f32) CHECK(same(fused.d_res, plain.d_res));
  else expect_close("d_res", fused.d_res, plain.d_res.values(), tolerance_for(dt));

  // In place (res_out = y, d_res = d_resid) gives the same results.
  ResidualNormCase in_place(dt, DType::f32, 70, 33, rms);
  auto fa = in_place.forward_args();
  fa.res_out = fa.y;
  ops::residual_norm_forward(fa, s);
  CHECK(same(in_place.y, fused.k.inp));
  CHECK(same(in_place.k.out, fused.k.out));
  auto ba = in_place.backward_args();
  ba.inp = in_place.y.view();
  ba.d_res = ba.d_resid;
  ops::residual_norm_backward(ba, s);
  CHECK(same(in_place.d_resid, fused.d_res));
}

TEST_CASE("norm_backward parameter gradients do not depend on the thread count", "[ops][cpu]") {
  // 1000 rows are 16 row chunks: with several threads the chunks finish in any order.
  auto grads = [](int threads) {
    set_num_threads(threads);
    NormCase k(DType::f32, DType::f32, 1000, 300, false);
    k.forward();
    k.backward();
    set_num_threads(0);
    return std::make_pair(k.d_weight.values(), k.d_bias.values());
  };
  const auto one = grads(1), many = grads(0);
  CHECK(std::memcmp(one.first.data(), many.first.data(), one.first.size() * sizeof(double)) == 0);
  CHECK(std::memcmp(one.second.data(), many.second.data(), one.second.size() * sizeof(double)) == 0);
}

}  // namespace strata::test
