// f32 matmul accuracy at a long reduction (K = 14336, Mistral's down projection) in
// each of the three products, against a double-precision reference. Positive
// operands make every partial sum grow with k, so the rounding error of one FMA
// chain over all of K grows like sqrt(K) ulps of the result, while sums blocked in
// K (a partial per K block, added to C) grow like sqrt(block) + sqrt(K / block).
#include <catch2/catch.hpp>
#include <cmath>

#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

constexpr int64_t kLongK = 14336;
// Above kGemvRows, a multiple of no tile size: the GEMM tiles with a row tail.
constexpr int64_t kRows = 30, kCols = 70;
// Relative error, root mean square over the outputs, in units of f32's 2^-24. One
// chain over 14336 k measured about 28 here, sums blocked by 512 k about 1.6.
constexpr double kBoundUnits = 8.0;

struct LongK {
  const char* name;
  int64_t n, ic, oc;  // matmul shape; the reduction is kLongK in one of them
};

// Root-mean-square relative error of got (rows, cols) against ref, in units of 2^-24.
double rms_relative_units(const HostTensor& got, const std::vector<double>& ref) {
  double sum = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double e = (got.get(int64_t(i)) - ref[i]) / ref[i];
    sum += e * e;
  }
  return std::sqrt(sum / double(ref.size())) / std::ldexp(1.0, -24);
}

TEST_CASE("f32 matmul keeps its error near blocked summation at K = 14336 in forward, d_inp and d_weight",
          "[matmul][cpu]") {
  for (const LongK& s : {LongK{"forward", kRows, kLongK, kCols}, LongK{"d_inp", kRows, kCols, kLongK},
                         LongK{"d_weight", kLongK, kCols, kRows}}) {
    HostTensor inp(DType::f32, {s.n, s.ic}), w(DType::f32, {s.oc, s.ic}), d_out(DType::f32, {s.n, s.oc});
    inp.uniform(1, 0.0, 1.0), w.uniform(2, 0.0, 1.0), d_out.uniform(3, 0.0, 1.0);
    const std::vector<double> x = inp.values(), wv = w.values(), dy = d_out.values();
    HostTensor got;
    std::vector<double> ref;
    const std::string name = s.name;
    if (name == "forward") {  // out (n, oc) = inp @ w^T, K = ic
      got = HostTensor(DType::f32, {s.n, s.oc});
      ops::matmul_forward({got.view(), inp.view(), w.view(), {}}, cpu().stream());
      for (int64_t r = 0; r < s.n; ++r)
        for (int64_t j = 0; j < s.oc; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < s.ic; ++k) acc += x[size_t(r * s.ic + k)] * wv[size_t(j * s.ic + k)];
          ref.push_back(acc);
        }
    } else if (name == "d_inp") {  // d_inp (n, ic) = d_out @ w, K = oc
      got = HostTensor(DType::f32, {s.n, s.ic});
      ops::matmul_backward({got.view(), {}, {}, d_out.view(), inp.view(), w.view()}, cpu().stream());
      for (int64_t r = 0; r < s.n; ++r)
        for (int64_t j = 0; j < s.ic; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < s.oc; ++k) acc += dy[size_t(r * s.oc + k)] * wv[size_t(k * s.ic + j)];
          ref.push_back(acc);
        }
    } else {  // d_weight (oc, ic) += d_out^T @ inp from 0, K = n
      got = HostTensor(DType::f32, {s.oc, s.ic});
      got.fill(0);
      ops::matmul_backward({{}, got.view(), {}, d_out.view(), inp.view(), w.view()}, cpu().stream());
      for (int64_t o = 0; o < s.oc; ++o)
        for (int64_t j = 0; j < s.ic; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < s.n; ++k) acc += dy[size_t(k * s.oc + o)] * x[size_t(k * s.ic + j)];
          ref.push_back(acc);
        }
    }
    cpu().stream().synchronize();
    const double units = rms_relative_units(got, ref);
    INFO(s.name << ": rms relative error " << units << " x 2^-24 at K = " << kLongK);
    CHECK(units < kBoundUnits);
  }
}

}  // namespace
}  // namespace strata::test
