// Test support: host-owned tensors that hand out TensorViews, deterministic random
// fills, and comparison against double-precision references.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "strata/device.h"
#include "strata/tensor.h"

namespace strata::test {

// The CPU device every test uses.
Device& cpu();

class HostTensor {
 public:
  HostTensor() = default;
  HostTensor(DType dtype, std::vector<int64_t> shape);

  TensorView view() const;  // device = cpu()
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t numel() const { return numel_; }

  // Element i as double (after rounding to the storage dtype) / set element i.
  double get(int64_t i) const;
  void set(int64_t i, double value);
  std::vector<double> values() const;
  void set_values(const std::vector<double>& values);

  // Uniform in [lo, hi), rounded to dtype; deterministic in seed.
  HostTensor& uniform(uint64_t seed, double lo = -1.0, double hi = 1.0);
  HostTensor& fill(double value);
  // Integer tokens in [0, vocab) (dtype i32).
  HostTensor& tokens(uint64_t seed, int32_t vocab);

 private:
  DType dtype_ = DType::f32;
  std::vector<int64_t> shape_;
  int64_t numel_ = 0;
  std::vector<uint64_t> storage_;  // 8-byte aligned backing store
};

// Relative-to-scale tolerance for results stored in dtype: |a - e| <= atol + rtol |e|.
struct Tolerance {
  double atol;
  double rtol;
};
Tolerance tolerance_for(DType dtype);

// Checks every element of `actual` against `expected` (Catch2 assertions); the
// failure message names `what`, the index, both values and the max error.
void expect_close(const std::string& what, const std::vector<double>& actual,
                  const std::vector<double>& expected, Tolerance tol);
void expect_close(const std::string& what, const HostTensor& actual,
                  const std::vector<double>& expected, Tolerance tol);

// Finite-difference check of d loss / d x at every element (or `samples` of them,
// evenly spread, when > 0): central differences with step eps on x's storage,
// compared with `analytic`. `loss` recomputes the scalar loss from x's current
// contents in double.
void expect_gradient(const std::string& what, HostTensor& x, const std::function<double()>& loss,
                     const std::vector<double>& analytic, double eps = 1e-3, double tol = 2e-2,
                     int64_t samples = 0);

// Dot product of a tensor's values with weights, in double: the scalar test loss
// L = sum(out * w) whose gradient w.r.t. out is w.
double dot(const HostTensor& t, const std::vector<double>& w);

// Shapes used across the op table: 1, 3, 17 and 1000 appear, plus sizes that are
// not multiples of the SIMD width.
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace strata::test
