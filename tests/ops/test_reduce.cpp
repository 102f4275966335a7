// Argument errors of global_norm and count_nonfinite (their reference cases, for
// every backend, are in cases/reduce.cpp), and bitwise independence from the thread count.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "op_table.h"
#include "ops.h"
#include "reduce_buffers.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

using Catch::Contains;

std::vector<TensorView> views(const std::vector<HostTensor>& b) {
  std::vector<TensorView> v;
  for (const HostTensor& t : b) v.push_back(t.view());
  return v;
}

double norm_of(const std::vector<HostTensor>& b) {
  HostTensor out(DType::f32, {1});
  ops::global_norm({out.view(), views(b)}, cpu().stream());
  return out.get(0);
}

void run_errors(DType, const std::vector<int64_t>&) {
  HostTensor f(DType::f32, {1}), i(DType::i32, {1}), two(DType::f32, {2}), x(DType::bf16, {5});
  HostTensor ints(DType::i32, {5}), empty(DType::f32, {0});
  auto& s = cpu().stream();
  REQUIRE_THROWS_WITH(ops::global_norm({f.view(), {}}, s), Contains("global_norm") && Contains("'inputs'"));
  REQUIRE_THROWS_WITH(ops::global_norm({i.view(), {x.view()}}, s), Contains("global_norm") && Contains("'out'"));
  REQUIRE_THROWS_WITH(ops::global_norm({two.view(), {x.view()}}, s), Contains("global_norm") && Contains("'out'"));
  REQUIRE_THROWS_WITH(ops::global_norm({TensorView{}, {x.view()}}, s), Contains("global_norm") && Contains("'out'"));
  REQUIRE_THROWS_WITH(ops::global_norm({f.view(), {x.view(), ints.view()}}, s),
                      Contains("global_norm") && Contains("'inputs[1]'"));
  REQUIRE_THROWS_WITH(ops::global_norm({f.view(), {x.view(), TensorView{}}}, s),
                      Contains("global_norm") && Contains("'inputs[1]'"));
  REQUIRE_THROWS_WITH(ops::count_nonfinite({f.view(), {x.view()}}, s), Contains("count_nonfinite") && Contains("'out'"));
  REQUIRE_THROWS_WITH(ops::count_nonfinite({i.view(), {empty.view()}}, s),
                      Contains("count_nonfinite") && Contains("'inputs[0]'"));
  REQUIRE_THROWS_WITH(ops::count_nonfinite({i.view(), {}}, s), Contains("count_nonfinite") && Contains("'inputs'"));
}

STRATA_OP_CASE({"global_norm", CaseKind::errors, {{1}}, kF32, run_errors});

TEST_CASE("global_norm is bitwise independent of the thread count", "[ops][cpu]") {
  for (DType dt : kAllFloat) {
    std::vector<HostTensor> b = reduce_buffers(dt, 500001);
    set_num_threads(1);
    double one = norm_of(b);
    set_num_threads(0);
    double all = norm_of(b);
    CHECK(std::memcmp(&one, &all, sizeof one) == 0);
  }
}

}  // namespace
}  // namespace strata::test
