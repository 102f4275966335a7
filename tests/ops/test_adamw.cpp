// Op-table cases for adamw_step: several steps against a double-precision reference
// of the documented update, the working copy bitwise equal to the rounded master,
// bitwise independence from the thread count, and the AVX-512, AVX2 and scalar
// bodies bitwise equal to each other.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "common/convert.h"
#include "cpu/cpu.h"
#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

using Catch::Contains;

const std::vector<std::vector<int64_t>> kShapes = {{1}, {3}, {17}, {1000}, {4097}, {70001}};

struct Hyper {
  float lr = 1e-2f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f, grad_scale = 0.5f;
};

// The update of kernels/ops.h, in double, on the f32 hyperparameters the op gets.
void reference_step(const Hyper& h, int64_t t, const std::vector<double>& grad, std::vector<double>& master,
                    std::vector<double>& m, std::vector<double>& v) {
  const double b1 = h.beta1, b2 = h.beta2;
  const double bias1 = 1 - std::pow(b1, double(t)), bias2 = 1 - std::pow(b2, double(t));
  for (size_t i = 0; i < master.size(); ++i) {
    double g = grad[i] * double(h.grad_scale);
    m[i] = b1 * m[i] + (1 - b1) * g;
    v[i] = b2 * v[i] + (1 - b2) * g * g;
    master[i] -= double(h.lr) * (m[i] / bias1 / (std::sqrt(v[i] / bias2) + double(h.eps)) +
                                 double(h.weight_decay) * master[i]);
  }
}

ops::AdamWArgs args(const Hyper& h, HostTensor& master, HostTensor& grad, HostTensor& m, HostTensor& v,
                    const TensorView& working, int64_t step) {
  ops::AdamWArgs a;
  a.master = master.view();
  a.grad = grad.view();
  a.m = m.view();
  a.v = v.view();
  a.working = working;
  a.lr = h.lr;
  a.beta1 = h.beta1;
  a.beta2 = h.beta2;
  a.eps = h.eps;
  a.weight_decay = h.weight_decay;
  a.grad_scale = h.grad_scale;
  a.step = step;
  return a;
}

// dt is the working copy's dtype; f32 runs once more without a working copy.
void run_reference(DType dt, const std::vector<int64_t>& shape) {
  const Hyper h;
  for (bool with_working : {true, false}) {
    if (!with_working && dt != DType::f32) continue;
    INFO("working copy " << (with_working ? dtype_name(dt) : "none"));
    const int64_t n = shape[0];
    HostTensor master(DType::f32, {n}), grad(DType::f32, {n}), m(DType::f32, {n}), v(DType::f32, {n});
    HostTensor working(dt, {n});
    master.uniform(11, -1, 1);
    std::vector<double> rm = master.values(), rmom(size_t(n), 0.0), rvel(size_t(n), 0.0);
    for (int64_t t = 1; t <= 5; ++t) {
      INFO("step " << t);
      grad.uniform(100 + uint64_t(t), -2, 2);
      reference_step(h, t, grad.values(), rm, rmom, rvel);
      ops::adamw_step(args(h, master, grad, m, v, with_working ? working.view() : TensorView{}, t), cpu().stream());
      expect_close("master", master, rm, tolerance_for(DType::f32));
      expect_close("m", m, rmom, tolerance_for(DType::f32));
      expect_close("v", v, rvel, tolerance_for(DType::f32));
      if (!with_working) continue;
      expect_close("working", working, rm, tolerance_for(dt));
      // Exactly the new master rounded to the working dtype, not merely close to it.
      const float* p = master.view().ptr<float>();
      int64_t mismatches = 0;
      for (int64_t i = 0; i < n; ++i) {
        uint32_t want = dt == DType::f32    ? num::float_bits(p[i])
                        : dt == DType::bf16 ? num::float_to_bf16(p[i])
                                            : num::float_to_f16(p[i]);
        uint32_t got = 0;
        std::memcpy(&got, static_cast<const char*>(working.view().data) + size_t(i) * dtype_size(dt), dtype_size(dt));
        mismatches += got != want;
      }
      CHECK(mismatches == 0);
    }
  }
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

STRATA_OP_CASE({"adamw_step", CaseKind::reference, kShapes, kAllFloat, run_reference});
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
