// Walks the op table on the CPU: every case over every dtype and shape, reference
// cases against their double-precision references (CpuEnv); coverage of the CPU
// backend's table (each op has a reference case; each *_backward op a
// finite-difference case); and the backend tables themselves (the registry is what
// the backends registered; a missing entry is an error naming op and backend).
#include <catch2/catch.hpp>
#include <algorithm>
#include <set>

#include "op_table.h"
#include "ops.h"
#include "ops/backend.h"
#include "support/host_tensor.h"

namespace strata::test {

namespace {

// The CPU backend against the references: tensors are used in place.
class CpuEnv : public OpEnv {
 public:
  Stream& stream() override { return cpu().stream(); }
  TensorView at(HostTensor& h) override { return h.view(); }
  void expect(const std::string& what, HostTensor& out, const std::vector<double>& reference,
              Tolerance tol) override {
    expect_close(what, out, reference, tol);
  }
};

bool is_backward(const std::string& name) {
  return name.size() > 9 && name.compare(name.size() - 9, 9, "_backward") == 0;
}

}  // namespace

TEST_CASE("every op of the CPU backend has reference and gradient cases", "[ops][cpu]") {
  const std::vector<std::string> reference = ops_with_cases(CaseKind::reference);
  const std::vector<std::string> gradcheck = ops_with_cases(CaseKind::gradcheck);
  const auto has = [](const std::vector<std::string>& v, const std::string& op) {
    return std::find(v.begin(), v.end(), op) != v.end();
  };
  const ops::Backend& b = *ops::backends().front();
  REQUIRE(std::string(b.name) == "cpu");
  for (const std::string& name : ops::op_names()) {
    if (!ops::has_op(b, name)) continue;
    INFO("op " << name << " of the cpu backend");
    CHECK(has(reference, name));
    if (is_backward(name)) CHECK(has(gradcheck, name));
  }
}

TEST_CASE("op table", "[ops][cpu]") {
  CpuEnv env;
  for (const OpCase& c : op_table())
    for (DType dtype : c.dtypes)
      for (const auto& shape : c.shapes)
        DYNAMIC_SECTION(case_name(c, dtype, shape)) {
          if (c.run_on)
            c.run_on(env, dtype, shape);
          else
            c.run(dtype, shape);
        }
}

TEST_CASE("the op registry is what the backends registered", "[ops][cpu]") {
  const std::vector<ops::OpInfo>& registry = ops::op_registry();
  REQUIRE(registry.size() == ops::op_names().size());
  std::set<std::string> names;
  for (size_t i = 0; i < registry.size(); ++i) {
    INFO(registry[i].name);
    CHECK(registry[i].name == ops::op_names()[i]);
    names.insert(registry[i].name);
    bool cuda = false;
    for (const ops::Backend* b : ops::backends())
      if (b->kind == DeviceKind::cuda) cuda = cuda || ops::has_op(*b, registry[i].name);
    CHECK(registry[i].cpu == ops::has_op(*ops::backends().front(), registry[i].name));
    CHECK(registry[i].cuda == cuda);
  }
  CHECK(names.size() == registry.size());  // no op twice
  CHECK_FALSE(ops::has_op(*ops::backends().front(), "no_such_op"));
}

TEST_CASE("an op a backend did not register is an error naming the op and the backend", "[ops][cpu]") {
  ops::Backend partial = *ops::backends().front();
  partial.name = "partial";
  partial.gelu_backward = nullptr;
  CHECK_FALSE(ops::has_op(partial, "gelu_backward"));
  CHECK(ops::has_op(partial, "gelu_forward"));
  HostTensor x(DType::f32, {5}), y(DType::f32, {5}), dx(DType::f32, {5});
  x.uniform(1);
  dx.fill(7);
  Stream& s = cpu().stream();
  REQUIRE_THROWS_WITH(ops::run(partial, &ops::Backend::gelu_backward, "gelu_backward",
                               ops::GeluBackwardArgs{dx.view(), y.view(), x.view()}, s),
                      Catch::Contains("gelu_backward") && Catch::Contains("the partial backend"));
  for (double v : dx.values()) CHECK(v == 7);  // nothing ran
  // The entries it has still run.
  ops::run(partial, &ops::Backend::gelu_forward, "gelu_forward", ops::GeluForwardArgs{y.view(), x.view()}, s);
  HostTensor want(DType::f32, {5});
  ops::gelu_forward({want.view(), x.view()}, s);
  CHECK(y.values() == want.values());
}

}  // namespace strata::test
