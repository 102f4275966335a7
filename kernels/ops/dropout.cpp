// Entry points of dropout_forward / dropout_backward: every argument is checked
// here, before anything runs, then the backend is called.
// Invariant: nothing after the checks may throw.
#include <cmath>

#include "backend.h"
#include "check.h"

namespace strata::ops {

namespace {

void check_dropout(const char* op, const DropoutArgs& a, const Stream& s) {
  check::present(op, "inp", a.inp, s);
  check::floating(op, "inp", a.inp);
  check::present(op, "out", a.out, s);
  check::same_dtype(op, "out", a.out, "inp", a.inp);
  bool same = a.out.ndim == a.inp.ndim;
  for (int i = 0; same && i < a.inp.ndim; ++i) same = a.out.shape[i] == a.inp.shape[i];
  if (!same) check::fail(op, "out", a.out, "must have the shape of 'inp' " + a.inp.str());
  // 'not (p >= 0 and p < 1)' also rejects NaN.
  if (!(a.p >= 0.0f && a.p < 1.0f))
    STRATA_FAIL(op << ": argument 'p' is " << a.p
                   << ", expected a drop probability in [0, 1) (0 disables dropout)");
}

}  // namespace

void dropout_forward(const DropoutArgs& a, Stream& s) {
  check_dropout("dropout_forward", a, s);
  run(&Backend::dropout_forward, "dropout_forward", a, s);
}

void dropout_backward(const DropoutArgs& a, Stream& s) {
  check_dropout("dropout_backward", a, s);
  run(&Backend::dropout_backward, "dropout_backward", a, s);
}

}  // namespace strata::ops
