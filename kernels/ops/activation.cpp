// Entry points of gelu_* and swiglu_*: every argument is checked here, before
// anything runs, then the backend is called.
// Invariant: nothing after the checks may throw.
#include "backend.h"
#include "check.h"

namespace strata::ops {

namespace {

void floating_input(const char* op, const TensorView& inp, const Stream& s) {
  check::present(op, "inp", inp, s);
  check::floating(op, "inp", inp);
}

// t is present, has inp's dtype and exactly inp's shape.
void like_inp(const char* op, const char* arg, const TensorView& t, const TensorView& inp,
              const Stream& s) {
  check::present(op, arg, t, s);
  check::same_dtype(op, arg, t, "inp", inp);
  bool same = t.ndim == inp.ndim;
  for (int i = 0; same && i < t.ndim; ++i) same = t.shape[i] == inp.shape[i];
  if (!same) check::fail(op, arg, t, "must have the shape of 'inp' " + inp.str());
}

// inp is (N, 2H).
void swiglu_input(const char* op, const TensorView& inp) {
  if (check::last_dim(inp) % 2)
    check::fail(op, "inp", inp, "must have an even last dimension: [gate | up], each H wide");
}

// t is present, has inp's dtype, and is (N, H) against inp's (N, 2H).
void swiglu_half(const char* op, const char* arg, const TensorView& t, const TensorView& inp,
                 const Stream& s) {
  check::present(op, arg, t, s);
  check::same_dtype(op, arg, t, "inp", inp);
  const int64_t h = check::last_dim(inp) / 2;
  if (check::last_dim(t) != h || check::rows(t) != check::rows(inp))
    check::fail(op, arg, t,
                "must be (N, H) = (" + std::to_string(check::rows(inp)) + ", " + std::to_string(h) +
                    ") for 'inp' " + inp.str() + " = (N, 2H)");
}

}  // namespace

void gelu_forward(const GeluForwardArgs& a, Stream& s) {
  const char* op = "gelu_forward";
  floating_input(op, a.inp, s);
  like_inp(op, "out", a.out, a.inp, s);
  run(&Backend::gelu_forward, op, a, s);
}

void gelu_backward(const GeluBackwardArgs& a, Stream& s) {
  const char* op = "gelu_backward";
  floating_input(op, a.inp, s);
  like_inp(op, "d_inp", a.d_inp, a.inp, s);
  like_inp(op, "d_out", a.d_out, a.inp, s);
  run(&Backend::gelu_backward, op, a, s);
}

void swiglu_forward(const SwigluForwardArgs& a, Stream& s) {
  const char* op = "swiglu_forward";
  floating_input(op, a.inp, s);
  swiglu_input(op, a.inp);
  swiglu_half(op, "out", a.out, a.inp, s);
  run(&Backend::swiglu_forward, op, a, s);
}

void swiglu_backward(const SwigluBackwardArgs& a, Stream& s) {
  const char* op = "swiglu_backward";
  floating_input(op, a.inp, s);
  swiglu_input(op, a.inp);
  like_inp(op, "d_inp", a.d_inp, a.inp, s);
  swiglu_half(op, "d_out", a.d_out, a.inp, s);
  run(&Backend::swiglu_backward, op, a, s);
}

}  // namespace strata::ops
