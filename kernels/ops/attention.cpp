// Entry points of multi-head (and grouped-query) attention: every argument is checked
// here, then the backend runs. Invariant: the backend may assume qkv is
// (B, T, (NH + 2*NKV)*HD) with NH = n_heads >= 1 and NKV = n_kv_heads (0 taken as NH)
// dividing NH, out and d_out are (B, T, NH, HD), lse is (B, NH, T) f32, all
// activations share qkv's dtype, 0 <= dropout < 1, and window >= 0 (> 0 only when causal).
#include <cmath>

#include "backend.h"
#include "check.h"

namespace strata::ops {

namespace {

struct Dims {
  int64_t B, T, NH, NKV, HD;
  int64_t width() const { return (NH + 2 * NKV) * HD; }
};

Dims attention_dims(const char* op, const TensorView& qkv, int64_t n_heads, int64_t n_kv_heads, float dropout,
                    bool causal, int64_t window) {
  if (qkv.ndim != 3) check::fail(op, "qkv", qkv, "must be 3-D (B, T, (n_heads + 2*n_kv_heads)*head_dim)");
  if (n_heads < 1)
    check::fail(op, "n_heads", qkv, "is " + std::to_string(n_heads) + " for this qkv; it must be at least 1");
  const int64_t nkv = n_kv_heads == 0 ? n_heads : n_kv_heads;
  if (nkv < 1 || n_heads % nkv != 0)
    check::fail(op, "n_kv_heads", qkv,
                "is " + std::to_string(n_kv_heads) + "; it must divide n_heads = " + std::to_string(n_heads) +
                    " (or be 0 for n_heads)");
  const int64_t width = qkv.shape[2], heads = n_heads + 2 * nkv;
  if (width % heads != 0)
    check::fail(op, "qkv", qkv,
                "has a last dimension of " + std::to_string(width) + ", not divisible by n_heads + 2*n_kv_heads = " +
                    std::to_string(heads));
  if (!(dropout >= 0.0f && dropout < 1.0f))
    check::fail(op, "dropout", qkv, "is " + std::to_string(dropout) + "; it must be in [0, 1)");
  if (window < 0 || (window > 0 && !causal))
    check::fail(op, "window", qkv,
                "is " + std::to_string(window) + (window < 0 ? "; it must be >= 0 (0: no sliding window)"
                                                             : " with causal = false; a sliding window needs causal attention"));
  return {qkv.shape[0], qkv.shape[1], n_heads, nkv, width / heads};
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
  Dims d = attention_dims(op, a.qkv, a.n_heads, a.n_kv_heads, a.dropout, a.causal, a.window);
  check::shape(op, "out", a.out, {d.B, d.T, d.NH, d.HD});
  check::shape(op, "lse", a.lse, {d.B, d.NH, d.T});
  run(&Backend::attention_forward, op, a, s);
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
  Dims d = attention_dims(op, a.qkv, a.n_heads, a.n_kv_heads, a.dropout, a.causal, a.window);
  check::shape(op, "d_qkv", a.d_qkv, {d.B, d.T, d.width()});
  check::shape(op, "d_out", a.d_out, {d.B, d.T, d.NH, d.HD});
  check::shape(op, "out", a.out, {d.B, d.T, d.NH, d.HD});
  check::shape(op, "lse", a.lse, {d.B, d.NH, d.T});
  if (a.d_qkv.data == a.qkv.data)
    check::fail(op, "d_qkv", a.d_qkv, "aliases qkv; backward reads qkv while writing d_qkv: pass separate memory");
  run(&Backend::attention_backward, op, a, s);
}

}  // namespace strata::ops
