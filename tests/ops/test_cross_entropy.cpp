// CPU-only op-table cases for cross_entropy_forward / cross_entropy_backward: a
// finite-difference check and argument errors. The reference cases, for every
// backend: tests/ops/cases/cross_entropy.cpp.
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

constexpr int32_t kIgnore = -100;

// Random targets in [0, V) with every fourth row (from row 2) ignored.
HostTensor make_targets(int64_t N, int64_t V, uint64_t seed) {
  HostTensor t(DType::i32, {N});
  t.tokens(seed, int32_t(V));
  for (int64_t r = 2; r < N; r += 4) t.set(r, kIgnore);
  return t;
}

struct CeRun {
  HostTensor losses, lse, d_logits;
};

CeRun run_ce(const HostTensor& logits, const HostTensor& targets, int32_t ignore_index, float d_loss) {
  const int64_t N = logits.shape()[0], V = logits.shape()[1];
  CeRun r{HostTensor(DType::f32, {N}), HostTensor(DType::f32, {N}), HostTensor(logits.dtype(), {N, V})};
  ops::cross_entropy_forward({r.losses.view(), r.lse.view(), logits.view(), targets.view(), ignore_index},
                             cpu().stream());
  ops::cross_entropy_backward(
      {r.d_logits.view(), logits.view(), r.lse.view(), targets.view(), d_loss, ignore_index}, cpu().stream());
  return r;
}

// Total loss d_loss * sum(losses); backward with the same d_loss is its gradient.
STRATA_OP_CASE({"cross_entropy_backward", CaseKind::gradcheck, {{3, 17}, {5, 1}, {6, 1000}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const int64_t N = shape[0];
                  const float d_loss = 0.7f;
                  HostTensor logits(dtype, shape);
                  logits.uniform(51, -3.0, 3.0);
                  HostTensor targets = make_targets(N, shape[1], 52);
                  CeRun r = run_ce(logits, targets, kIgnore, d_loss);
                  HostTensor losses(DType::f32, {N}), lse(DType::f32, {N});
                  auto loss = [&] {
                    ops::cross_entropy_forward({losses.view(), lse.view(), logits.view(), targets.view(), kIgnore},
                                               cpu().stream());
                    return dot(losses, std::vector<double>(size_t(N), double(d_loss)));
                  };
                  expect_gradient("d_logits", logits, loss, r.d_logits.values(), 1e-2, 2e-3,
                                  shape[1] > 100 ? 600 : 0);
                }});

using Catch::Contains;

STRATA_OP_CASE({"cross_entropy_forward", CaseKind::errors, {{3, 5}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const int64_t N = shape[0], V = shape[1];
                  HostTensor logits(dtype, shape), losses(DType::f32, {N}), lse(DType::f32, {N});
                  HostTensor targets(DType::i32, {N});
                  targets.tokens(61, int32_t(V));
                  Stream& s = cpu().stream();
                  auto fwd = [&](ops::CrossEntropyForwardArgs a) { ops::cross_entropy_forward(a, s); };
                  ops::CrossEntropyForwardArgs ok{losses.view(), lse.view(), logits.view(), targets.view()};
                  REQUIRE_NOTHROW(fwd(ok));

                  auto a = ok;
                  a.logits = TensorView();
                  REQUIRE_THROWS_WITH(fwd(a), Contains("cross_entropy_forward") && Contains("logits"));
                  a = ok;
                  a.losses = HostTensor(DType::f32, {N + 1}).view();
                  REQUIRE_THROWS_WITH(fwd(a), Contains("cross_entropy_forward") && Contains("losses"));
                  a = ok;
                  a.lse = HostTensor(DType::bf16, {N}).view();
                  REQUIRE_THROWS_WITH(fwd(a), Contains("cross_entropy_forward") && Contains("lse"));
                  a = ok;
                  a.lse = HostTensor(DType::f32, {N, 1}).view();
                  REQUIRE_THROWS_WITH(fwd(a), Contains("cross_entropy_forward") && Contains("lse"));
                  a = ok;
                  a.targets = HostTensor(DType::f32, {N}).view();
                  REQUIRE_THROWS_WITH(fwd(a), Contains("cross_entropy_forward") && Contains("targets"));
                  a = ok;
                  a.logits = HostTensor(DType::i32, shape).view();
                  REQUIRE_THROWS_WITH(fwd(a), Contains("cross_entropy_forward") && Contains("logits"));
                  a = ok;
                  a.logits = HostTensor(dtype, {1, N, V}).view();
                  REQUIRE_THROWS_WITH(fwd(a), Contains("cross_entropy_forward") && Contains("logits"));
                  a = ok;
                  a.logits = HostTensor(dtype, {N, 0}).view();
                  REQUIRE_THROWS_WITH(fwd(a), Contains("cross_entropy_forward") && Contains("logits"));

                  // Bad targets are rejected before anything is written.
                  losses.fill(123.0);
                  lse.fill(456.0);
                  targets.set(1, double(V));
                  REQUIRE_THROWS_WITH(fwd(ok), Contains("cross_entropy_forward") && Contains("targets") &&
                                                   Contains("row 1") && Contains("target 5") &&
                                                   Contains("V = 5"));
                  targets.set(1, -1);
                  REQUIRE_THROWS_WITH(fwd(ok), Contains("targets") && Contains("target -1"));
                  targets.set(1, kIgnore);
                  a = ok;
                  a.ignore_index = 0;  // -100 is no longer ignored
                  REQUIRE_THROWS_WITH(fwd(a), Contains("targets") && Contains("target -100"));
                  for (int64_t r = 0; r < N; ++r) {
                    CHECK(losses.get(r) == 123.0);
                    CHECK(lse.get(r) == 456.0);
                  }
                }});

STRATA_OP_CASE({"cross_entropy_backward", CaseKind::errors, {{3, 5}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const int64_t N = shape[0], V = shape[1];
                  HostTensor logits(dtype, shape), d_logits(dtype, shape), lse(DType::f32, {N});
                  HostTensor targets(DType::i32, {N});
                  targets.tokens(71, int32_t(V));
                  Stream& s = cpu().stream();
                  auto bwd = [&](ops::CrossEntropyBackwardArgs a) { ops::cross_entropy_backward(a, s); };
                  ops::CrossEntropyBackwardArgs ok{d_logits.view(), logits.view(), lse.view(), targets.view()};
                  REQUIRE_NOTHROW(bwd(ok));

                  auto a = ok;
                  a.d_logits = TensorView();
                  REQUIRE_THROWS_WITH(bwd(a), Contains("cross_entropy_backward") && Contains("d_logits"));
                  a = ok;
                  a.d_logits = HostTensor(DType::bf16, shape).view();
                  REQUIRE_THROWS_WITH(bwd(a), Contains("cross_entropy_backward") && Contains("d_logits"));
                  a = ok;
                  a.d_logits = HostTensor(dtype, {N, V + 1}).view();
                  REQUIRE_THROWS_WITH(bwd(a), Contains("cross_entropy_backward") && Contains("d_logits"));
                  a = ok;
                  a.lse = HostTensor(DType::f32, {N + 2}).view();
                  REQUIRE_THROWS_WITH(bwd(a), Contains("cross_entropy_backward") && Contains("lse"));
                  a = ok;
                  a.targets = HostTensor(DType::i32, {N - 1}).view();
                  REQUIRE_THROWS_WITH(bwd(a), Contains("cross_entropy_backward") && Contains("targets"));

                  d_logits.fill(9.0);
                  targets.set(2, 1000);
                  REQUIRE_THROWS_WITH(bwd(ok), Contains("cross_entropy_backward") && Contains("row 2") &&
                                                   Contains("target 1000") && Contains("V = 5"));
                  for (int64_t i = 0; i < N * V; ++i) CHECK(d_logits.get(i) == 9.0);
                }});

}  // namespace
}  // namespace strata::test
