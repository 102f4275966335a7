// The few-row f32 / bf16 matmul of the CPU backend (gemv.cpp): decoding's rows against a
// weight read in place, bitwise equal to the GEMM path.
#pragma once
#include <cstdint>

#include "../ops.h"

namespace strata::cpu {

// Most rows the few-row path takes: one per sequence of a small decoding batch.
constexpr int64_t kGemvRows = 4;

// Run out = inp @ weight^T + bias (and the GELU epilogue) for an f32 (or, on
// AVX512-BF16 with an even IC, bf16) weight and at
// most kGemvRows rows on AVX-512 and return true; else return false, doing nothing.
bool matmul_forward_gemv(const ops::MatmulForwardArgs& a);

}  // namespace strata::cpu
