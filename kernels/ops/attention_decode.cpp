// Entry point of attention_decode (attention of new rows against a KV cache): every
// argument is checked here, before anything runs, then the backend is called.
// Invariant: nothing after the checks may throw.
#include "backend.h"
#include "check.h"

namespace strata::ops {

void attention_decode(const AttentionDecodeArgs& a, Stream& s) {
  const char* op = "attention_decode";
  check::present(op, "out", a.out, s);
  check::present(op, "qkv", a.qkv, s);
  check::present(op, "k_cache", a.k_cache, s);
  check::present(op, "v_cache", a.v_cache, s);
  check::floating(op, "qkv", a.qkv);
  check::same_dtype(op, "out", a.out, "qkv", a.qkv);
  check::same_dtype(op, "k_cache", a.k_cache, "qkv", a.qkv);
  check::same_dtype(op, "v_cache", a.v_cache, "qkv", a.qkv);
  if (a.k_cache.ndim != 4) check::fail(op, "k_cache", a.k_cache, "must be 4-D (B, NKV, S, HD)");
  const int64_t B = a.k_cache.shape[0], NKV = a.k_cache.shape[1], S = a.k_cache.shape[2], HD = a.k_cache.shape[3];
  check::shape(op, "v_cache", a.v_cache, {B, NKV, S, HD});
  if (a.n_heads < 1 || a.n_heads % NKV != 0)
    check::fail(op, "n_heads", a.k_cache,
                "is " + std::to_string(a.n_heads) + "; it must be a positive multiple of the cache's kv heads " +
                    std::to_string(NKV));
  if (a.qkv.ndim != 3 || a.qkv.shape[0] != B) check::fail(op, "qkv", a.qkv, "must be 3-D (B, T, (NH + 2*NKV) * HD)");
  const int64_t T = a.qkv.shape[1];
  check::shape(op, "qkv", a.qkv, {B, T, (a.n_heads + 2 * NKV) * HD});
  check::shape(op, "out", a.out, {B, T, a.n_heads, HD});
  if (a.window < 0)
    check::fail(op, "window", a.k_cache, "is " + std::to_string(a.window) + "; it must be >= 0 (0: no sliding window)");
  if (a.pos < 0 || a.pos + T > S)
    check::fail(op, "pos", a.k_cache,
                "is " + std::to_string(a.pos) + " for " + std::to_string(T) + " new rows; pos + T must be at most the cache's " +
                    std::to_string(S) + " positions");
  run(&Backend::attention_decode, op, a, s);
}

}  // namespace strata::ops
