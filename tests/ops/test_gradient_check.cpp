// The finite-difference checker (support/host_tensor.h) sees small errors: on a real
// op (GELU, then the LayerNorm weight gradient, whose components are far below 1) it
// passes the true gradient and fails it scaled by 1.01, with its largest component
// zeroed, or with that component's sign flipped. These are the plants that the old
// checker (absolute floor of 1, 2% tolerance) let through.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>

#include "ops.h"
#include "support/host_tensor.h"

using namespace strata;
using namespace strata::test;

namespace {

void expect_plants_caught(HostTensor& x, const std::function<double()>& loss, std::vector<double> g) {
  const double tol = 2e-3;  // expect_gradient's default
  const GradientCheck truth = gradient_check(x, loss, g);
  INFO("true gradient: relative error " << truth.rel_error);
  CHECK(truth.ok(tol));
  size_t top = 0;
  for (size_t i = 1; i < g.size(); ++i)
    if (std::fabs(g[i]) > std::fabs(g[top])) top = i;
  std::vector<double> scaled = g, zeroed = g, flipped = g;
  for (double& v : scaled) v *= 1.01;
  zeroed[top] = 0;
  flipped[top] = -flipped[top];
  const GradientCheck s = truth.against(scaled), z = truth.against(zeroed), f = truth.against(flipped);
  INFO("scaled by 1.01: " << s.rel_error << "; largest zeroed: " << z.rel_error << ", " << z.bad_signs
                          << " bad signs; largest flipped: " << f.rel_error << ", " << f.bad_signs << " bad signs");
  CHECK_FALSE(s.ok(tol));
  CHECK_FALSE(z.ok(tol));
  CHECK(z.bad_signs == 1);
  CHECK_FALSE(f.ok(tol));
  CHECK(f.bad_signs == 1);
}

}  // namespace

TEST_CASE("the gradient check fails a GELU gradient 1% off, or with a component zeroed or flipped", "[ops][cpu]") {
  HostTensor inp(DType::f32, {3, 17}), out(DType::f32, {3, 17}), w(DType::f32, {3, 17}), d_inp(DType::f32, {3, 17});
  inp.uniform(14, -4.0, 4.0);
  w.uniform(15);
  auto loss = [&] {
    ops::gelu_forward({out.view(), inp.view()}, cpu().stream());
    return dot(out, w.values());
  };
  ops::gelu_backward({d_inp.view(), w.view(), inp.view()}, cpu().stream());
  expect_plants_caught(inp, loss, d_inp.values());
}

TEST_CASE("the gradient check fails a small norm weight gradient 1% off, or zeroed, or flipped", "[ops][cpu]") {
  const int64_t N = 4, C = 33;
  HostTensor inp(DType::f32, {N, C}), weight(DType::f32, {C}), bias(DType::f32, {C}), out(DType::f32, {N, C});
  HostTensor mean(DType::f32, {N}), rstd(DType::f32, {N}), d_out(DType::f32, {N, C}), d_inp(DType::f32, {N, C});
  HostTensor d_weight(DType::f32, {C}), d_bias(DType::f32, {C});
  inp.uniform(21);
  weight.uniform(22, 0.5, 1.5);
  bias.uniform(23);
  d_out.uniform(24, -0.05, 0.05);  // the gradient's components are ~1e-2: no floor hides them
  const std::vector<double> w = d_out.values();
  auto forward = [&] {
    ops::norm_forward({out.view(), mean.view(), rstd.view(), inp.view(), weight.view(), bias.view(), 1e-5f, false},
                      cpu().stream());
  };
  auto loss = [&] {
    forward();
    return dot(out, w);
  };
  forward();
  d_weight.fill(0);
  d_bias.fill(0);
  ops::norm_backward({d_inp.view(), d_weight.view(), d_bias.view(), d_out.view(), inp.view(), weight.view(),
                      mean.view(), rstd.view(), false},
                     cpu().stream());
  double largest = 0;
  for (double g : d_weight.values()) largest = std::max(largest, std::fabs(g));
  REQUIRE(largest < 0.5);  // the regime where the old checker accepted any error under 0.01
  expect_plants_caught(weight, loss, d_weight.values());
}
