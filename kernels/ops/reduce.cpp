// Entry points of the reductions over buffer lists: check every argument, then run
// the backend.
// Invariant: nothing reaches a backend before all checks pass; each error names the
// op and the argument, with the list index for inputs ("inputs[2]").
#include <string>

#include "backend.h"
#include "check.h"

namespace strata::ops {

namespace {

void check_inputs(const char* op, const std::vector<TensorView>& inputs, const Stream& s) {
  STRATA_CHECK(!inputs.empty(), op << ": argument 'inputs' is an empty list; pass at least one buffer");
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::string name = "inputs[" + std::to_string(i) + "]";
    check::present(op, name.c_str(), inputs[i], s);
    check::floating(op, name.c_str(), inputs[i]);
  }
}

}  // namespace

void global_norm(const GlobalNormArgs& a, Stream& s) {
  const char* op = "global_norm";
  check::present(op, "out", a.out, s);
  check::dtype(op, "out", a.out, {DType::f32});
  check::numel(op, "out", a.out, 1);
  check_inputs(op, a.inputs, s);
  run(&Backend::global_norm, op, a, s);
}

void count_nonfinite(const CountNonfiniteArgs& a, Stream& s) {
  const char* op = "count_nonfinite";
  check::present(op, "out", a.out, s);
  check::dtype(op, "out", a.out, {DType::i32});
  check::numel(op, "out", a.out, 1);
  check_inputs(op, a.inputs, s);
  run(&Backend::count_nonfinite, op, a, s);
}

}  // namespace strata::ops
