// f32 matmul accuracy at a long reduction (K = 14336, Mistral's down projection) in
// each of the three products, against a double-precision reference. Positive
// operands make every partial sum grow with k, so one FMA chain over all of K
// rounds ever larger sums; blocked sums (a chain per K block, added to C) keep every
// chain short, as BLAS libraries do.
#include <catch2/catch.hpp>
#include <cmath>

#include "matmul_reference.h"
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

// m (rows, cols) transposed, row-major.
std::vector<double> transpose(const std::vector<double>& m, int64_t rows, int64_t cols) {
  std::vector<double> t(m.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[size_t(c * rows + r)] = m[size_t(r * cols + c)];
  return t;
}

// Root-mean-square relative error of got against ref, in units of 2^-24.
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
    const std::string pass = s.name;
    HostTensor got(DType::f32, pass == "forward" ? std::vector<int64_t>{s.n, s.oc}
                               : pass == "d_inp" ? std::vector<int64_t>{s.n, s.ic}
                                                 : std::vector<int64_t>{s.oc, s.ic});
    got.fill(0);  // d_weight accumulates
    std::vector<double> ref;  // each pass as matmul_reference's out = x @ w^T
    if (pass == "forward") {
      ops::matmul_forward({got.view(), inp.view(), w.view(), {}}, cpu().stream());
      ref = matmul_reference({{s.n}, s.n, s.ic, s.oc}, inp.values(), w.values(), nullptr);
    } else if (pass == "d_inp") {  // d_out @ w
      ops::matmul_backward({got.view(), {}, {}, d_out.view(), inp.view(), w.view()}, cpu().stream());
      ref = matmul_reference({{s.n}, s.n, s.oc, s.ic}, d_out.values(), transpose(w.values(), s.oc, s.ic), nullptr);
    } else {  // d_out^T @ inp
      ops::matmul_backward({{}, got.view(), {}, d_out.view(), inp.view(), w.view()}, cpu().stream());
      ref = matmul_reference({{s.oc}, s.oc, s.n, s.ic}, transpose(d_out.values(), s.n, s.oc),
                             transpose(inp.values(), s.n, s.ic), nullptr);
    }
    cpu().stream().synchronize();
    const double units = rms_relative_units(got, ref);
    INFO(s.name << ": rms relative error " << units << " x 2^-24 at K = " << kLongK);
    CHECK(units < kBoundUnits);
  }
}

}  // namespace
}  // namespace strata::test
