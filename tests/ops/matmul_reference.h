// matmul operands and the double-precision forward, shared by the reference cases for
// every backend (tests/ops/cases/matmul.cpp) and the CPU-only tests
// (tests/ops/test_matmul.cpp). Shapes are {N, IC, OC}, or {B, T, IC, OC}: leading
// dimensions flatten into rows. Invariant: the reference reads the inputs as stored.
#pragma once
#include <cmath>
#include <vector>

#include "support/host_tensor.h"

namespace strata::test {

struct MatmulDims {
  std::vector<int64_t> rows_shape;  // leading dims of inp / out
  int64_t n, ic, oc;
};

inline MatmulDims matmul_dims(const std::vector<int64_t>& shape) {
  MatmulDims d;
  d.rows_shape.assign(shape.begin(), shape.end() - 2);
  d.ic = shape[shape.size() - 2];
  d.oc = shape.back();
  d.n = 1;
  for (int64_t r : d.rows_shape) d.n *= r;
  return d;
}

inline std::vector<int64_t> with_last(std::vector<int64_t> rows, int64_t last) {
  rows.push_back(last);
  return rows;
}

// Inputs of one matmul: weights scaled like a real init so outputs stay O(1).
struct MatmulOperands {
  HostTensor inp, weight, bias;
  MatmulOperands(DType dtype, const MatmulDims& d, uint64_t seed)
      : inp(dtype, with_last(d.rows_shape, d.ic)), weight(dtype, {d.oc, d.ic}), bias(dtype, {d.oc}) {
    const double s = 1.0 / std::sqrt(double(d.ic));
    inp.uniform(seed);
    weight.uniform(seed + 1, -s, s);
    bias.uniform(seed + 2);
  }
};

// out[n, o] = sum_i inp[n, i] w[o, i] (+ bias[o]), in double.
inline std::vector<double> matmul_reference(const MatmulDims& d, const std::vector<double>& x,
                                            const std::vector<double>& w, const std::vector<double>* bias) {
  std::vector<double> out(size_t(d.n * d.oc));
  for (int64_t n = 0; n < d.n; ++n)
    for (int64_t o = 0; o < d.oc; ++o) {
      double acc = bias ? (*bias)[size_t(o)] : 0.0;
      for (int64_t i = 0; i < d.ic; ++i) acc += x[size_t(n * d.ic + i)] * w[size_t(o * d.ic + i)];
      out[size_t(n * d.oc + o)] = acc;
    }
  return out;
}

}  // namespace strata::test
