// Reference cases for gelu_* and swiglu_*, for every backend: a double-precision
// reference of the formulas (not of num::gelu / num::silu). Finite differences and
// argument errors: tests/ops/test_activation.cpp.
#include <cmath>

#include "ops/activation_reference.h"
#include "ops.h"
#include "ops/op_table.h"

namespace strata::test {
namespace {

using namespace reference;

// CUDA evaluates tanhf / expf from libm, the CPU its own vectorised exp.
constexpr double kMathSlack = 2.0;

// Shapes are the tensor's own shape.
const std::vector<std::vector<int64_t>> kGeluShapes = {{1}, {3}, {17}, {1000}, {7, 33}, {2, 3, 17}};

STRATA_OP_CASE(reference_case(
    "gelu_forward", kGeluShapes, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      HostTensor inp(dtype, shape), out(dtype, shape);
      inp.uniform(11, -5.0, 5.0);
      ops::gelu_forward({e.at(out), e.at(inp)}, e.stream());
      std::vector<double> ref = inp.values();
      for (double& v : ref) v = gelu(v);
      e.expect("out", out, ref, tolerance_for(dtype));
    },
    kMathSlack));

STRATA_OP_CASE(reference_case(
    "gelu_backward", kGeluShapes, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      HostTensor inp(dtype, shape), d_out(dtype, shape), d_inp(dtype, shape);
      inp.uniform(12, -5.0, 5.0);
      d_out.uniform(13);
      ops::gelu_backward({e.at(d_inp), e.at(d_out), e.at(inp)}, e.stream());
      std::vector<double> x = inp.values(), dy = d_out.values(), ref(x.size());
      for (size_t i = 0; i < x.size(); ++i) ref[i] = dy[i] * gelu_grad(x[i]);
      e.expect("d_inp", d_inp, ref, tolerance_for(dtype));
    },
    kMathSlack));

// Shapes are {N, H}: inp is (N, 2H), out (N, H).
const std::vector<std::vector<int64_t>> kSwigluShapes = {{1, 1}, {3, 17}, {2, 1000}, {17, 3}, {5, 40}};

STRATA_OP_CASE(reference_case(
    "swiglu_forward", kSwigluShapes, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      const int64_t n = shape[0], h = shape[1];
      HostTensor inp(dtype, {n, 2 * h}), out(dtype, {n, h});
      inp.uniform(21, -5.0, 5.0);
      ops::swiglu_forward({e.at(out), e.at(inp)}, e.stream());
      std::vector<double> x = inp.values(), ref(size_t(n * h));
      for (int64_t r = 0; r < n; ++r)
        for (int64_t i = 0; i < h; ++i)
          ref[size_t(r * h + i)] = silu(x[size_t(r * 2 * h + i)]) * x[size_t(r * 2 * h + h + i)];
      e.expect("out", out, ref, tolerance_for(dtype));
    },
    kMathSlack));

STRATA_OP_CASE(reference_case(
    "swiglu_backward", kSwigluShapes, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      const int64_t n = shape[0], h = shape[1];
      HostTensor inp(dtype, {n, 2 * h}), d_inp(dtype, {n, 2 * h}), d_out(dtype, {n, h});
      inp.uniform(22, -5.0, 5.0);
      d_out.uniform(23);
      ops::swiglu_backward({e.at(d_inp), e.at(d_out), e.at(inp)}, e.stream());
      std::vector<double> x = inp.values(), dy = d_out.values(), ref(size_t(2 * n * h));
      for (int64_t r = 0; r < n; ++r)
        for (int64_t i = 0; i < h; ++i) {
          const double g = x[size_t(r * 2 * h + i)], u = x[size_t(r * 2 * h + h + i)];
          const double d = dy[size_t(r * h + i)];
          ref[size_t(r * 2 * h + i)] = d * u * silu_grad(g);
          ref[size_t(r * 2 * h + h + i)] = d * silu(g);
        }
      e.expect("d_inp", d_inp, ref, tolerance_for(dtype));
    },
    kMathSlack));

}  // namespace
}  // namespace strata::test
