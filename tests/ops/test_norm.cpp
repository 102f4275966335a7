// Op-table cases for norm_forward / norm_backward (LayerNorm and RMSNorm) and the
// residual-fused residual_norm_forward / residual_norm_backward: a double-precision
// reference, finite differences, argument errors, thread-count independence of the
// parameter-gradient sums, and the fused ops against add + norm.
// Shapes are {N, C}; every case runs LayerNorm (with bias) and RMSNorm.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

constexpr float kEps = 1e-5f;

// The tensors of one norm call, filled with deterministic random values.
struct NormCase {
  int64_t n, c;
  bool rms;
  HostTensor inp, weight, bias, out, mean, rstd;  // bias and mean only for LayerNorm
  HostTensor d_out, d_inp, d_weight, d_bias;

  NormCase(DType dtype, DType grad_dtype, int64_t n_, int64_t c_, bool rms_)
      : n(n_), c(c_), rms(rms_), inp(dtype, {n, c}), weight(dtype, {c}), out(dtype, {n, c}),
        rstd(DType::f32, {n}), d_out(dtype, {n, c}), d_inp(dtype, {n, c}),
        d_weight(grad_dtype, {c}) {
    inp.uniform(1, -1.0, 3.0);  // an offset so centring matters
    weight.uniform(2, 0.5, 1.5);
    d_out.uniform(3);
    d_weight.uniform(4);  // accumulated into: start from non-zero values
    if (!rms) {
      bias = HostTensor(dtype, {c});
      bias.uniform(5);
      mean = HostTensor(DType::f32, {n});
      d_bias = HostTensor(grad_dtype, {c});
      d_bias.uniform(6);
    }
  }

  ops::NormForwardArgs forward_args() const {
    ops::NormForwardArgs a;
    a.out = out.view();
    a.mean = rms ? TensorView() : mean.view();
    a.rstd = rstd.view();
    a.inp = inp.view();
    a.weight = weight.view();
    a.bias = rms ? TensorView() : bias.view();
    a.eps = kEps;
    a.rms = rms;
    return a;
  }

  ops::NormBackwardArgs backward_args() const {
    ops::NormBackwardArgs a;
    a.d_inp = d_inp.view();
    a.d_weight = d_weight.view();
    a.d_bias = rms ? TensorView() : d_bias.view();
    a.d_out = d_out.view();
    a.inp = inp.view();
    a.weight = weight.view();
    a.mean = rms ? TensorView() : mean.view();
    a.rstd = rstd.view();
    a.rms = rms;
    return a;
  }

  void forward() { ops::norm_forward(forward_args(), cpu().stream()); }
  void backward() { ops::norm_backward(backward_args(), cpu().stream()); }
};

// Double-precision LayerNorm / RMSNorm of the (rounded) inputs, and its gradients.
struct NormReference {
  std::vector<double> out, mean, rstd, d_inp, d_weight, d_bias;

  explicit NormReference(const NormCase& k) {
    const int64_t n = k.n, c = k.c;
    std::vector<double> x = k.inp.values(), w = k.weight.values(), dy = k.d_out.values();
    std::vector<double> b = k.rms ? std::vector<double>(size_t(c), 0.0) : k.bias.values();
    out.resize(size_t(n * c));
    d_inp.resize(size_t(n * c));
    d_weight = k.d_weight.values();
    d_bias = k.rms ? std::vector<double>() : k.d_bias.values();
    for (int64_t r = 0; r < n; ++r) {
      const double* xr = &x[size_t(r * c)];
      double m = 0, v = 0;
      if (!k.rms) {
        for (int64_t i = 0; i < c; ++i) m += xr[i];
        m /= double(c);
      }
      for (int64_t i = 0; i < c; ++i) v += (xr[i] - m) * (xr[i] - m);
      const double s = 1.0 / std::sqrt(v / double(c) + double(kEps));
      mean.push_back(m);
      rstd.push_back(s);
      // d xhat = dy * w; LayerNorm subtracts its mean and its projection on xhat.
      double sum_g = 0, sum_gx = 0;
      for (int64_t i = 0; i < c; ++i) {
        const double xhat = (xr[i] - m) * s, g = dy[size_t(r * c + i)] * w[size_t(i)];
        out[size_t(r * c + i)] = xhat * w[size_t(i)] + b[size_t(i)];
        sum_g += g;
        sum_gx += g * xhat;
        d_weight[size_t(i)] += dy[size_t(r * c + i)] * xhat;
        if (!k.rms) d_bias[size_t(i)] += dy[size_t(r * c + i)];
      }
      if (k.rms) sum_g = 0;
      for (int64_t i = 0; i < c; ++i) {
        const double xhat = (xr[i] - m) * s, g = dy[size_t(r * c + i)] * w[size_t(i)];
        d_inp[size_t(r * c + i)] = s * (g - sum_g / double(c) - xhat * sum_gx / double(c));
      }
    }
  }
};

const std::vector<std::vector<int64_t>> kShapes = {{1, 1}, {3, 17}, {2, 1000}, {17, 3}, {130, 33}};

STRATA_OP_CASE({"norm_forward", CaseKind::reference, kShapes, kAllFloat,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  for (bool rms : {false, true}) {
                    INFO((rms ? "RMSNorm" : "LayerNorm"));
                    NormCase k(dtype, dtype, shape[0], shape[1], rms);
                    k.forward();
                    NormReference ref(k);
                    expect_close("out", k.out, ref.out, tolerance_for(dtype));
                    expect_close("rstd", k.rstd, ref.rstd, tolerance_for(DType::f32));
                    if (!rms) expect_close("mean", k.mean, ref.mean, tolerance_for(DType::f32));
                  }
                }});

STRATA_OP_CASE({"norm_backward", CaseKind::reference, kShapes, kAllFloat,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  for (bool rms : {false, true}) {
                    for (DType grad_dtype : {dtype, DType::f32}) {
                      INFO((rms ? "RMSNorm" : "LayerNorm") << ", grads " << dtype_name(grad_dtype));
                      NormCase k(dtype, grad_dtype, shape[0], shape[1], rms);
                      k.forward();
                      NormReference ref(k);
                      k.backward();
                      expect_close("d_inp", k.d_inp, ref.d_inp, tolerance_for(dtype));
                      expect_close("d_weight", k.d_weight, ref.d_weight, tolerance_for(grad_dtype));
                      if (!rms) expect_close("d_bias", k.d_bias, ref.d_bias, tolerance_for(grad_dtype));
                      if (grad_dtype == dtype) break;  // f32 params: one grad dtype
                    }
                  }
                }});

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

// ---------------------------------------------------------------- residual + norm
// The norm's tensors are a NormCase whose inp is res_out = x + y, so NormReference
// of it is the reference of the norm of the sum as stored.
struct ResidualNormCase {
  NormCase k;
  HostTensor x, y, d_resid, d_res;

  ResidualNormCase(DType dtype, DType grad_dtype, int64_t n, int64_t c, bool rms)
      : k(dtype, grad_dtype, n, c, rms), x(dtype, {n, c}), y(dtype, {n, c}), d_resid(dtype, {n, c}),
        d_res(dtype, {n, c}) {
    x.uniform(7, -1.0, 3.0);
    y.uniform(8, -0.5, 0.5);
    d_resid.uniform(9);
    k.inp.fill(-7.0);  // res_out is assigned
  }

  ops::ResidualNormForwardArgs forward_args() const {
    const ops::NormForwardArgs n = k.forward_args();
    return {k.inp.view(), n.out, n.mean, n.rstd, x.view(), y.view(), n.weight, n.bias, n.eps, n.rms};
  }

  ops::ResidualNormBackwardArgs backward_args() const {
    const ops::NormBackwardArgs n = k.backward_args();
    return {d_res.view(), n.d_weight, n.d_bias, d_resid.view(), n.d_out, n.inp, n.weight, n.mean, n.rstd, n.rms};
  }

  void forward() { ops::residual_norm_forward(forward_args(), cpu().stream()); }
  void backward() { ops::residual_norm_backward(backward_args(), cpu().stream()); }
};

std::vector<double> sum(const HostTensor& a, const std::vector<double>& b) {
  std::vector<double> v = a.values();
  for (size_t i = 0; i < v.size(); ++i) v[i] += b[i];
  return v;
}

STRATA_OP_CASE({"residual_norm_forward", CaseKind::reference, kShapes, kAllFloat,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  for (bool rms : {false, true}) {
                    INFO((rms ? "RMSNorm" : "LayerNorm"));
                    ResidualNormCase r(dtype, dtype, shape[0], shape[1], rms);
                    r.forward();
                    expect_close("res_out", r.k.inp, sum(r.x, r.y.values()), tolerance_for(dtype));
                    NormReference ref(r.k);  // of res_out as stored
                    expect_close("out", r.k.out, ref.out, tolerance_for(dtype));
                    expect_close("rstd", r.k.rstd, ref.rstd, tolerance_for(DType::f32));
                    if (!rms) expect_close("mean", r.k.mean, ref.mean, tolerance_for(DType::f32));
                  }
                }});

STRATA_OP_CASE({"residual_norm_backward", CaseKind::reference, kShapes, kAllFloat,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  for (bool rms : {false, true}) {
                    for (DType grad_dtype : {dtype, DType::f32}) {
                      INFO((rms ? "RMSNorm" : "LayerNorm") << ", grads " << dtype_name(grad_dtype));
                      ResidualNormCase r(dtype, grad_dtype, shape[0], shape[1], rms);
                      r.forward();
                      NormReference ref(r.k);
                      r.backward();
                      expect_close("d_res", r.d_res, sum(r.d_resid, ref.d_inp), tolerance_for(dtype));
                      expect_close("d_weight", r.k.d_weight, ref.d_weight, tolerance_for(grad_dtype));
                      if (!rms) expect_close("d_bias", r.k.d_bias, ref.d_bias, tolerance_for(grad_dtype));
                      if (grad_dtype == dtype) break;
                    }
                  }
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
