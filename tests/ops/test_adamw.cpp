// CPU-only tests of adamw_step: argument errors, bitwise independence from the thread
// count, and the AVX-512, AVX2 and scalar bodies bitwise equal to each other. The
// reference cases, for every backend: tests/ops/cases/adamw.cpp.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "adamw_reference.h"
#include "cpu/cpu.h"
#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

using Catch::Contains;

using Hyper = reference::AdamWHyper;

ops::AdamWArgs args(const Hyper& h, HostTensor& master, HostTensor& grad, HostTensor& m, HostTensor& v,
                    const TensorView& working, int64_t step) {
  return reference::adamw_args(h, master.view(), grad.view(), m.view(), v.view(), working, step);
}

void run_errors(DType, const std::vector<int64_t>&) {
  const Hyper h;
  HostTensor master(DType::f32, {8}), grad(DType::f32, {8}), m(DType::f32, {8}), v(DType::f32, {8});
  HostTensor short_t(DType::f32, {7}), half(DType::bf16, {8}), ints(DType::i32, {8}), empty(DType::f32, {0});
  auto& s = cpu().stream();
  auto base = [&] { return args(h, master, grad, m, v, TensorView{}, 1); };
  ops::AdamWArgs a = base();
  a.master = half.view();
  REQUIRE_THROWS_WITH(ops::adamw_step(a, s), Contains("adamw_step") && Contains("'master'"));
  a = base();
  a.master = TensorView{};
  REQUIRE_THROWS_WITH(ops::adamw_step(a, s), Contains("adamw_step") && Contains("'master'"));
  a = base();
  a.grad = short_t.view();
  REQUIRE_THROWS_WITH(ops::adamw_step(a, s), Contains("adamw_step") && Contains("'grad'"));
  a = base();
  a.m = half.view();
  REQUIRE_THROWS_WITH(ops::adamw_step(a, s), Contains("adamw_step") && Contains("'m'"));
  a = base();
  a.v = empty.view();
  REQUIRE_THROWS_WITH(ops::adamw_step(a, s), Contains("adamw_step") && Contains("'v'"));
  a = base();
  a.working = ints.view();
  REQUIRE_THROWS_WITH(ops::adamw_step(a, s), Contains("adamw_step") && Contains("'working'"));
  a = base();
  a.working = short_t.view();
  REQUIRE_THROWS_WITH(ops::adamw_step(a, s), Contains("adamw_step") && Contains("'working'"));
  a = base();
  a.step = 0;
  REQUIRE_THROWS_WITH(ops::adamw_step(a, s), Contains("adamw_step") && Contains("'step'"));
  a = base();
  a.beta2 = 1.0f;
  REQUIRE_THROWS_WITH(ops::adamw_step(a, s), Contains("adamw_step") && Contains("'beta2'"));
  a = base();
  a.eps = 0.0f;
  REQUIRE_THROWS_WITH(ops::adamw_step(a, s), Contains("adamw_step") && Contains("'eps'"));
  a = base();
  a.lr = NAN;
  REQUIRE_THROWS_WITH(ops::adamw_step(a, s), Contains("adamw_step") && Contains("'lr'"));
}

STRATA_OP_CASE({"adamw_step", CaseKind::errors, {{1}}, kF32, run_errors});

TEST_CASE("adamw_step is bitwise independent of the thread count", "[ops][cpu]") {
  const Hyper h;
  const int64_t n = 300001;
  auto run = [&](int threads) {
    set_num_threads(threads);
    HostTensor master(DType::f32, {n}), grad(DType::f32, {n}), m(DType::f32, {n}), v(DType::f32, {n});
    HostTensor working(DType::bf16, {n});
    master.uniform(21, -1, 1);
    for (int64_t t = 1; t <= 3; ++t) {
      grad.uniform(200 + uint64_t(t), -1, 1);
      ops::adamw_step(args(h, master, grad, m, v, working.view(), t), cpu().stream());
    }
    set_num_threads(0);
    return std::make_pair(master.values(), working.values());
  };
  auto one = run(1), all = run(0);
  CHECK(std::memcmp(one.first.data(), all.first.data(), one.first.size() * sizeof(double)) == 0);
  CHECK(std::memcmp(one.second.data(), all.second.data(), one.second.size() * sizeof(double)) == 0);
}

TEST_CASE("adamw_step gives bitwise the same result with every loop body this CPU runs", "[ops][cpu]") {
  const Hyper h;
  const int64_t n = 2 * (int64_t(1) << 15) + 13;  // several chunks, a tail for 16 and 8 lanes
  const float specials[] = {NAN, -NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1e-40f, -3e38f, 3e38f};
  // Bytes of master, m, v and the working copy after three steps.
  auto run = [&](cpu::AdamWBody body, DType dt, bool with_working) {
    HostTensor master(DType::f32, {n}), grad(DType::f32, {n}), m(DType::f32, {n}), v(DType::f32, {n});
    HostTensor working(dt, {n});
    master.uniform(31, -1, 1);
    for (int64_t t = 1; t <= 3; ++t) {
      grad.uniform(300 + uint64_t(t), -1, 1);
      float* g = grad.view().ptr<float>();
      for (size_t i = 0; i < std::size(specials); ++i) g[size_t(t) * 1000 + i * 7] = specials[i];
      cpu::adamw_step(args(h, master, grad, m, v, with_working ? working.view() : TensorView{}, t), body);
    }
    std::string bytes;
    for (const HostTensor* x : {&master, &m, &v, &working})
      bytes.append(static_cast<const char*>(x->view().data), x->view().nbytes());
    return bytes;
  };
  const cpu::AdamWBody best = cpu::adamw_body_best();
  INFO("best body on this CPU: " << cpu::adamw_body_name(best));
  for (DType dt : {DType::f32, DType::bf16, DType::f16})
    for (bool with_working : {true, false}) {
      if (!with_working && dt != DType::f32) continue;
      const std::string scalar = run(cpu::AdamWBody::scalar, dt, with_working);
      for (cpu::AdamWBody body : {cpu::AdamWBody::avx2, cpu::AdamWBody::avx512}) {
        if (int(body) > int(best)) continue;
        INFO("body " << cpu::adamw_body_name(body) << ", working " << (with_working ? dtype_name(dt) : "none"));
        const bool bitwise_equal = run(body, dt, with_working) == scalar;  // a bool: Catch would print the bytes
        CHECK(bitwise_equal);
      }
    }
}

}  // namespace
}  // namespace strata::test
