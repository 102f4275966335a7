// Entry points of norm_forward / norm_backward (LayerNorm and RMSNorm): every
// argument is checked here, before anything runs, then the backend is called.
// Invariant: nothing after the checks may throw.
#include <cmath>

#include "../cpu/cpu.h"
#include "backend.h"
#include "check.h"

namespace strata::ops {

namespace {

// inp and t are (N, C) matrices: same last dimension and element count.
void same_rows(const char* op, const char* arg, const TensorView& t, const TensorView& inp) {
  if (check::last_dim(t) != check::last_dim(inp) || t.numel() != inp.numel())
    check::fail(op, arg, t, "must have the rows and columns of 'inp' " + inp.str());
}

// mean / rstd: one f32 per row.
void row_stat(const char* op, const char* arg, const TensorView& t, int64_t n, const Stream& s) {
  check::present(op, arg, t, s);
  check::dtype(op, arg, t, {DType::f32});
  check::numel(op, arg, t, n);
}

void absent_for_rms(const char* op, const char* arg, const TensorView& t) {
  if (t.defined()) check::fail(op, arg, t, "must be undefined for RMSNorm (rms = true)");
}

// Returns N, the number of rows of inp.
int64_t check_inp_weight(const char* op, const TensorView& inp, const TensorView& weight,
                         const Stream& s) {
  check::present(op, "inp", inp, s);
  check::floating(op, "inp", inp);
  check::present(op, "weight", weight, s);
  check::same_dtype(op, "weight", weight, "inp", inp);
  check::shape(op, "weight", weight, {check::last_dim(inp)});
  return check::rows(inp);
}

}  // namespace

void norm_forward(const NormForwardArgs& a, Stream& s) {
  const char* op = "norm_forward";
  const int64_t n = check_inp_weight(op, a.inp, a.weight, s);
  check::present(op, "out", a.out, s);
  check::same_dtype(op, "out", a.out, "inp", a.inp);
  same_rows(op, "out", a.out, a.inp);
  row_stat(op, "rstd", a.rstd, n, s);
  if (a.rms) {
    absent_for_rms(op, "mean", a.mean);
    absent_for_rms(op, "bias", a.bias);
  } else {
    row_stat(op, "mean", a.mean, n, s);
    if (a.bias.defined()) {
      check::present(op, "bias", a.bias, s);
      check::same_dtype(op, "bias", a.bias, "inp", a.inp);
      check::shape(op, "bias", a.bias, {check::last_dim(a.inp)});
    }
  }
  if (!(a.eps >= 0.0f) || !std::isfinite(a.eps))
    STRATA_FAIL(op << ": argument 'eps' is " << a.eps << ", expected a finite value >= 0 (e.g. 1e-5)");
  check::require_backend(op, s);
  STRATA_CUDA_OP(s, cuda::norm_forward(a, cuda::context(s)));
  cpu::norm_forward(a);
}

void norm_backward(const NormBackwardArgs& a, Stream& s) {
  const char* op = "norm_backward";
  const int64_t n = check_inp_weight(op, a.inp, a.weight, s);
  const int64_t c = check::last_dim(a.inp);
  check::present(op, "d_inp", a.d_inp, s);
  check::same_dtype(op, "d_inp", a.d_inp, "inp", a.inp);
  same_rows(op, "d_inp", a.d_inp, a.inp);
  check::present(op, "d_out", a.d_out, s);
  check::same_dtype(op, "d_out", a.d_out, "inp", a.inp);
  same_rows(op, "d_out", a.d_out, a.inp);
  check::present(op, "d_weight", a.d_weight, s);
  check::dtype(op, "d_weight", a.d_weight, {a.weight.dtype, DType::f32});
  check::shape(op, "d_weight", a.d_weight, {c});
  row_stat(op, "rstd", a.rstd, n, s);
  if (a.rms) {
    absent_for_rms(op, "mean", a.mean);
    absent_for_rms(op, "d_bias", a.d_bias);
  } else {
    row_stat(op, "mean", a.mean, n, s);
    if (a.d_bias.defined()) {
      check::present(op, "d_bias", a.d_bias, s);
      check::dtype(op, "d_bias", a.d_bias, {a.weight.dtype, DType::f32});
      check::shape(op, "d_bias", a.d_bias, {c});
    }
  }
  check::require_backend(op, s);
  STRATA_CUDA_OP(s, cuda::norm_backward(a, cuda::context(s)));
  cpu::norm_backward(a);
}

}  // namespace strata::ops
