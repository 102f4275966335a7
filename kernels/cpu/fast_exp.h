// A branch-free expf that GCC vectorises, for the softmax loops of attention and
// cross-entropy. Without -ffast-math, calls to std::exp stay scalar and would cost
// more than the GEMMs around them.
// Invariant: only used for arguments <= 0 after max-subtraction (or x - lse), where
// it is accurate to about 2 ulp; below -87 it returns exactly 0 (so -inf gives 0),
// and NaN stays NaN.
#pragma once
#include <bit>
#include <cstdint>
#include <cstring>

namespace strata::cpu {

inline float fast_exp(float x) {
  // Cephes expf: exp(x) = 2^n exp(r), n = round(x / ln2), |r| <= ln2 / 2.
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  float xc = x > 88.0f ? 88.0f : x;
  xc = xc < -87.0f ? -87.0f : xc;
  float n = (xc * kLog2e + kRound) - kRound;
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  float two_n = std::bit_cast<float>(uint32_t(int32_t(n) + 127) << 23);
  float y = p * two_n;
  return x < -87.0f ? 0.0f : y;
}

// Float reductions do not vectorise without -ffast-math (they would reorder sums),
// so these keep 16 partial results, which GCC maps onto one AVX-512 register.
constexpr int kLanes = 16;

// max(x[0..n)), -inf for n == 0. NaN elements are skipped here; they still reach
// the caller's result through the exp sum. Written with a GCC vector type: the
// 16-lane array form of exp_sum does not vectorise for a max.
inline float max_of(const float* x, int64_t n) {
  using Lanes = float __attribute__((vector_size(4 * kLanes)));
  constexpr float kNegInf = -__builtin_inff();
  Lanes acc;
  for (int k = 0; k < kLanes; ++k) acc[k] = kNegInf;
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    Lanes v;
    std::memcpy(&v, x + j, sizeof v);
    acc = v > acc ? v : acc;
  }
  float m = kNegInf;
  for (int k = 0; k < kLanes; ++k) m = acc[k] > m ? acc[k] : m;
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// Returns sum of exp(x[j] * scale - shift) over j < n; also writes the terms to y
// when y is not null (y may be x).
inline float exp_sum(const float* x, float* y, int64_t n, float scale, float shift) {
  float lanes[kLanes] = {};
  int64_t j = 0;
  if (y) {
    for (; j + kLanes <= n; j += kLanes)
      for (int k = 0; k < kLanes; ++k) {
        float e = fast_exp(x[j + k] * scale - shift);
        y[j + k] = e;
        lanes[k] += e;
      }
  } else {
    for (; j + kLanes <= n; j += kLanes)
      for (int k = 0; k < kLanes; ++k) lanes[k] += fast_exp(x[j + k] * scale - shift);
  }
  float s = 0.0f;
  for (int k = 0; k < kLanes; ++k) s += lanes[k];
  for (; j < n; ++j) {
    float e = fast_exp(x[j] * scale - shift);
    if (y) y[j] = e;
    s += e;
  }
  return s;
}

}  // namespace strata::cpu
