// Entry points of the fused softmax + cross-entropy ops: every argument is checked
// here, targets included, before the backend writes anything.
// Invariant: a target outside [0, V) that is not ignore_index is an error at entry,
// never an out-of-bounds read in a kernel; with padded rows V is the real vocabulary,
// so a target in the padding is an error too.
#include "backend.h"
#include "check.h"

namespace strata::ops {

namespace {

// logits must be (N, Vp) with 0 < vocab <= Vp when vocab is set; returns N and the
// real vocabulary V (Vp when vocab is 0).
void logits_dims(const char* op, const char* arg, const TensorView& logits, int64_t vocab, int64_t& N,
                 int64_t& V) {
  if (logits.ndim != 2) check::fail(op, arg, logits, "must be 2-D (N, V): flatten (B, T) into rows");
  N = logits.shape[0];
  V = vocab == 0 ? logits.shape[1] : vocab;
  if (vocab < 0 || vocab > logits.shape[1])
    check::fail(op, arg, logits,
                "has " + std::to_string(logits.shape[1]) + " columns but vocab = " + std::to_string(vocab) +
                    ": vocab must be in [1, columns] (the real vocabulary of padded rows), or 0 for every column");
}

// Targets live in host-visible memory on the CPU backend, so they are read here.
void check_targets(const char* op, const TensorView& targets, int64_t V, int32_t ignore_index) {
  const int32_t* t = targets.ptr<int32_t>();
  for (int64_t r = 0; r < targets.numel(); ++r) {
    if (t[r] == ignore_index || (t[r] >= 0 && t[r] < V)) continue;
    check::fail(op, "targets", targets,
                "has target " + std::to_string(t[r]) + " at row " + std::to_string(r) +
                    ", outside [0, V) with V = " + std::to_string(V) + " and not ignore_index (" +
                    std::to_string(ignore_index) + ")");
  }
}

}  // namespace

void cross_entropy_forward(const CrossEntropyForwardArgs& a, Stream& s) {
  const char* op = "cross_entropy_forward";
  check::present(op, "losses", a.losses, s);
  check::present(op, "lse", a.lse, s);
  check::present(op, "logits", a.logits, s);
  check::present(op, "targets", a.targets, s);
  check::floating(op, "logits", a.logits);
  check::dtype(op, "losses", a.losses, {DType::f32});
  check::dtype(op, "lse", a.lse, {DType::f32});
  check::dtype(op, "targets", a.targets, {DType::i32});
  int64_t N, V;
  logits_dims(op, "logits", a.logits, a.vocab, N, V);
  check::shape(op, "losses", a.losses, {N});
  check::shape(op, "lse", a.lse, {N});
  check::shape(op, "targets", a.targets, {N});
  // Only host memory can be read here; a CUDA kernel turns a bad target into a NaN loss.
  if (s.device().kind() == DeviceKind::cpu) check_targets(op, a.targets, V, a.ignore_index);
  run(&Backend::cross_entropy_forward, op, a, s);
}

void cross_entropy_backward(const CrossEntropyBackwardArgs& a, Stream& s) {
  const char* op = "cross_entropy_backward";
  check::present(op, "d_logits", a.d_logits, s);
  check::present(op, "logits", a.logits, s);
  check::present(op, "lse", a.lse, s);
  check::present(op, "targets", a.targets, s);
  check::floating(op, "logits", a.logits);
  check::same_dtype(op, "d_logits", a.d_logits, "logits", a.logits);
  check::dtype(op, "lse", a.lse, {DType::f32});
  check::dtype(op, "targets", a.targets, {DType::i32});
  int64_t N, V;
  logits_dims(op, "logits", a.logits, a.vocab, N, V);
  check::shape(op, "d_logits", a.d_logits, {N, a.logits.shape[1]});
  check::shape(op, "lse", a.lse, {N});
  check::shape(op, "targets", a.targets, {N});
  // Only host memory can be read here; a CUDA kernel turns a bad target into a NaN loss.
  if (s.device().kind() == DeviceKind::cpu) check_targets(op, a.targets, V, a.ignore_index);
  run(&Backend::cross_entropy_backward, op, a, s);
}

}  // namespace strata::ops
