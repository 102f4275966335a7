// Entry points of rope_forward / rope_backward: every argument is checked here,
// before anything runs, then the backend is called.
// Invariant: nothing after the checks may throw.
#include <cmath>

#include "backend.h"
#include "check.h"

namespace strata::ops {

namespace {

void check_rope(const char* op, const RopeArgs& a, const Stream& s) {
  check::present(op, "inp", a.inp, s);
  check::floating(op, "inp", a.inp);
  if (a.inp.ndim != 4) check::fail(op, "inp", a.inp, "must be 4-D (B, T, H, D)");
  const int64_t heads = a.inp.shape[2], d = a.inp.shape[3];
  if (d % 2) check::fail(op, "inp", a.inp, "must have an even head size D (pairs i, i + D/2)");
  check::present(op, "out", a.out, s);
  check::same_dtype(op, "out", a.out, "inp", a.inp);
  check::shape(op, "out", a.out, {a.inp.shape[0], a.inp.shape[1], heads, d});
  if (a.rotated_heads < 1 || a.rotated_heads > heads)
    STRATA_FAIL(op << ": argument 'rotated_heads' is " << a.rotated_heads << ", expected 1 to H = "
                   << heads << " (2*NH rotates q and k of a packed qkv)");
  if (!(a.theta > 0.0f) || !std::isfinite(a.theta))
    STRATA_FAIL(op << ": argument 'theta' is " << a.theta << ", expected a finite value > 0 (e.g. 10000)");
  if (a.pos_offset < 0)
    STRATA_FAIL(op << ": argument 'pos_offset' is " << a.pos_offset << ", expected >= 0");
  const RopeScalingArgs& sc = a.scaling;
  if (sc.type != RopeScalingType::none && !(sc.factor > 0.0f && std::isfinite(sc.factor)))
    STRATA_FAIL(op << ": argument 'scaling.factor' is " << sc.factor << ", expected a finite value > 0");
  if (sc.type == RopeScalingType::llama3 &&
      !(sc.high_freq_factor > sc.low_freq_factor && sc.low_freq_factor > 0.0f && sc.original_max_seq > 0.0f))
    STRATA_FAIL(op << ": llama3 scaling needs high_freq_factor > low_freq_factor > 0 and "
                      "original_max_seq > 0, got "
                   << sc.high_freq_factor << ", " << sc.low_freq_factor << ", " << sc.original_max_seq);
}

}  // namespace

void rope_forward(const RopeArgs& a, Stream& s) {
  check_rope("rope_forward", a, s);
  run(&Backend::rope_forward, "rope_forward", a, s);
}

void rope_backward(const RopeArgs& a, Stream& s) {
  check_rope("rope_backward", a, s);
  run(&Backend::rope_backward, "rope_backward", a, s);
}

}  // namespace strata::ops
