// Element types strata stores. Arithmetic is always f32 (or wider); bf16 and f16 are
// storage formats whose conversions live in kernels/common/convert.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace strata {

enum class DType : uint8_t { f32, bf16, f16, i32 };

constexpr size_t dtype_size(DType t) { return t == DType::bf16 || t == DType::f16 ? 2 : 4; }

const char* dtype_name(DType t);

// Parses "f32" / "fp32" / "float32", "bf16" / "bfloat16", "f16" / "fp16" / "float16",
// "i32"; throws strata::Error naming the accepted spellings otherwise.
DType dtype_from_string(const std::string& name);

// Scalar conversions for host code (tests, tools, checkpoint conversion).
float bf16_to_float(uint16_t bits);
uint16_t float_to_bf16(float value);
float f16_to_float(uint16_t bits);
uint16_t float_to_f16(float value);

}  // namespace strata
