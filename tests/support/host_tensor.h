// Test support: host-owned tensors that hand out TensorViews, deterministic random
// fills, and comparison against double-precision references.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "strata/device.h"
#include "strata/gradcheck.h"
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

// Tolerance for results stored in a dtype:
//   |a - e| <= atol + rtol |e| + ulps * ulp(max |e| over the tensor, in ulp_dtype)
// bf16 uses the last term alone: a few ulps of the output's magnitude, so a small
// output is held to its own scale (no absolute floor).
struct Tolerance {
  double atol;
  double rtol;
  double ulps = 0;
  DType ulp_dtype = DType::f32;
};
// One ulp of magnitude m in dtype (the spacing of the binade holding m).
double ulp_at(double magnitude, DType dtype);
Tolerance tolerance_for(DType dtype);

// Checks every element of `actual` against `expected` (Catch2 assertions); the
// failure message names `what`, the index, both values and the max error.
void expect_close(const std::string& what, const std::vector<double>& actual,
                  const std::vector<double>& expected, Tolerance tol);
void expect_close(const std::string& what, const HostTensor& actual,
                  const std::vector<double>& expected, Tolerance tol);

// Finite differences against an analytic gradient: the library's metric
// (strata/gradcheck.h), so the op tests and check_unit_gradients judge alike.
using strata::GradientCheck;
using strata::gradient_check;
// Every element of x (or `samples` of them, evenly spread, when > 0).
GradientCheck gradient_check(HostTensor& x, const std::function<double()>& loss, const std::vector<double>& analytic,
                             double eps = 1e-2, int64_t samples = 0);

// Asserts gradient_check(...).ok(tol), naming `what`, the metric and a bad element.
// The default tol is a few times the differencing noise of an f32 op at eps 1e-2.
void expect_gradient(const std::string& what, HostTensor& x, const std::function<double()>& loss,
                     const std::vector<double>& analytic, double eps = 1e-2, double tol = 2e-3,
                     int64_t samples = 0);

// Equal bit patterns element by element (-0 differs from +0): the failure names `what`,
// how many elements differ and the first, with both values.
void expect_bitwise(const std::string& what, const std::vector<float>& actual, const std::vector<float>& expected);

// The largest |actual - expected| in ulps of the tensor's magnitude: units of one ulp
// of max |expected| in `stored` (f32: 2^-23, bf16: 2^-7, times its power of two).
double ulps_of_magnitude(const std::vector<float>& actual, const std::vector<float>& expected, DType stored);

// Dot product of a tensor's values with weights, in double: the scalar test loss
// L = sum(out * w) whose gradient w.r.t. out is w.
double dot(const HostTensor& t, const std::vector<double>& w);

// Shapes used across the op table: 1, 3, 17 and 1000 appear, plus sizes that are
// not multiples of the SIMD width.
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace strata::test
