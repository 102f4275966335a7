// Entry points of norm_forward / norm_backward (LayerNorm and RMSNorm) and of the
// residual-fused residual_norm_forward / residual_norm_backward: every argument is
// checked here, before anything runs, then the backend is called.
// Invariant: nothing after the checks may throw.
#include <cmath>

#include "backend.h"
#include "check.h"

namespace strata::ops {

namespace {

// inp and t are (N, C) matrices: same last dimension and element count.
void same_rows(const char* op, const char* arg, const TensorView& t, const TensorView& inp,
               const char* inp_arg = "inp") {
  if (check::last_dim(t) != check::last_dim(inp) || t.numel() != inp.numel())
    check::fail(op, arg, t, std::string("must have the rows and columns of '") + inp_arg + "' " + inp.str());
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

// Returns N, the number of rows of inp (named inp_arg).
int64_t check_inp_weight(const char* op, const char* inp_arg, const TensorView& inp, const TensorView& weight,
                         const Stream& s) {
  check::present(op, inp_arg, inp, s);
  check::floating(op, inp_arg, inp);
  check::present(op, "weight", weight, s);
  check::same_dtype(op, "weight", weight, inp_arg, inp);
  check::shape(op, "weight", weight, {check::last_dim(inp)});
  return check::rows(inp);
}

// The checks of a norm forward whose input is `inp`, named inp_arg (norm_forward's
// inp, or residual_norm_forward's x, which fixes the shape and dtype of the sum).
void check_forward(const char* op, const char* inp_arg, const TensorView& out, const TensorView& mean,
                   const TensorView& rstd, const TensorView& inp, const TensorView& weight, const TensorView& bias,
                   float eps, bool rms, const Stream& s) {
  const int64_t n = check_inp_weight(op, inp_arg, inp, weight, s);
  check::present(op, "out", out, s);
  check::same_dtype(op, "out", out, inp_arg, inp);
  same_rows(op, "out", out, inp, inp_arg);
  row_stat(op, "rstd", rstd, n, s);
  if (rms) {
    absent_for_rms(op, "mean", mean);
    absent_for_rms(op, "bias", bias);
  } else {
    row_stat(op, "mean", mean, n, s);
    if (bias.defined()) {
      check::present(op, "bias", bias, s);
      check::same_dtype(op, "bias", bias, inp_arg, inp);
      check::shape(op, "bias", bias, {check::last_dim(inp)});
    }
  }
  if (!(eps >= 0.0f) || !std::isfinite(eps))
    STRATA_FAIL(op << ": argument 'eps' is " << eps << ", expected a finite value >= 0 (e.g. 1e-5)");
}

// The checks of a norm backward; `d_inp_arg` names the assigned input gradient.
void check_backward(const char* op, const char* d_inp_arg, const TensorView& d_inp, const TensorView& d_weight,
                    const TensorView& d_bias, const TensorView& d_out, const TensorView& inp,
                    const TensorView& weight, const TensorView& mean, const TensorView& rstd, bool rms,
                    const Stream& s) {
  const int64_t n = check_inp_weight(op, "inp", inp, weight, s);
  const int64_t c = check::last_dim(inp);
  check::present(op, d_inp_arg, d_inp, s);
  check::same_dtype(op, d_inp_arg, d_inp, "inp", inp);
  same_rows(op, d_inp_arg, d_inp, inp);
  check::present(op, "d_out", d_out, s);
  check::same_dtype(op, "d_out", d_out, "inp", inp);
  same_rows(op, "d_out", d_out, inp);
  check::present(op, "d_weight", d_weight, s);
  check::dtype(op, "d_weight", d_weight, {weight.dtype, DType::f32});
  check::shape(op, "d_weight", d_weight, {c});
  row_stat(op, "rstd", rstd, n, s);
  if (rms) {
    absent_for_rms(op, "mean", mean);
    absent_for_rms(op, "d_bias", d_bias);
  } else {
    row_stat(op, "mean", mean, n, s);
    if (d_bias.defined()) {
      check::present(op, "d_bias", d_bias, s);
      check::dtype(op, "d_bias", d_bias, {weight.dtype, DType::f32});
      check::shape(op, "d_bias", d_bias, {c});
    }
  }
}

// An elementwise in-place alias (same start) is fine; any other overlap is not.
bool partial_overlap(const TensorView& a, const TensorView& b) {
  return a.data != b.data && check::overlaps(a, b);
}

}  // namespace

void norm_forward(const NormForwardArgs& a, Stream& s) {
  const char* op = "norm_forward";
  check_forward(op, "inp", a.out, a.mean, a.rstd, a.inp, a.weight, a.bias, a.eps, a.rms, s);
  run(&Backend::norm_forward, op, a, s);
}

void norm_backward(const NormBackwardArgs& a, Stream& s) {
  const char* op = "norm_backward";
  check_backward(op, "d_inp", a.d_inp, a.d_weight, a.d_bias, a.d_out, a.inp, a.weight, a.mean, a.rstd, a.rms, s);
  run(&Backend::norm_backward, op, a, s);
}

void residual_norm_forward(const ResidualNormForwardArgs& a, Stream& s) {
  const char* op = "residual_norm_forward";
  check_forward(op, "x", a.out, a.mean, a.rstd, a.x, a.weight, a.bias, a.eps, a.rms, s);
  check::present(op, "y", a.y, s);
  check::same_dtype(op, "y", a.y, "x", a.x);
  same_rows(op, "y", a.y, a.x, "x");
  check::present(op, "res_out", a.res_out, s);
  check::same_dtype(op, "res_out", a.res_out, "x", a.x);
  same_rows(op, "res_out", a.res_out, a.x, "x");
  if (partial_overlap(a.res_out, a.x) || partial_overlap(a.res_out, a.y))
    check::fail(op, "res_out", a.res_out, "overlaps 'x' or 'y' without being the same tensor");
  if (check::overlaps(a.out, a.res_out) || check::overlaps(a.out, a.x) || check::overlaps(a.out, a.y))
    check::fail(op, "out", a.out, "overlaps 'res_out', 'x' or 'y': out needs its own memory");
  run(&Backend::residual_norm_forward, op, a, s);
}

void residual_norm_backward(const ResidualNormBackwardArgs& a, Stream& s) {
  const char* op = "residual_norm_backward";
  check_backward(op, "d_res", a.d_res, a.d_weight, a.d_bias, a.d_out, a.inp, a.weight, a.mean, a.rstd, a.rms, s);
  check::present(op, "d_resid", a.d_resid, s);
  check::same_dtype(op, "d_resid", a.d_resid, "inp", a.inp);
  same_rows(op, "d_resid", a.d_resid, a.inp);
  if (partial_overlap(a.d_res, a.d_resid))
    check::fail(op, "d_res", a.d_res, "overlaps 'd_resid' without being the same tensor");
  if (check::overlaps(a.d_res, a.d_out) || check::overlaps(a.d_res, a.inp))
    check::fail(op, "d_res", a.d_res, "overlaps 'd_out' or 'inp': d_res may alias only 'd_resid'");
  run(&Backend::residual_norm_backward, op, a, s);
}

}  // namespace strata::ops
