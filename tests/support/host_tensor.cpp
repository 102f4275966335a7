#include "host_tensor.h"

#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

#include "common/convert.h"
#include "common/philox.h"

namespace strata::test {

Device& cpu() {
  static std::unique_ptr<Device> device = Device::cpu(0);
  return *device;
}

HostTensor::HostTensor(DType dtype, std::vector<int64_t> shape) : dtype_(dtype), shape_(std::move(shape)) {
  numel_ = 1;
  for (int64_t d : shape_) numel_ *= d;
  storage_.assign((size_t(numel_) * dtype_size(dtype_) + 7) / 8 + 1, 0);
}

TensorView HostTensor::view() const {
  TensorView v;
  v.data = const_cast<uint64_t*>(storage_.data());
  v.dtype = dtype_;
  v.ndim = int(shape_.size());
  for (size_t i = 0; i < shape_.size(); ++i) v.shape[i] = shape_[i];
  v.device = &cpu();
  return v;
}

double HostTensor::get(int64_t i) const {
  const void* p = storage_.data();
  switch (dtype_) {
    case DType::f32: return static_cast<const float*>(p)[i];
    case DType::bf16: return num::bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::f16: return num::f16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::i32: return static_cast<const int32_t*>(p)[i];
  }
  return 0;
}

void HostTensor::set(int64_t i, double value) {
  void* p = storage_.data();
  switch (dtype_) {
    case DType::f32: static_cast<float*>(p)[i] = float(value); break;
    case DType::bf16: static_cast<uint16_t*>(p)[i] = num::float_to_bf16(float(value)); break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = num::float_to_f16(float(value)); break;
    case DType::i32: static_cast<int32_t*>(p)[i] = int32_t(value); break;
  }
}

std::vector<double> HostTensor::values() const {
  std::vector<double> v(static_cast<size_t>(numel_));
  for (int64_t i = 0; i < numel_; ++i) v[size_t(i)] = get(i);
  return v;
}

void HostTensor::set_values(const std::vector<double>& values) {
  REQUIRE(int64_t(values.size()) == numel_);
  for (int64_t i = 0; i < numel_; ++i) set(i, values[size_t(i)]);
}

HostTensor& HostTensor::uniform(uint64_t seed, double lo, double hi) {
  num::RandomKey key{seed, 0x7e57u, 0};
  for (int64_t i = 0; i < numel_; ++i) set(i, lo + (hi - lo) * num::philox_uniform(key, uint64_t(i)));
  return *this;
}

HostTensor& HostTensor::fill(double value) {
  for (int64_t i = 0; i < numel_; ++i) set(i, value);
  return *this;
}

HostTensor& HostTensor::tokens(uint64_t seed, int32_t vocab) {
  num::RandomKey key{seed, 0x70c5u, 0};
  for (int64_t i = 0; i < numel_; ++i) set(i, double(num::philox_word(key, uint64_t(i)) % uint32_t(vocab)));
  return *this;
}

double ulp_at(double magnitude, DType dtype) {
  if (magnitude == 0) return 0;
  int exp = 0;
  std::frexp(magnitude, &exp);  // magnitude in [2^(exp-1), 2^exp)
  const int mantissa = dtype == DType::bf16 ? 7 : dtype == DType::f16 ? 10 : 23;
  return std::ldexp(1.0, exp - 1 - mantissa);
}

namespace {
// bf16 results against a double reference of the same bf16 inputs: the final rounding
// (half an ulp) plus f32 internals and bf16 intermediates some ops store.
constexpr double kBf16Ulps = 4;
}  // namespace

Tolerance tolerance_for(DType dtype) {
  switch (dtype) {
    case DType::bf16: return {0.0, 0.0, kBf16Ulps, DType::bf16};
    case DType::f16: return {2e-3, 4e-3};
    default: return {1e-5, 1e-4};
  }
}

void expect_close(const std::string& what, const std::vector<double>& actual,
                  const std::vector<double>& expected, Tolerance tol) {
  REQUIRE(actual.size() == expected.size());
  size_t bad = 0, first_bad = 0;
  double max_err = 0, magnitude = 0;
  for (double e : expected)
    if (std::isfinite(e)) magnitude = std::max(magnitude, std::fabs(e));
  const double ulp = ulp_at(magnitude, tol.ulp_dtype);
  for (size_t i = 0; i < actual.size(); ++i) {
    double err = std::fabs(actual[i] - expected[i]);
    bool ok = err <= tol.atol + tol.rtol * std::fabs(expected[i]) + tol.ulps * ulp ||
              (std::isnan(actual[i]) && std::isnan(expected[i])) ||
              (std::isinf(expected[i]) && actual[i] == expected[i]);
    if (!ok) {
      if (!bad) first_bad = i;
      ++bad;
    }
    if (std::isfinite(err)) max_err = std::max(max_err, err);
  }
  if (bad) {
    std::ostringstream s;
    s << what << ": " << bad << " of " << actual.size() << " elements out of tolerance (atol "
      << tol.atol << ", rtol " << tol.rtol << ", " << tol.ulps << " ulps of the magnitude " << magnitude
      << "); first at " << first_bad << ": got " << actual[first_bad] << ", expected " << expected[first_bad]
      << "; max error " << max_err;
    if (ulp > 0) s << " (" << max_err / ulp << " ulps of the magnitude)";
    FAIL(s.str());
  }
  SUCCEED();
}

void expect_close(const std::string& what, const HostTensor& actual,
                  const std::vector<double>& expected, Tolerance tol) {
  expect_close(what, actual.values(), expected, tol);
}

GradientCheck gradient_check(HostTensor& x, const std::function<double()>& loss, const std::vector<double>& analytic,
                             double eps, int64_t samples) {
  REQUIRE(int64_t(analytic.size()) == x.numel());
  const int64_t n = x.numel();
  const int64_t count = samples > 0 ? std::min(samples, n) : n;
  std::vector<int64_t> elements;
  for (int64_t k = 0; k < count; ++k) elements.push_back(count == n ? k : k * n / count);
  return gradient_check(
      elements, [&](int64_t i) { return x.get(i); }, [&](int64_t i, double v) { x.set(i, v); }, loss, analytic, eps);
}

void expect_gradient(const std::string& what, HostTensor& x, const std::function<double()>& loss,
                     const std::vector<double>& analytic, double eps, double tol, int64_t samples) {
  const GradientCheck c = gradient_check(x, loss, analytic, eps, samples);
  std::ostringstream s;
  s << what << ": ||g - g_fd|| / ||g_fd|| = " << c.rel_error << " (tolerance " << tol << ") over " << c.checked
    << " elements, eps " << eps;
  if (c.bad_signs)
    s << "; " << c.bad_signs << " of the " << c.largest << " largest components zero or of the wrong sign, first "
      << c.first_bad << ": analytic " << c.first_analytic << ", finite difference " << c.first_numeric;
  INFO(s.str());
  CHECK(c.ok(tol));
}

void expect_bitwise(const std::string& what, const std::vector<float>& actual, const std::vector<float>& expected) {
  REQUIRE(actual.size() == expected.size());
  size_t differ = 0, first = 0;
  for (size_t i = 0; i < actual.size(); ++i)
    if (std::memcmp(&actual[i], &expected[i], 4) != 0 && differ++ == 0) first = i;
  if (differ) {
    std::ostringstream s;
    s.precision(9);
    s << what << ": " << differ << " of " << actual.size() << " elements differ in their bits; first at " << first
      << ": " << actual[first] << " vs " << expected[first];
    FAIL_CHECK(s.str());
  }
}

double ulps_of_magnitude(const std::vector<float>& actual, const std::vector<float>& expected, DType stored) {
  REQUIRE(actual.size() == expected.size());
  double scale = 0, worst = 0;
  for (float e : expected) scale = std::max(scale, std::fabs(double(e)));
  for (size_t i = 0; i < actual.size(); ++i) worst = std::max(worst, std::fabs(double(actual[i]) - expected[i]));
  if (worst == 0) return 0;
  if (scale == 0 || !std::isfinite(worst)) return INFINITY;
  return worst / ulp_at(scale, stored);
}

double dot(const HostTensor& t, const std::vector<double>& w) {
  REQUIRE(int64_t(w.size()) == t.numel());
  double s = 0;
  for (int64_t i = 0; i < t.numel(); ++i) s += t.get(i) * w[size_t(i)];
  return s;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

}  // namespace strata::test
