// Entry points of the elementwise ops: check every argument, then run the backend.
// Invariant: nothing reaches a backend before all checks pass; each error names the
// op and the argument.
#include "backend.h"
#include "check.h"

namespace strata::ops {

namespace {

// t has exactly ref's shape (not only its element count): elementwise ops never
// reinterpret a layout.
void same_shape(const char* op, const char* arg, const TensorView& t, const char* ref_arg,
                const TensorView& ref) {
  bool ok = t.ndim == ref.ndim;
  for (int i = 0; ok && i < t.ndim; ++i) ok = t.shape[i] == ref.shape[i];
  if (!ok) check::fail(op, arg, t, std::string("must have the shape of '") + ref_arg + "' " + ref.str());
}

}  // namespace

void add(const AddArgs& a, Stream& s) {
  const char* op = "add";
  check::present(op, "out", a.out, s);
  check::present(op, "a", a.a, s);
  check::present(op, "b", a.b, s);
  check::floating(op, "out", a.out);
  check::same_dtype(op, "a", a.a, "out", a.out);
  check::same_dtype(op, "b", a.b, "out", a.out);
  same_shape(op, "a", a.a, "out", a.out);
  same_shape(op, "b", a.b, "out", a.out);
  run(&Backend::add, op, a, s);
}

void scale(const ScaleArgs& a, Stream& s) {
  const char* op = "scale";
  check::present(op, "out", a.out, s);
  check::present(op, "inp", a.inp, s);
  check::floating(op, "out", a.out);
  check::same_dtype(op, "inp", a.inp, "out", a.out);
  same_shape(op, "inp", a.inp, "out", a.out);
  run(&Backend::scale, op, a, s);
}

void cast(const CastArgs& a, Stream& s) {
  const char* op = "cast";
  check::present(op, "out", a.out, s);
  check::present(op, "inp", a.inp, s);
  check::floating(op, "out", a.out);
  check::floating(op, "inp", a.inp);
  check::numel(op, "out", a.out, a.inp.numel());
  run(&Backend::cast, op, a, s);
}

void accumulate(const AccumulateArgs& a, Stream& s) {
  const char* op = "accumulate";
  check::present(op, "out", a.out, s);
  check::present(op, "inp", a.inp, s);
  check::floating(op, "inp", a.inp);
  if (a.out.dtype != DType::f32 && a.out.dtype != a.inp.dtype)
    check::fail(op, "out", a.out,
                std::string("must be f32 or the dtype of 'inp' (") + dtype_name(a.inp.dtype) + ")");
  same_shape(op, "inp", a.inp, "out", a.out);
  run(&Backend::accumulate, op, a, s);
}

void fill_zero(const TensorView& out, Stream& s) {
  const char* op = "fill_zero";
  check::present(op, "out", out, s);
  run(&Backend::fill_zero, op, out, s);
}

}  // namespace strata::ops
