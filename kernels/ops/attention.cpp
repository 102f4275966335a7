// Entry points of multi-head attention: every argument is checked here, then the
// backend runs. Invariant: the backend may assume qkv is (B, T, 3*NH*HD) with
// NH = n_heads >= 1, out and d_out are (B, T, NH, HD), lse is (B, NH, T) f32, all
// activations share qkv's dtype, and 0 <= dropout < 1.
#include <cmath>

#include "backend.h"
#include "check.h"
#include "cpu/cpu.h"

namespace strata::ops {

namespace {

struct Dims {
  int64_t B, T, NH, HD;
};

Dims attention_dims(const char* op, const TensorView& qkv, int64_t n_heads, float dropout) {
  if (qkv.ndim != 3) check::fail(op, "qkv", qkv, "must be 3-D (B, T, 3*n_heads*head_dim)");
  if (n_heads < 1)
    check::fail(op, "n_heads", qkv, "is " + std::to_string(n_heads) + " for this qkv; it must be at least 1");
  const int64_t width = qkv.shape[2];
  if (width % (3 * n_heads) != 0)
    check::fail(op, "qkv", qkv,
                "has a last dimension of " + std::to_string(width) + ", not divisible by 3 * n_heads = " +
                    std::to_string(3 * n_heads));
  if (!(dropout >= 0.0f && dropout < 1.0f))
    check::fail(op, "dropout", qkv, "is " + std::to_string(dropout) + "; it must be in [0, 1)");
  return {qkv.shape[0], qkv.shape[1], n_heads, width / (3 * n_heads)};
}

}  // namespace

void attention_forward(const AttentionForwardArgs& a, Stream& s) {
  const char* op = "attention_forward";
  check::present(op, "out", a.out, s);
  check::present(op, "lse", a.lse, s);
  check::present(op, "qkv", a.qkv, s);
  check::floating(op, "qkv", a.qkv);
  check::same_dtype(op, "out", a.out, "qkv", a.qkv);
  check::dtype(op, "lse", a.lse, {DType::f32});
  Dims d = attention_dims(op, a.qkv, a.n_heads, a.dropout);
  check::shape(op, "out", a.out, {d.B, d.T, d.NH, d.HD});
  check::shape(op, "lse", a.lse, {d.B, d.NH, d.T});
  check::require_backend(op, s);
  STRATA_CUDA_OP(s, cuda::attention_forward(a, cuda::context(s)));
  cpu::attention_forward(a);
}

void attention_backward(const AttentionBackwardArgs& a, Stream& s) {
  const char* op = "attention_backward";
  check::present(op, "d_qkv", a.d_qkv, s);
  check::present(op, "d_out", a.d_out, s);
  check::present(op, "qkv", a.qkv, s);
  check::present(op, "out", a.out, s);
  check::present(op, "lse", a.lse, s);
  check::floating(op, "qkv", a.qkv);
  check::same_dtype(op, "d_qkv", a.d_qkv, "qkv", a.qkv);
  check::same_dtype(op, "d_out", a.d_out, "qkv", a.qkv);
  check::same_dtype(op, "out", a.out, "qkv", a.qkv);
  check::dtype(op, "lse", a.lse, {DType::f32});
  Dims d = attention_dims(op, a.qkv, a.n_heads, a.dropout);
  check::shape(op, "d_qkv", a.d_qkv, {d.B, d.T, 3 * d.NH * d.HD});
  check::shape(op, "d_out", a.d_out, {d.B, d.T, d.NH, d.HD});
  check::shape(op, "out", a.out, {d.B, d.T, d.NH, d.HD});
  check::shape(op, "lse", a.lse, {d.B, d.NH, d.T});
  if (a.d_qkv.data == a.qkv.data)
    check::fail(op, "d_qkv", a.d_qkv, "aliases qkv; backward reads qkv while writing d_qkv: pass separate memory");
  check::require_backend(op, s);
  STRATA_CUDA_OP(s, cuda::attention_backward(a, cuda::context(s)));
  cpu::attention_backward(a);
}

}  // namespace strata::ops
