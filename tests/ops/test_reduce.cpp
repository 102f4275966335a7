// Op-table cases for global_norm and count_nonfinite over lists of buffers of mixed
// dtypes, with NaN and Inf injected, and bitwise independence from the thread count.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>

#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

using Catch::Contains;

// shape[0] is the size of the main buffer; 200001 spans several fixed chunks (65536).
const std::vector<std::vector<int64_t>> kShapes = {{1}, {3}, {17}, {1000}, {200001}};

// Three buffers: two of dtype dt and an f32 one, as a unit's gradients might be.
std::vector<HostTensor> make_buffers(DType dt, int64_t n) {
  std::vector<HostTensor> b;
  b.emplace_back(dt, std::vector<int64_t>{n});
  b.emplace_back(DType::f32, std::vector<int64_t>{17});
  b.emplace_back(dt, std::vector<int64_t>{3, n});
  for (size_t i = 0; i < b.size(); ++i) b[i].uniform(30 + i, -2, 2);
  return b;
}

std::vector<TensorView> views(const std::vector<HostTensor>& b) {
  std::vector<TensorView> v;
  for (const HostTensor& t : b) v.push_back(t.view());
  return v;
}

double reference_norm(const std::vector<HostTensor>& b) {
  double s = 0;
  for (const HostTensor& t : b)
    for (double x : t.values()) s += x * x;
  return std::sqrt(s);
}

int64_t reference_count(const std::vector<HostTensor>& b) {
  int64_t c = 0;
  for (const HostTensor& t : b)
    for (double x : t.values()) c += !std::isfinite(x);
  return c;
}

double norm_of(const std::vector<HostTensor>& b) {
  HostTensor out(DType::f32, {1});
  ops::global_norm({out.view(), views(b)}, cpu().stream());
  return out.get(0);
}

double count_of(const std::vector<HostTensor>& b) {
  HostTensor out(DType::i32, {1});
  ops::count_nonfinite({out.view(), views(b)}, cpu().stream());
  return out.get(0);
}

void run_global_norm(DType dt, const std::vector<int64_t>& shape) {
  std::vector<HostTensor> b = make_buffers(dt, shape[0]);
  expect_close("global_norm", {norm_of(b)}, {reference_norm(b)}, tolerance_for(DType::f32));
  std::vector<HostTensor> single(1, b[0]);
  expect_close("global_norm of one buffer", {norm_of(single)}, {reference_norm(single)}, tolerance_for(DType::f32));

  b[2].set(b[2].numel() - 1, INFINITY);
  CHECK(std::isinf(norm_of(b)));
  b[0].set(0, NAN);
  CHECK(std::isnan(norm_of(b)));
}

void run_count_nonfinite(DType dt, const std::vector<int64_t>& shape) {
  std::vector<HostTensor> b = make_buffers(dt, shape[0]);
  CHECK(count_of(b) == 0);
  b[0].set(b[0].numel() - 1, NAN);
  b[1].set(3, -INFINITY);
  b[2].set(0, INFINITY);
  b[2].set(b[2].numel() / 2, 1e6);  // Inf once stored as f16, finite otherwise
  b[2].set(b[2].numel() - 1, -NAN);
  const int64_t expected = reference_count(b);
  CHECK(expected == (dt == DType::f16 ? 5 : 4));
  CHECK(count_of(b) == expected);
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

STRATA_OP_CASE({"global_norm", CaseKind::reference, kShapes, kAllFloat, run_global_norm});
STRATA_OP_CASE({"count_nonfinite", CaseKind::reference, kShapes, kAllFloat, run_count_nonfinite});
STRATA_OP_CASE({"global_norm", CaseKind::errors, {{1}}, kF32, run_errors});

TEST_CASE("global_norm is bitwise independent of the thread count", "[ops][cpu]") {
  for (DType dt : kAllFloat) {
    std::vector<HostTensor> b = make_buffers(dt, 500001);
    set_num_threads(1);
    double one = norm_of(b);
    set_num_threads(0);
    double all = norm_of(b);
    CHECK(std::memcmp(&one, &all, sizeof one) == 0);
  }
}

}  // namespace
}  // namespace strata::test
