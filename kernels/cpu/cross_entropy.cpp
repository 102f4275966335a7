// CPU fused softmax + cross-entropy. Rows are independent and run in parallel.
// Invariants: no probability tensor is ever stored (forward keeps only the row
// log-sum-exp); d_logits is assigned and may alias logits, so each element of a
// row is read before the same element is written, and the target's logit is read
// before the row is overwritten. Targets were range-checked at the entry point.
// Padded rows (vocab < Vp columns): only the first V columns are read; backward
// assigns 0 to the padding, so it never carries a gradient.
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu.h"
#include "fast_exp.h"
#include "util.h"
#include "op_profile.h"

namespace strata::cpu {

namespace {

// Rows per task: enough elements that a task outweighs its scheduling.
int64_t row_grain(int64_t V) { return std::max<int64_t>(1, 32768 / V); }

// Row r of logits as f32: the row itself for f32 storage, else converted into scratch.
template <class T>
const float* row_f32(const T* x, int64_t V, std::vector<float>& scratch) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    scratch.resize(size_t(V));
    float* s = scratch.data();
    for (int64_t j = 0; j < V; ++j) s[j] = load(x[j]);
    return s;
  }
}

template <class T>
void forward(const ops::CrossEntropyForwardArgs& a) {
  const int64_t N = a.logits.shape[0], Vp = a.logits.shape[1], V = a.vocab ? a.vocab : Vp;
  const T* logits = a.logits.ptr<T>();  // (N, Vp)
  const int32_t* targets = a.targets.ptr<int32_t>();  // (N)
  float* losses = a.losses.ptr<float>();  // (N)
  float* lse = a.lse.ptr<float>();  // (N)
  parallel_for(N, row_grain(V), [&](int64_t r0, int64_t r1) {
    thread_local std::vector<float> scratch;
    for (int64_t r = r0; r < r1; ++r) {
      const float* x = row_f32(logits + r * Vp, V, scratch);
      float m = max_of(x, V);
      // An all -inf row must not compute exp(-inf - -inf): it gets lse = -inf and a
      // NaN loss. A +inf or NaN logit makes the sum, hence lse and loss, NaN.
      float shift = m == -INFINITY ? 0.0f : m;
      float log_sum = std::log(exp_sum(x, nullptr, V, 1.0f, shift));
      lse[r] = shift + log_sum;
      // (max - x[t]) + log_sum keeps the loss accurate when the logits are large
      // and lse - x[t] would cancel.
      int32_t t = targets[r];
      losses[r] = t == a.ignore_index ? 0.0f : (shift - x[t]) + log_sum;
    }
  });
}

template <class T>
void backward(const ops::CrossEntropyBackwardArgs& a) {
  const int64_t N = a.logits.shape[0], Vp = a.logits.shape[1], V = a.vocab ? a.vocab : Vp;
  const T* logits = a.logits.ptr<T>();  // (N, Vp), may be d_logits
  T* d_logits = a.d_logits.ptr<T>();  // (N, Vp)
  const int32_t* targets = a.targets.ptr<int32_t>();  // (N)
  const float* lse = a.lse.ptr<float>();  // (N)
  const float d_loss = a.d_loss;
  parallel_for(N, row_grain(V), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const T* x = logits + r * Vp;
      T* d = d_logits + r * Vp;
      for (int64_t j = V; j < Vp; ++j) d[j] = store<T>(0.0f);
      int32_t t = targets[r];
      if (t == a.ignore_index) {
        for (int64_t j = 0; j < V; ++j) d[j] = store<T>(0.0f);
        continue;
      }
      float l = lse[r];
      float p_target = fast_exp(load(x[t]) - l);  // read before the row is overwritten
      for (int64_t j = 0; j < V; ++j) d[j] = store<T>(fast_exp(load(x[j]) - l) * d_loss);
      d[t] = store<T>((p_target - 1.0f) * d_loss);
    }
  });
}

}  // namespace

void cross_entropy_forward(const ops::CrossEntropyForwardArgs& a) {
  OpTimer timer(OpCategory::cross_entropy);
  dispatch_float(a.logits.dtype, [&](auto t) { forward<decltype(t)>(a); });
}

void cross_entropy_backward(const ops::CrossEntropyBackwardArgs& a) {
  OpTimer timer(OpCategory::cross_entropy);
  dispatch_float(a.logits.dtype, [&](auto t) { backward<decltype(t)>(a); });
}

}  // namespace strata::cpu
