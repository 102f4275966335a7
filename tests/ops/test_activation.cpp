// Op-table cases for gelu_* and swiglu_* that run on the CPU only: finite
// differences and argument errors (the reference cases, for every backend, are in
// cases/activation.cpp), and the CPU kernels' accuracy on a dense grid.
#include <catch2/catch.hpp>
#include <cmath>

#include "activation_reference.h"
#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

using namespace reference;

template <class F>
void expect_error(F&& f, const char* op, const char* arg) {
  REQUIRE_THROWS_WITH(f(), Catch::Contains(op) && Catch::Contains(std::string("'") + arg + "'"));
}

// ---------------------------------------------------------------- GELU

STRATA_OP_CASE({"gelu_backward", CaseKind::gradcheck, {{37}, {3, 17}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  HostTensor inp(dtype, shape), out(dtype, shape), w(dtype, shape), d_inp(dtype, shape);
                  inp.uniform(14, -4.0, 4.0);
                  w.uniform(15);
                  auto loss = [&] {
                    ops::gelu_forward({out.view(), inp.view()}, cpu().stream());
                    return dot(out, w.values());
                  };
                  ops::gelu_backward({d_inp.view(), w.view(), inp.view()}, cpu().stream());
                  expect_gradient("d_inp", inp, loss, d_inp.values());
                }});

STRATA_OP_CASE({"gelu_forward", CaseKind::errors, {{4, 8}}, kF32,
                [](DType, const std::vector<int64_t>& shape) {
                  HostTensor inp(DType::f16, shape), out(DType::f16, shape), other(DType::f16, {4, 9});
                  HostTensor f32(DType::f32, shape), ints(DType::i32, shape), empty(DType::f16, {0});
                  Stream& s = cpu().stream();
                  const char* op = "gelu_forward";
                  expect_error([&] { ops::gelu_forward({TensorView(), inp.view()}, s); }, op, "out");
                  expect_error([&] { ops::gelu_forward({out.view(), TensorView()}, s); }, op, "inp");
                  expect_error([&] { ops::gelu_forward({out.view(), empty.view()}, s); }, op, "inp");
                  expect_error([&] { ops::gelu_forward({ints.view(), ints.view()}, s); }, op, "inp");
                  expect_error([&] { ops::gelu_forward({other.view(), inp.view()}, s); }, op, "out");
                  expect_error([&] { ops::gelu_forward({f32.view(), inp.view()}, s); }, op, "out");
                }});

STRATA_OP_CASE({"gelu_backward", CaseKind::errors, {{4, 8}}, kF32,
                [](DType, const std::vector<int64_t>& shape) {
                  HostTensor inp(DType::bf16, shape), g(DType::bf16, shape), other(DType::bf16, {8, 4});
                  HostTensor f32(DType::f32, shape);
                  Stream& s = cpu().stream();
                  const char* op = "gelu_backward";
                  expect_error([&] { ops::gelu_backward({TensorView(), g.view(), inp.view()}, s); }, op, "d_inp");
                  expect_error([&] { ops::gelu_backward({g.view(), TensorView(), inp.view()}, s); }, op, "d_out");
                  expect_error([&] { ops::gelu_backward({g.view(), g.view(), TensorView()}, s); }, op, "inp");
                  expect_error([&] { ops::gelu_backward({g.view(), other.view(), inp.view()}, s); }, op, "d_out");
                  expect_error([&] { ops::gelu_backward({f32.view(), g.view(), inp.view()}, s); }, op, "d_inp");
                }});

// ---------------------------------------------------------------- SwiGLU
STRATA_OP_CASE({"swiglu_backward", CaseKind::gradcheck, {{3, 17}, {1, 5}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const int64_t n = shape[0], h = shape[1];
                  HostTensor inp(dtype, {n, 2 * h}), d_inp(dtype, {n, 2 * h});
                  HostTensor out(dtype, {n, h}), w(dtype, {n, h});
                  inp.uniform(24, -4.0, 4.0);
                  w.uniform(25);
                  auto loss = [&] {
                    ops::swiglu_forward({out.view(), inp.view()}, cpu().stream());
                    return dot(out, w.values());
                  };
                  ops::swiglu_backward({d_inp.view(), w.view(), inp.view()}, cpu().stream());
                  expect_gradient("d_inp", inp, loss, d_inp.values());
                }});

STRATA_OP_CASE({"swiglu_forward", CaseKind::errors, {{4, 8}}, kF32,
                [](DType, const std::vector<int64_t>& shape) {
                  const int64_t n = shape[0], h = shape[1];
                  HostTensor inp(DType::f32, {n, 2 * h}), out(DType::f32, {n, h});
                  HostTensor odd(DType::f32, {n, 2 * h + 1}), wide(DType::f32, {n, 2 * h});
                  HostTensor rows(DType::f32, {n + 1, h}), bf(DType::bf16, {n, h});
                  Stream& s = cpu().stream();
                  const char* op = "swiglu_forward";
                  expect_error([&] { ops::swiglu_forward({TensorView(), inp.view()}, s); }, op, "out");
                  expect_error([&] { ops::swiglu_forward({out.view(), TensorView()}, s); }, op, "inp");
                  expect_error([&] { ops::swiglu_forward({out.view(), odd.view()}, s); }, op, "inp");
                  expect_error([&] { ops::swiglu_forward({wide.view(), inp.view()}, s); }, op, "out");
                  expect_error([&] { ops::swiglu_forward({rows.view(), inp.view()}, s); }, op, "out");
                  expect_error([&] { ops::swiglu_forward({bf.view(), inp.view()}, s); }, op, "out");
                }});

STRATA_OP_CASE({"swiglu_backward", CaseKind::errors, {{4, 8}}, kF32,
                [](DType, const std::vector<int64_t>& shape) {
                  const int64_t n = shape[0], h = shape[1];
                  HostTensor inp(DType::f32, {n, 2 * h}), d_inp(DType::f32, {n, 2 * h});
                  HostTensor d_out(DType::f32, {n, h}), narrow(DType::f32, {n, h}), empty(DType::f32, {n, 0});
                  Stream& s = cpu().stream();
                  const char* op = "swiglu_backward";
                  expect_error([&] { ops::swiglu_backward({TensorView(), d_out.view(), inp.view()}, s); }, op, "d_inp");
                  expect_error([&] { ops::swiglu_backward({d_inp.view(), TensorView(), inp.view()}, s); }, op, "d_out");
                  expect_error([&] { ops::swiglu_backward({narrow.view(), d_out.view(), inp.view()}, s); }, op, "d_inp");
                  expect_error([&] { ops::swiglu_backward({d_inp.view(), inp.view(), inp.view()}, s); }, op, "d_out");
                  expect_error([&] { ops::swiglu_backward({d_inp.view(), d_out.view(), empty.view()}, s); }, op, "inp");
                }});

// Max |got - want| over the f32 grid, and max relative error where |want| >= floor.
struct Errors {
  double abs = 0, rel = 0;
  void add(double got, double want, double floor) {
    abs = std::max(abs, std::fabs(got - want));
    if (std::fabs(want) >= floor) rel = std::max(rel, std::fabs(got - want) / std::fabs(want));
  }
};

}  // namespace

// The CPU kernels evaluate the activations through their own vectorised exp: hold
// them to f32 accuracy on a dense grid (the bounds are ~2x the measured errors).
TEST_CASE("activations are accurate to f32 rounding on a dense grid", "[ops][cpu]") {
  const int64_t n = 1 << 20;
  HostTensor x(DType::f32, {n, 2}), ones(DType::f32, {n, 2}), out(DType::f32, {n, 2});
  HostTensor half(DType::f32, {n, 1}), g(DType::f32, {n, 2});
  for (int64_t i = 0; i < 2 * n; ++i) x.set(i, -20.0 + 40.0 * double(i) / double(2 * n));
  ones.fill(1.0);
  half.fill(1.0);
  Stream& s = cpu().stream();
  ops::gelu_forward({out.view(), x.view()}, s);
  ops::gelu_backward({g.view(), ones.view(), x.view()}, s);
  Errors ge, gge;
  for (int64_t i = 0; i < 2 * n; ++i) {
    const double v = x.get(i);
    ge.add(out.get(i), gelu(v), v >= -3.0 ? 1e-30 : 1e30);
    gge.add(g.get(i), gelu_grad(v), 1e30);
  }
  CHECK(ge.abs < 2e-6);   // relative to |gelu| up to 20: ~1 ulp
  CHECK(ge.rel < 2e-6);   // x >= -3: measured 14 ulp at worst
  CHECK(gge.abs < 5e-7);  // grad is O(1)
  // SwiGLU with up = 1 is silu(gate); the gradient w.r.t. gate is silu_grad.
  HostTensor inp(DType::f32, {n, 2}), d_inp(DType::f32, {n, 2});
  for (int64_t r = 0; r < n; ++r) {
    inp.set(2 * r, x.get(2 * r));
    inp.set(2 * r + 1, 1.0);
  }
  ops::swiglu_forward({half.view(), inp.view()}, s);
  HostTensor dy(DType::f32, {n, 1});
  dy.fill(1.0);
  ops::swiglu_backward({d_inp.view(), dy.view(), inp.view()}, s);
  Errors se, sge;
  for (int64_t r = 0; r < n; ++r) {
    const double v = inp.get(2 * r);
    se.add(half.get(r), silu(v), v >= -5.0 ? 1e-30 : 1e30);
    sge.add(d_inp.get(2 * r), silu_grad(v), 1e30);
  }
  CHECK(se.abs < 3e-6);
  CHECK(se.rel < 5e-7);   // x >= -5: measured 2.1 ulp at worst
  CHECK(sge.abs < 5e-7);
  // Non-finite inputs stay non-finite.
  HostTensor special(DType::f32, {3}), special_out(DType::f32, {3});
  special.set_values({std::nan(""), INFINITY, 1e30});
  ops::gelu_forward({special_out.view(), special.view()}, s);
  CHECK(std::isnan(special_out.get(0)));
  CHECK(special_out.get(1) == INFINITY);
  CHECK(special_out.get(2) == 1e30f);
}

}  // namespace strata::test
