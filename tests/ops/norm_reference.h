// LayerNorm / RMSNorm cases shared by the reference cases for every backend
// (tests/ops/cases/norm.cpp) and the CPU-only tests (tests/ops/test_norm.cpp): the
// tensors of one norm_* / residual_norm_* call and a double-precision reference.
// Invariant: the reference reads the inputs as stored (dtype-rounded), and d_weight /
// d_bias start non-zero because the op accumulates into them.
#pragma once
#include <cmath>
#include <functional>
#include <vector>

#include "ops.h"
#include "ops/op_table.h"
#include "support/host_tensor.h"

namespace strata::test {

// How a case's tensors become op arguments: in place on the CPU, or OpEnv::at.
using At = std::function<TensorView(HostTensor&)>;
inline TensorView host_view(HostTensor& h) { return h.view(); }
inline At env_view(OpEnv& e) {
  return [&e](HostTensor& h) { return e.at(h); };
}

inline constexpr float kNormEps = 1e-5f;

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

  ops::NormForwardArgs forward_args(const At& at = host_view) {
    ops::NormForwardArgs a;
    a.out = at(out);
    a.mean = rms ? TensorView() : at(mean);
    a.rstd = at(rstd);
    a.inp = at(inp);
    a.weight = at(weight);
    a.bias = rms ? TensorView() : at(bias);
    a.eps = kNormEps;
    a.rms = rms;
    return a;
  }

  ops::NormBackwardArgs backward_args(const At& at = host_view) {
    ops::NormBackwardArgs a;
    a.d_inp = at(d_inp);
    a.d_weight = at(d_weight);
    a.d_bias = rms ? TensorView() : at(d_bias);
    a.d_out = at(d_out);
    a.inp = at(inp);
    a.weight = at(weight);
    a.mean = rms ? TensorView() : at(mean);
    a.rstd = at(rstd);
    a.rms = rms;
    return a;
  }

  void forward() { ops::norm_forward(forward_args(), cpu().stream()); }
  void backward() { ops::norm_backward(backward_args(), cpu().stream()); }
  void forward(OpEnv& e) { ops::norm_forward(forward_args(env_view(e)), e.stream()); }
  void backward(OpEnv& e) { ops::norm_backward(backward_args(env_view(e)), e.stream()); }
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
      const double s = 1.0 / std::sqrt(v / double(c) + double(kNormEps));
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

  ops::ResidualNormForwardArgs forward_args(const At& at = host_view) {
    const ops::NormForwardArgs n = k.forward_args(at);
    return {at(k.inp), n.out, n.mean, n.rstd, at(x), at(y), n.weight, n.bias, n.eps, n.rms};
  }

  ops::ResidualNormBackwardArgs backward_args(const At& at = host_view) {
    const ops::NormBackwardArgs n = k.backward_args(at);
    return {at(d_res), n.d_weight, n.d_bias, at(d_resid), n.d_out, n.inp, n.weight, n.mean, n.rstd, n.rms};
  }

  void forward() { ops::residual_norm_forward(forward_args(), cpu().stream()); }
  void backward() { ops::residual_norm_backward(backward_args(), cpu().stream()); }
};

inline std::vector<double> elementwise_sum(const HostTensor& a, const std::vector<double>& b) {
  std::vector<double> v = a.values();
  for (size_t i = 0; i < v.size(); ++i) v[i] += b[i];
  return v;
}

}  // namespace strata::test
