// Op-table cases for the padded vocabulary (matmul out_padded / d_out_padded,
// cross-entropy vocab): each padded op against the same op unpadded, on the same
// inputs. Shapes are {N, IC, OC} for matmul and {N, V} for cross-entropy; the row
// stride is OC (or V) rounded up to a multiple of 64, as the head uses it.
// Invariant: padded and unpadded results are compared bit for bit (the padding only
// changes a row stride, never a sum), and the padding is filled with NaN so that any
// read of it shows; what the ops write there is checked exactly (untouched, or 0).
#include <catch2/catch.hpp>
#include <cmath>

#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {
namespace {

using Catch::Contains;

int64_t round_up_64(int64_t v) { return (v + 63) / 64 * 64; }

// A (rows, cols_padded) copy of t (rows, cols), the padding columns set to `pad`.
HostTensor padded_copy(const HostTensor& t, int64_t cols_padded, double pad) {
  const int64_t rows = t.shape()[0], cols = t.shape()[1];
  HostTensor p(t.dtype(), {rows, cols_padded});
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols_padded; ++j) p.set(r * cols_padded + j, j < cols ? t.get(r * cols + j) : pad);
  return p;
}

// Columns [0, cols) of padded (rows, cols_padded) equal want (rows, cols) bit for bit
// (NaN meets NaN), and every padding column holds `pad` (NaN: stays NaN). 1-D
// tensors are (rows, 1).
void expect_padded(const std::string& what, const HostTensor& padded, const HostTensor& want, double pad) {
  auto cols_of = [](const HostTensor& t) { return t.shape().size() > 1 ? t.shape()[1] : int64_t(1); };
  const int64_t rows = want.shape()[0], cols = cols_of(want), cols_padded = cols_of(padded);
  int64_t bad_real = 0, bad_pad = 0;
  auto same = [](double a, double b) {
    return (std::isnan(a) && std::isnan(b)) || (a == b && std::signbit(a) == std::signbit(b));
  };
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols_padded; ++j) {
      const double got = padded.get(r * cols_padded + j);
      if (j < cols) bad_real += !same(got, want.get(r * cols + j));
      else bad_pad += !same(got, pad);
    }
  INFO(what << ": " << shape_str(padded.shape()) << " against " << shape_str(want.shape()));
  CHECK(bad_real == 0);
  CHECK(bad_pad == 0);
}

// out (N, OCp) with out_padded: the real columns are bitwise the unpadded GEMM's,
// the padding is left as it was (NaN here), with and without a bias.
void run_matmul_forward(DType dtype, const std::vector<int64_t>& shape) {
  const int64_t n = shape[0], ic = shape[1], oc = shape[2], ocp = round_up_64(oc);
  HostTensor inp(dtype, {n, ic}), weight(dtype, {oc, ic}), bias(dtype, {oc});
  inp.uniform(1), weight.uniform(2, -0.2, 0.2), bias.uniform(3);
  for (bool with_bias : {false, true}) {
    HostTensor want(dtype, {n, oc});
    const TensorView b = with_bias ? bias.view() : TensorView();
    ops::matmul_forward({want.view(), inp.view(), weight.view(), b}, cpu().stream());
    HostTensor got(dtype, {n, ocp});
    got.fill(NAN);
    ops::MatmulForwardArgs a{got.view(), inp.view(), weight.view(), b};
    a.out_padded = true;
    ops::matmul_forward(a, cpu().stream());
    expect_padded(with_bias ? "out with bias" : "out", got, want, NAN);
  }
}

// d_out (N, OCp) with d_out_padded, NaN in the padding: d_inp and d_weight (in the
// weight's dtype and in f32) are bitwise the unpadded ones, so the padding is never read.
void run_matmul_backward(DType dtype, const std::vector<int64_t>& shape) {
  const int64_t n = shape[0], ic = shape[1], oc = shape[2], ocp = round_up_64(oc);
  HostTensor inp(dtype, {n, ic}), weight(dtype, {oc, ic}), d_out(dtype, {n, oc});
  inp.uniform(4), weight.uniform(5, -0.2, 0.2), d_out.uniform(6);
  const HostTensor d_out_padded = padded_copy(d_out, ocp, NAN);
  for (DType gdt : {dtype, DType::f32}) {
    HostTensor d_inp_want(dtype, {n, ic}), d_w_want(gdt, {oc, ic});
    d_w_want.uniform(7);
    HostTensor d_inp_got = d_inp_want, d_w_got = d_w_want;
    ops::matmul_backward({d_inp_want.view(), d_w_want.view(), {}, d_out.view(), inp.view(), weight.view()},
                         cpu().stream());
    ops::MatmulBackwardArgs a{d_inp_got.view(), d_w_got.view(), {}, d_out_padded.view(), inp.view(), weight.view()};
    a.d_out_padded = true;
    ops::matmul_backward(a, cpu().stream());
    expect_padded("d_inp", d_inp_got, d_inp_want, 0);
    expect_padded("d_weight", d_w_got, d_w_want, 0);
  }
}

// logits (N, Vp) with vocab = V, NaN in the padding: losses and lse bitwise the
// unpadded ones (the padding carries no probability mass); d_logits real columns
// bitwise, padding assigned exactly 0 — in a separate buffer and in place.
void run_cross_entropy(DType dtype, const std::vector<int64_t>& shape) {
  const int64_t n = shape[0], v = shape[1], vp = round_up_64(v);
  HostTensor logits(dtype, {n, v}), targets(DType::i32, {n});
  logits.uniform(8, -6.0, 6.0);
  targets.tokens(9, int32_t(v));
  if (n > 2) targets.set(1, -100);
  targets.set(0, int32_t(v - 1));  // the last real column: next to the padding
  HostTensor losses(DType::f32, {n}), lse(DType::f32, {n}), d_logits(dtype, {n, v});
  ops::cross_entropy_forward({losses.view(), lse.view(), logits.view(), targets.view()}, cpu().stream());
  ops::cross_entropy_backward({d_logits.view(), logits.view(), lse.view(), targets.view(), 0.3f}, cpu().stream());

  const HostTensor logits_p = padded_copy(logits, vp, NAN);
  HostTensor losses_p(DType::f32, {n}), lse_p(DType::f32, {n}), d_logits_p(dtype, {n, vp});
  d_logits_p.fill(5.0);
  ops::CrossEntropyForwardArgs f{losses_p.view(), lse_p.view(), logits_p.view(), targets.view()};
  f.vocab = v;
  ops::cross_entropy_forward(f, cpu().stream());
  expect_padded("losses", losses_p, losses, 0);  // 1-D: (N, 1) without padding
  expect_padded("lse", lse_p, lse, 0);
  ops::CrossEntropyBackwardArgs b{d_logits_p.view(), logits_p.view(), lse_p.view(), targets.view(), 0.3f};
  b.vocab = v;
  ops::cross_entropy_backward(b, cpu().stream());
  expect_padded("d_logits", d_logits_p, d_logits, 0.0);
  HostTensor inplace = logits_p;
  b.d_logits = inplace.view(), b.logits = inplace.view();
  ops::cross_entropy_backward(b, cpu().stream());
  expect_padded("d_logits in place", inplace, d_logits, 0.0);
}

const std::vector<std::vector<int64_t>> kMatmulShapes = {{1, 1, 1}, {5, 7, 19}, {33, 64, 100}, {70, 130, 257}};
const std::vector<std::vector<int64_t>> kCeShapes = {{1, 1}, {3, 17}, {6, 1000}, {4, 3000}};

STRATA_OP_CASE({"matmul_forward", CaseKind::reference, kMatmulShapes, kAllFloat, run_matmul_forward});
STRATA_OP_CASE({"matmul_backward", CaseKind::reference, kMatmulShapes, kAllFloat, run_matmul_backward});
STRATA_OP_CASE({"cross_entropy_forward", CaseKind::reference, kCeShapes, kAllFloat, run_cross_entropy});

STRATA_OP_CASE({"matmul_forward", CaseKind::errors, {{4, 3, 5}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const int64_t n = shape[0], ic = shape[1], oc = shape[2];
                  HostTensor inp(dtype, {n, ic}), weight(dtype, {oc, ic}), out(dtype, {n, 64}), pre(dtype, {n, 64});
                  Stream& s = cpu().stream();
                  ops::MatmulForwardArgs a{out.view(), inp.view(), weight.view(), {}};
                  // Wider than OC only when padded.
                  REQUIRE_THROWS_WITH(ops::matmul_forward(a, s),
                                      Contains("matmul_forward") && Contains("out") && Contains("last dimension 5"));
                  a.out_padded = true;
                  REQUIRE_NOTHROW(ops::matmul_forward(a, s));
                  a.out = HostTensor(dtype, {n, oc - 1}).view();
                  REQUIRE_THROWS_WITH(ops::matmul_forward(a, s),
                                      Contains("out") && Contains("at least 5") && Contains("padded"));
                  a.out = out.view(), a.gelu_pre = pre.view();
                  REQUIRE_THROWS_WITH(ops::matmul_forward(a, s), Contains("gelu_pre") && Contains("out_padded"));

                  HostTensor d_out(dtype, {n, 64}), d_bias(dtype, {oc});
                  ops::MatmulBackwardArgs b{{}, {}, d_bias.view(), d_out.view(), inp.view(), weight.view()};
                  b.d_out_padded = true;
                  REQUIRE_THROWS_WITH(ops::matmul_backward(b, s), Contains("d_bias") && Contains("d_out_padded"));
                }});

STRATA_OP_CASE({"cross_entropy_forward", CaseKind::errors, {{3, 5}}, kF32,
                [](DType dtype, const std::vector<int64_t>& shape) {
                  const int64_t n = shape[0], v = shape[1];
                  HostTensor logits(dtype, {n, 64}), losses(DType::f32, {n}), lse(DType::f32, {n});
                  HostTensor targets(DType::i32, {n});
                  targets.tokens(10, int32_t(v));
                  Stream& s = cpu().stream();
                  ops::CrossEntropyForwardArgs a{losses.view(), lse.view(), logits.view(), targets.view()};
                  a.vocab = v;
                  REQUIRE_NOTHROW(ops::cross_entropy_forward(a, s));
                  for (int64_t vocab : {int64_t(65), int64_t(-1)}) {
                    a.vocab = vocab;
                    REQUIRE_THROWS_WITH(ops::cross_entropy_forward(a, s),
                                        Contains("cross_entropy_forward") && Contains("vocab = " + std::to_string(vocab)));
                  }
                  // A target in the padding is out of the vocabulary, rejected before writing.
                  a.vocab = v;
                  losses.fill(123.0);
                  targets.set(2, int32_t(v));
                  REQUIRE_THROWS_WITH(ops::cross_entropy_forward(a, s),
                                      Contains("targets") && Contains("target 5") && Contains("V = 5"));
                  HostTensor d_logits(dtype, {n, 64});
                  ops::CrossEntropyBackwardArgs b{d_logits.view(), logits.view(), lse.view(), targets.view()};
                  b.vocab = v;
                  REQUIRE_THROWS_WITH(ops::cross_entropy_backward(b, s),
                                      Contains("cross_entropy_backward") && Contains("V = 5"));
                  b.d_logits = HostTensor(dtype, {n, v}).view();  // d_logits is as wide as logits
                  REQUIRE_THROWS_WITH(ops::cross_entropy_backward(b, s), Contains("d_logits"));
                  for (int64_t r = 0; r < n; ++r) CHECK(losses.get(r) == 123.0);
                }});

}  // namespace
}  // namespace strata::test
