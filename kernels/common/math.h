// Scalar math shared by CPU and CUDA kernels: activation functions and their
// derivatives, written once so both backends agree to the last rounding.
#pragma once
#include <cmath>

#include "hd.h"

namespace strata::num {

// GELU, tanh approximation (as in GPT-2): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2/pi)

STRATA_HD float gelu(float x) {
  float cube = 0.044715f * x * x * x;
  return 0.5f * x * (1.0f + tanhf(kGeluScale * (x + cube)));
}

STRATA_HD float gelu_grad(float x) {
  float cube = 0.044715f * x * x * x;
  float t = tanhf(kGeluScale * (x + cube));
  float sech2 = 1.0f - t * t;
  return 0.5f * (1.0f + t) + 0.5f * x * sech2 * kGeluScale * (1.0f + 3.0f * 0.044715f * x * x);
}

STRATA_HD float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

STRATA_HD float silu(float x) { return x * sigmoid(x); }

STRATA_HD float silu_grad(float x) {
  float s = sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}

}  // namespace strata::num
