// The AVX512-BF16 matmul of the CPU backend (matmul_bf16.cpp).
#pragma once
#include "../ops.h"

namespace strata::cpu {

// Run the bf16 matmul (AMX tiles or vdpbf16ps) when this build targets AVX512-BF16 and return
// true; return false (doing nothing) otherwise, so the caller falls back to the
// f32 path.
bool matmul_forward_bf16(const ops::MatmulForwardArgs& a);
bool matmul_backward_bf16(const ops::MatmulBackwardArgs& a);

// The instructions this process's bf16 matmuls run on: "AMX tdpbf16ps",
// "AVX512 vdpbf16ps", or the f32 fallback — for strata-bench to say.
const char* bf16_gemm_path();

}  // namespace strata::cpu
