// Entry point of the AdamW step: check every argument, then run the backend.
// Invariant: nothing reaches a backend before all checks pass; each error names the
// op and the argument (tensor or hyperparameter).
#include <cmath>

#include "backend.h"
#include "check.h"

namespace strata::ops {

void adamw_step(const AdamWArgs& a, Stream& s) {
  const char* op = "adamw_step";
  check::present(op, "master", a.master, s);
  check::dtype(op, "master", a.master, {DType::f32});
  const int64_t n = a.master.numel();
  struct State {
    const char* name;
    const TensorView& t;
  };
  for (const State& st : {State{"grad", a.grad}, State{"m", a.m}, State{"v", a.v}}) {
    check::present(op, st.name, st.t, s);
    check::dtype(op, st.name, st.t, {DType::f32});
    check::numel(op, st.name, st.t, n);
  }
  if (a.working.defined()) {
    check::present(op, "working", a.working, s);
    check::floating(op, "working", a.working);
    check::numel(op, "working", a.working, n);
  }
  STRATA_CHECK(a.step >= 1, op << ": argument 'step' is " << a.step
                               << "; steps count from 1 (bias correction divides by 1 - beta^step)");
  STRATA_CHECK(a.beta1 >= 0.0f && a.beta1 < 1.0f,
               op << ": argument 'beta1' is " << a.beta1 << "; it must be in [0, 1)");
  STRATA_CHECK(a.beta2 >= 0.0f && a.beta2 < 1.0f,
               op << ": argument 'beta2' is " << a.beta2 << "; it must be in [0, 1)");
  STRATA_CHECK(a.eps > 0.0f, op << ": argument 'eps' is " << a.eps << "; it must be positive");
  STRATA_CHECK(std::isfinite(a.lr) && std::isfinite(a.weight_decay) && std::isfinite(a.grad_scale),
               op << ": arguments 'lr' (" << a.lr << "), 'weight_decay' (" << a.weight_decay
                  << ") and 'grad_scale' (" << a.grad_scale << ") must be finite");
  run(&Backend::adamw_step, op, a, s);
}

}  // namespace strata::ops
