// The CPU activation functions (GELU tanh approximation, SiLU and their gradients)
// through one vectorisable exp, shared by kernels/cpu/activation.cpp and the GELU
// epilogue of matmul_forward.
// Invariant: the epilogue and gelu_forward call the same gelu() on the same rounded
// pre-activation, so a fused matmul + GELU is bitwise matmul then gelu_forward.
//
// Accuracy, measured on every float against double precision (f32 storage):
//   exp_approx on [-87, 88]: max 0.94 ulp.
//   gelu on [-10, 10]: max abs error 5.2e-7 (math.h num::gelu: 4.3e-7); max 14 ulp
//     for x >= -3 (num::gelu: 203 ulp, it cancels in 1 + tanh(u) as u -> -inf).
//   gelu_grad on [-10, 10]: max abs error 2.1e-7 (num::gelu_grad: 5.6e-7).
//   silu on [-20, 20]: max abs error 1.3e-6 (same as num::silu), max 2.1 ulp for x >= -5.
//   silu_grad on [-20, 20]: max abs error 2.3e-7 (num::silu_grad: 9.8e-7).
// So results are at least as accurate as math.h, but not bitwise equal to it (nor
// is CUDA's tanhf / expf to glibc's). Re-measure if exp_approx changes.
#pragma once
#include <cstdint>

#include "../common/math.h"
#include "util.h"

namespace strata::cpu {

// e^y, within 1 ulp for y in [-87, 88]; y is clamped to that range (e^88 is finite,
// e^-87 a normal number) so no branch is needed, and NaN passes through.
inline float exp_approx(float y) {
  y = y > 88.0f ? 88.0f : y;  // comparisons are false for NaN: it stays NaN
  y = y < -87.0f ? -87.0f : y;
  // y = k ln2 + r, |r| <= ln2 / 2: adding 1.5 * 2^23 rounds y / ln2 to the integer k,
  // which is then read from the float's low bits (no float -> int conversion of NaN).
  constexpr float kShift = 12582912.0f;
  const float t = y * 1.44269504088896341f + kShift;
  const float k = t - kShift;
  const uint32_t k_bits = num::float_bits(t) - num::float_bits(kShift);
  float r = y - k * 0.693145751953125f;     // ln2 high part: k * it is exact
  r = r - k * 1.42860682030941723212e-6f;  // ln2 low part
  // e^r by Taylor to degree 7: truncation 5.5e-9 relative at |r| = ln2 / 2.
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * num::bits_float((k_bits + 127u) << 23);  // * 2^k
}

// 0.5 (1 + tanh(u)) = 1 / (1 + e^(-2u)): no cancellation as u -> -inf.
inline float gelu_inner(float x) { return num::kGeluScale * (x + 0.044715f * x * x * x); }

inline float gelu(float x) { return x / (1.0f + exp_approx(-2.0f * gelu_inner(x))); }

// d/dx x s(2u) = s + x * 2 s (1 - s) u', with 1 - s = e s.
inline float gelu_grad(float x) {
  const float e = exp_approx(-2.0f * gelu_inner(x)), s = 1.0f / (1.0f + e);
  return s + x * (2.0f * s * s * e) * num::kGeluScale * (1.0f + 3.0f * 0.044715f * x * x);
}

inline float silu(float x) { return x / (1.0f + exp_approx(-x)); }

inline float silu_grad(float x) {
  const float e = exp_approx(-x), s = 1.0f / (1.0f + e);
  return s * (1.0f + x * e * s);
}

// out = GELU(pre) over a (rows, cols) tile with row stride ld, pre read back as
// stored (rounded to T): the matmul GELU epilogue, run while the tile is in cache.
template <class T>
inline void gelu_tile(const T* pre, T* out, int64_t rows, int64_t cols, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* __restrict src = pre + r * ld;
    T* __restrict dst = out + r * ld;
    for (int64_t j = 0; j < cols; ++j) dst[j] = store<T>(gelu(load(src[j])));
  }
}

}  // namespace strata::cpu
