// The AVX512-BF16 matmul forward of the CPU backend (matmul_bf16.cpp).
#pragma once
#include "../ops.h"

namespace strata::cpu {

// Runs the bf16 matmul forward with vdpbf16ps when this build targets AVX512-BF16
// and returns true; returns false (and does nothing) otherwise, so the caller falls
// back to the f32-scratch sgemm path.
bool matmul_forward_bf16(const ops::MatmulForwardArgs& a);

}  // namespace strata::cpu
