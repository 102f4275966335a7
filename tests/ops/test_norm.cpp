// Op-table cases for norm_forward / norm_backward (LayerNorm and RMSNorm): a
// double-precision reference, finite differences, argument errors, and
// thread-count independence of the parameter-gradient sums.
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

}  // namespace

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
