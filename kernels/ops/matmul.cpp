// Entry points of matmul_forward / matmul_backward: every argument is checked here,
// before any backend runs, so a kernel never sees a shape it was not written for.
// Leading dimensions of inp / out / d_out flatten into N rows; only the row counts
// and the last dimensions must agree (out / d_out may be wider than OC when padded:
// backends take their row stride from the last dimension).
#include "backend.h"
#include "check.h"

namespace strata::ops {

namespace {

// The weight is (OC, IC): returns OC and IC after checking it is 2-D.
void weight_dims(const char* op, const TensorView& w, int64_t& oc, int64_t& ic) {
  if (w.ndim != 2) check::fail(op, "weight", w, "must be 2-D (OC, IC)");
  oc = w.shape[0];
  ic = w.shape[1];
}

// t is (..., cols) with `rows` rows in all; padded: (..., at least cols).
void rows_cols(const char* op, const char* arg, const TensorView& t, int64_t rows, int64_t cols,
               const char* rows_from, bool padded = false) {
  if (padded ? check::last_dim(t) < cols : check::last_dim(t) != cols)
    check::fail(op, arg, t,
                std::string(padded ? "must have last dimension at least " : "must have last dimension ") +
                    std::to_string(cols) + (padded ? " (a padded row stride)" : ""));
  if (check::rows(t) != rows)
    check::fail(op, arg, t,
                "must have " + std::to_string(rows) + " rows (the rows of '" + rows_from + "')");
}

// A gradient of a parameter: the parameter's dtype, or f32 for f32 accumulation.
void param_grad_dtype(const char* op, const char* arg, const TensorView& g, const TensorView& w) {
  if (w.dtype == DType::f32)
    check::same_dtype(op, arg, g, "weight", w);
  else
    check::dtype(op, arg, g, {w.dtype, DType::f32});
}

}  // namespace

void matmul_forward(const MatmulForwardArgs& a, Stream& s) {
  const char* op = "matmul_forward";
  check::present(op, "out", a.out, s);
  check::present(op, "inp", a.inp, s);
  check::present(op, "weight", a.weight, s);
  check::floating(op, "weight", a.weight);
  check::same_dtype(op, "inp", a.inp, "weight", a.weight);
  check::same_dtype(op, "out", a.out, "weight", a.weight);
  int64_t oc, ic;
  weight_dims(op, a.weight, oc, ic);
  if (check::last_dim(a.inp) != ic)
    check::fail(op, "inp", a.inp,
                "must have last dimension IC = " + std::to_string(ic) + " (weight is (OC, IC))");
  rows_cols(op, "out", a.out, check::rows(a.inp), oc, "inp", a.out_padded);
  if (a.out_padded && a.gelu_pre.defined())
    check::fail(op, "gelu_pre", a.gelu_pre, "cannot be used with out_padded: pad only a plain GEMM's output");
  if (a.bias.defined()) {
    check::present(op, "bias", a.bias, s);
    check::same_dtype(op, "bias", a.bias, "weight", a.weight);
    check::shape(op, "bias", a.bias, {oc});
  }
  if (check::overlaps(a.out, a.inp)) check::fail(op, "out", a.out, "overlaps 'inp': matmul cannot run in place");
  if (check::overlaps(a.out, a.weight)) check::fail(op, "out", a.out, "overlaps 'weight'");
  if (a.gelu_pre.defined()) {
    check::present(op, "gelu_pre", a.gelu_pre, s);
    check::same_dtype(op, "gelu_pre", a.gelu_pre, "weight", a.weight);
    rows_cols(op, "gelu_pre", a.gelu_pre, check::rows(a.inp), oc, "inp");
    if (check::overlaps(a.gelu_pre, a.out) || check::overlaps(a.gelu_pre, a.inp) ||
        check::overlaps(a.gelu_pre, a.weight))
      check::fail(op, "gelu_pre", a.gelu_pre, "overlaps 'out', 'inp' or 'weight': it needs its own memory");
  }
  run(&Backend::matmul_forward, op, a, s);
}

void matmul_backward(const MatmulBackwardArgs& a, Stream& s) {
  const char* op = "matmul_backward";
  check::present(op, "d_out", a.d_out, s);
  check::present(op, "inp", a.inp, s);
  check::present(op, "weight", a.weight, s);
  check::floating(op, "weight", a.weight);
  check::same_dtype(op, "inp", a.inp, "weight", a.weight);
  check::same_dtype(op, "d_out", a.d_out, "weight", a.weight);
  int64_t oc, ic;
  weight_dims(op, a.weight, oc, ic);
  if (check::last_dim(a.inp) != ic)
    check::fail(op, "inp", a.inp,
                "must have last dimension IC = " + std::to_string(ic) + " (weight is (OC, IC))");
  const int64_t n = check::rows(a.inp);
  rows_cols(op, "d_out", a.d_out, n, oc, "inp", a.d_out_padded);
  if (a.d_out_padded && a.d_bias.defined())
    check::fail(op, "d_bias", a.d_bias, "cannot be used with d_out_padded: the bias gradient reads d_out unpadded");
  if (a.d_inp.defined()) {
    check::present(op, "d_inp", a.d_inp, s);
    check::same_dtype(op, "d_inp", a.d_inp, "weight", a.weight);
    rows_cols(op, "d_inp", a.d_inp, n, ic, "inp");
    if (check::overlaps(a.d_inp, a.d_out)) check::fail(op, "d_inp", a.d_inp, "overlaps 'd_out'");
    if (check::overlaps(a.d_inp, a.weight)) check::fail(op, "d_inp", a.d_inp, "overlaps 'weight'");
  }
  if (a.d_weight.defined()) {
    check::present(op, "d_weight", a.d_weight, s);
    param_grad_dtype(op, "d_weight", a.d_weight, a.weight);
    check::shape(op, "d_weight", a.d_weight, {oc, ic});
  }
  if (a.d_bias.defined()) {
    check::present(op, "d_bias", a.d_bias, s);
    param_grad_dtype(op, "d_bias", a.d_bias, a.weight);
    check::shape(op, "d_bias", a.d_bias, {oc});
  }
  run(&Backend::matmul_backward, op, a, s);
}

}  // namespace strata::ops
