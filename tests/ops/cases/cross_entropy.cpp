// Reference cases for cross_entropy_forward / cross_entropy_backward, for every
// backend: a double softmax + cross-entropy of the stored logits (ignored rows, a
// custom ignore_index, huge logits, d_logits aliasing logits, a padded row stride).
// Finite differences and argument errors: tests/ops/test_cross_entropy.cpp; padded
// against unpadded bit for bit on the CPU: tests/ops/test_padded_vocab.cpp.
// Invariant: expected values come from the reference below, never from the op.
#include <cmath>

#include "ops.h"
#include "ops/op_table.h"

namespace strata::test {
namespace {

constexpr int32_t kIgnore = -100;

// The emulator's expf and log against the CPU's vectorised exp; real hardware sums a
// row in another order (its former tolerance: ten times f32's for losses and lse).
constexpr double kMathSlack = 2.0, kHardwareSlack = 10.0;

struct CeReference {
  std::vector<double> losses, lse, d_logits;  // (N), (N), (N, V)
};

// Exact softmax + cross-entropy of the stored (dtype-rounded) logits, in double.
CeReference ce_reference(const HostTensor& logits, const HostTensor& targets, int32_t ignore_index,
                         double d_loss) {
  const int64_t N = logits.shape()[0], V = logits.shape()[1];
  std::vector<double> x = logits.values();
  CeReference ref{std::vector<double>(size_t(N)), std::vector<double>(size_t(N)),
                  std::vector<double>(size_t(N * V))};
  for (int64_t r = 0; r < N; ++r) {
    const double* row = x.data() + r * V;
    double m = -INFINITY;
    for (int64_t j = 0; j < V; ++j) m = std::max(m, row[j]);
    double sum = 0;
    for (int64_t j = 0; j < V; ++j) sum += std::exp(row[j] - m);
    double lse = m + std::log(sum);
    int32_t t = int32_t(targets.get(r));
    ref.lse[size_t(r)] = lse;
    bool ignored = t == ignore_index;
    ref.losses[size_t(r)] = ignored ? 0.0 : lse - row[t];
    for (int64_t j = 0; j < V; ++j) {
      double g = std::exp(row[j] - lse) - (j == t ? 1.0 : 0.0);
      ref.d_logits[size_t(r * V + j)] = ignored ? 0.0 : g * d_loss;
    }
  }
  return ref;
}

// Random targets in [0, V) with every fourth row (from row 2) ignored.
HostTensor make_targets(int64_t N, int64_t V, uint64_t seed) {
  HostTensor t(DType::i32, {N});
  t.tokens(seed, int32_t(V));
  for (int64_t r = 2; r < N; r += 4) t.set(r, kIgnore);
  return t;
}

// Forward then backward into a separate buffer, each output against the reference.
void check_ce(OpEnv& e, const std::string& what, HostTensor& logits, HostTensor& targets, int32_t ignore_index,
              Tolerance grad_tol) {
  const int64_t N = logits.shape()[0], V = logits.shape()[1];
  const float d_loss = 0.37f;
  HostTensor losses(DType::f32, {N}), lse(DType::f32, {N}), d_logits(logits.dtype(), {N, V});
  ops::cross_entropy_forward({e.at(losses), e.at(lse), e.at(logits), e.at(targets), ignore_index}, e.stream());
  ops::cross_entropy_backward({e.at(d_logits), e.at(logits), e.at(lse), e.at(targets), d_loss, ignore_index},
                              e.stream());
  const CeReference ref = ce_reference(logits, targets, ignore_index, d_loss);
  const Tolerance tol = tolerance_for(logits.dtype());
  e.expect(what + " losses", losses, ref.losses, tol);
  e.expect(what + " lse", lse, ref.lse, tol);
  e.expect(what + " d_logits", d_logits, ref.d_logits, grad_tol);
}

const std::vector<std::vector<int64_t>> kShapes = {{1, 1}, {3, 17}, {17, 1000}, {1000, 3}, {5, 1}, {6, 33}, {2, 3000}};

STRATA_OP_CASE(reference_case(
    "cross_entropy_forward", kShapes, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      HostTensor logits(dtype, shape), targets = make_targets(shape[0], shape[1], 12);
      logits.uniform(11, -4.0, 4.0);
      check_ce(e, "ce", logits, targets, kIgnore, tolerance_for(dtype));
    },
    kMathSlack, kHardwareSlack));

// ignore_index may be a valid class: rows with that target are skipped, others not.
STRATA_OP_CASE(reference_case(
    "cross_entropy_backward", {{9, 5}, {17, 17}}, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      HostTensor logits(dtype, shape), targets(DType::i32, {shape[0]});
      logits.uniform(21, -3.0, 3.0);
      targets.tokens(22, int32_t(shape[1]));
      targets.set(0, 2);
      targets.set(shape[0] - 1, 2);
      check_ce(e, "ignore_index 2", logits, targets, 2, tolerance_for(dtype));
    },
    kMathSlack, kHardwareSlack));

// Large logits: with max subtraction nothing overflows. At |x| ~ 1e4 the f32 lse
// saved for backward is off by up to half an ulp (5e-4), which the recomputed
// probabilities inherit, hence the looser gradient tolerance.
STRATA_OP_CASE(reference_case(
    "cross_entropy_forward", {{4, 1000}, {17, 3}}, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      const Tolerance tol = tolerance_for(dtype);
      const Tolerance grad_tol{std::max(tol.atol, 1e-3), std::max(tol.rtol, 1e-3)};
      HostTensor near(dtype, shape), spread(dtype, shape);
      HostTensor near_targets = make_targets(shape[0], shape[1], 32), spread_targets = make_targets(shape[0], shape[1], 34);
      near.uniform(31, 1e4 - 8.0, 1e4 + 8.0);  // near-tied, huge offset
      check_ce(e, "logits ~ 1e4", near, near_targets, kIgnore, grad_tol);
      spread.uniform(33, -1e4, 1e4);  // huge spread: most terms underflow
      check_ce(e, "logits in +-1e4", spread, spread_targets, kIgnore, grad_tol);
    },
    kMathSlack, kHardwareSlack));

// d_logits may be logits itself: the result must equal the separate-buffer result.
STRATA_OP_CASE(reference_case(
    "cross_entropy_backward", {{3, 17}, {17, 1000}}, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      const int64_t N = shape[0], V = shape[1];
      HostTensor logits(dtype, shape), targets = make_targets(N, V, 42);
      logits.uniform(41, -4.0, 4.0);
      HostTensor losses(DType::f32, {N}), lse(DType::f32, {N}), separate(dtype, shape);
      ops::cross_entropy_forward({e.at(losses), e.at(lse), e.at(logits), e.at(targets), kIgnore}, e.stream());
      ops::cross_entropy_backward({e.at(separate), e.at(logits), e.at(lse), e.at(targets), 0.5f, kIgnore},
                                  e.stream());
      const CeReference ref = ce_reference(logits, targets, kIgnore, 0.5);
      ops::cross_entropy_backward({e.at(logits), e.at(logits), e.at(lse), e.at(targets), 0.5f, kIgnore},
                                  e.stream());
      e.expect("separate d_logits", separate, ref.d_logits, tolerance_for(dtype));
      e.expect("aliased d_logits", logits, separate.values(), {0.0, 0.0});
    },
    kMathSlack, kHardwareSlack));

// The head's padded vocabulary: logits (N, Vp) with vocab = V and NaN in the padding,
// which carries no probability mass; d_logits in place, the padding assigned exactly 0.
STRATA_OP_CASE(reference_case(
    "cross_entropy_backward", {{1, 1}, {3, 17}, {6, 1000}, {4, 3000}}, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
      const int64_t n = shape[0], v = shape[1], vp = (v + 63) / 64 * 64;
      HostTensor logits(dtype, {n, v}), targets(DType::i32, {n});
      logits.uniform(8, -6.0, 6.0);
      targets.tokens(9, int32_t(v));
      if (n > 2) targets.set(1, kIgnore);
      targets.set(0, int32_t(v - 1));  // the last real column: next to the padding
      const CeReference ref = ce_reference(logits, targets, kIgnore, 0.3);
      HostTensor padded(dtype, {n, vp}), losses(DType::f32, {n}), lse(DType::f32, {n});
      std::vector<double> d_ref(size_t(n * vp), 0.0);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t j = 0; j < vp; ++j) {
          padded.set(r * vp + j, j < v ? logits.get(r * v + j) : NAN);
          if (j < v) d_ref[size_t(r * vp + j)] = ref.d_logits[size_t(r * v + j)];
        }
      ops::CrossEntropyForwardArgs f{e.at(losses), e.at(lse), e.at(padded), e.at(targets)};
      f.vocab = v;
      ops::cross_entropy_forward(f, e.stream());
      ops::CrossEntropyBackwardArgs b{e.at(padded), e.at(padded), e.at(lse), e.at(targets), 0.3f};
      b.vocab = v;
      ops::cross_entropy_backward(b, e.stream());
      const Tolerance tol = tolerance_for(dtype);
      e.expect("padded rows losses", losses, ref.losses, tol);
      e.expect("padded rows lse", lse, ref.lse, tol);
      e.expect("padded rows d_logits, in place", padded, d_ref, tol);
    },
    kMathSlack, kHardwareSlack));

}  // namespace
}  // namespace strata::test
