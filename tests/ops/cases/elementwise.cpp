// Reference cases for add, scale, cast, accumulate and fill_zero, for every backend:
// references computed in double from the dtype-rounded inputs, in place and out of
// place. Argument errors and the bitwise checks of the CPU's vectorised conversions:
// tests/ops/test_elementwise.cpp.
#include <cmath>

#include "ops.h"
#include "ops/op_table.h"

namespace strata::test {
namespace {

// Flat sizes: 1, 3, 17, 1000, non-multiples of 16, and one above the parallel grain
// (65536) so the multi-chunk path runs.
const std::vector<std::vector<int64_t>> kShapes = {{1}, {3}, {17}, {1000}, {3, 17}, {7, 1000}, {66001}};

std::vector<double> plus(const std::vector<double>& x, const std::vector<double>& y) {
  std::vector<double> r(x.size());
  for (size_t i = 0; i < x.size(); ++i) r[i] = x[i] + y[i];
  return r;
}

void run_add(OpEnv& e, DType dt, const std::vector<int64_t>& shape) {
  HostTensor a(dt, shape), b(dt, shape), out(dt, shape);
  a.uniform(1, -3, 3);
  b.uniform(2, -3, 3);
  const std::vector<double> expected = plus(a.values(), b.values());
  ops::add({e.at(out), e.at(a), e.at(b)}, e.stream());
  e.expect("add", out, expected, tolerance_for(dt));

  HostTensor a2 = a;  // out aliasing a, then out aliasing b
  ops::add({e.at(a2), e.at(a2), e.at(b)}, e.stream());
  e.expect("add (out = a)", a2, expected, tolerance_for(dt));
  HostTensor b2 = b;
  ops::add({e.at(b2), e.at(a), e.at(b2)}, e.stream());
  e.expect("add (out = b)", b2, expected, tolerance_for(dt));
}

void run_scale(OpEnv& e, DType dt, const std::vector<int64_t>& shape) {
  HostTensor inp(dt, shape), out(dt, shape);
  inp.uniform(3, -5, 5);
  const float alpha = -0.37f;
  std::vector<double> expected = inp.values();
  for (double& v : expected) v *= double(alpha);
  ops::scale({e.at(out), e.at(inp), alpha}, e.stream());
  e.expect("scale", out, expected, tolerance_for(dt));
  ops::scale({e.at(inp), e.at(inp), alpha}, e.stream());
  e.expect("scale (out = inp)", inp, expected, tolerance_for(dt));
}

// Casting into dt from every dtype: the result is the input value rounded to dt.
void run_cast(OpEnv& e, DType dt, const std::vector<int64_t>& shape) {
  for (DType from : kAllFloat) {
    HostTensor inp(from, shape), out(dt, shape);
    inp.uniform(4, -70000, 70000);  // crosses the f16 range: some become Inf
    inp.set(inp.numel() / 2, std::nan(""));
    ops::cast({e.at(out), e.at(inp)}, e.stream());
    std::vector<double> expected = inp.values();
    for (double& v : expected)  // f16's largest finite is 65504; from 65520 on, rounding overflows
      if (dt == DType::f16 && std::fabs(v) >= 65520) v = std::copysign(INFINITY, v);
    e.expect(std::string("cast from ") + dtype_name(from), out, expected, tolerance_for(dt));
  }
}

// Accumulating into dt: out is f32 with any input dtype, or out has the input's dtype.
void run_accumulate(OpEnv& e, DType dt, const std::vector<int64_t>& shape) {
  std::vector<DType> inputs = dt == DType::f32 ? kAllFloat : std::vector<DType>{dt};
  for (DType from : inputs) {
    HostTensor out(dt, shape), inp(from, shape);
    out.uniform(5, -2, 2);
    inp.uniform(6, -2, 2);
    const std::vector<double> expected = plus(out.values(), inp.values());
    ops::accumulate({e.at(out), e.at(inp)}, e.stream());
    e.expect(std::string("accumulate ") + dtype_name(from), out, expected, tolerance_for(dt));
  }
}

void run_fill_zero(OpEnv& e, DType dt, const std::vector<int64_t>& shape) {
  HostTensor out(dt, shape);
  out.uniform(7, 1, 2);
  ops::fill_zero(e.at(out), e.stream());
  e.expect("fill_zero", out, std::vector<double>(size_t(out.numel()), 0.0), {0, 0});
  HostTensor counts(DType::i32, shape);
  counts.fill(-1);
  ops::fill_zero(e.at(counts), e.stream());
  e.expect("fill_zero i32", counts, std::vector<double>(size_t(out.numel()), 0.0), {0, 0});
}

// Each result is one rounding of one operation: every backend gives the CPU's bits.
constexpr double kBitwise = 0.0;

STRATA_OP_CASE(reference_case("add", kShapes, kAllFloat, run_add, kBitwise));
STRATA_OP_CASE(reference_case("scale", kShapes, kAllFloat, run_scale, kBitwise));
STRATA_OP_CASE(reference_case("cast", kShapes, kAllFloat, run_cast, kBitwise));
STRATA_OP_CASE(reference_case("accumulate", kShapes, kAllFloat, run_accumulate, kBitwise));
STRATA_OP_CASE(reference_case("fill_zero", kShapes, kAllFloat, run_fill_zero, kBitwise));

}  // namespace
}  // namespace strata::test
