// Reference cases for global_norm and count_nonfinite, for every backend: lists of
// buffers of mixed dtypes, with NaN and Inf injected. Argument errors and bitwise
// independence from the thread count: tests/ops/test_reduce.cpp.
#include <cmath>

#include "ops.h"
#include "ops/op_table.h"
#include "ops/reduce_buffers.h"

namespace strata::test {
namespace {

// shape[0] is the size of the main buffer; 200001 spans several fixed chunks (65536).
const std::vector<std::vector<int64_t>> kShapes = {{1}, {3}, {17}, {1000}, {200001}};

std::vector<TensorView> at_all(OpEnv& e, std::vector<HostTensor>& b) {
  std::vector<TensorView> v;
  for (HostTensor& t : b) v.push_back(e.at(t));
  return v;
}

double reference_norm(const std::vector<HostTensor>& b) {
  double s = 0;
  for (const HostTensor& t : b)
    for (double x : t.values()) s += x * x;
  return std::sqrt(s);
}

void norm_case(OpEnv& e, const std::string& what, std::vector<HostTensor>& b, double reference) {
  HostTensor out(DType::f32, {1});
  ops::global_norm({e.at(out), at_all(e, b)}, e.stream());
  e.expect(what, out, {reference}, tolerance_for(DType::f32));
}

// `injected`: how many non-finite values the case stored.
void count_case(OpEnv& e, const std::string& what, std::vector<HostTensor>& b, double injected) {
  HostTensor out(DType::i32, {1});
  ops::count_nonfinite({e.at(out), at_all(e, b)}, e.stream());
  e.expect(what, out, {injected}, {0, 0});
}

void run_global_norm(OpEnv& e, DType dt, const std::vector<int64_t>& shape) {
  std::vector<HostTensor> b = reduce_buffers(dt, shape[0]);
  norm_case(e, "global_norm", b, reference_norm(b));
  std::vector<HostTensor> single(1, b[0]);
  norm_case(e, "global_norm of one buffer", single, reference_norm(single));
  b[2].set(b[2].numel() - 1, INFINITY);
  norm_case(e, "global_norm with an Inf", b, INFINITY);
  b[0].set(0, NAN);
  norm_case(e, "global_norm with a NaN", b, NAN);
}

void run_count_nonfinite(OpEnv& e, DType dt, const std::vector<int64_t>& shape) {
  std::vector<HostTensor> b = reduce_buffers(dt, shape[0]);
  count_case(e, "count_nonfinite (none)", b, 0);
  b[0].set(b[0].numel() - 1, NAN);
  b[1].set(3, -INFINITY);
  b[2].set(0, INFINITY);
  b[2].set(b[2].numel() / 2, 1e6);  // Inf once stored as f16, finite otherwise
  b[2].set(b[2].numel() - 1, -NAN);
  count_case(e, "count_nonfinite (4 bad, 5 in f16)", b, dt == DType::f16 ? 5 : 4);
}

// A count is exact on every backend; the norm sums in double on every backend.
STRATA_OP_CASE(reference_case("global_norm", kShapes, kAllFloat, run_global_norm));
STRATA_OP_CASE(reference_case("count_nonfinite", kShapes, kAllFloat, run_count_nonfinite, 0.0));

}  // namespace
}  // namespace strata::test
