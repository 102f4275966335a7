#include "strata/dtype.h"

#include "../../kernels/common/convert.h"
#include "strata/error.h"

namespace strata {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
  }
  return "?";
}

DType dtype_from_string(const std::string& name) {
  if (name == "f32" || name == "fp32" || name == "float32") return DType::f32;
  if (name == "bf16" || name == "bfloat16") return DType::bf16;
  if (name == "f16" || name == "fp16" || name == "float16") return DType::f16;
  if (name == "i32" || name == "int32") return DType::i32;
  STRATA_FAIL("unknown dtype '" << name << "': use f32, bf16, f16 or i32");
}

float bf16_to_float(uint16_t bits) { return num::bf16_to_float(bits); }
uint16_t float_to_bf16(float value) { return num::float_to_bf16(value); }
float f16_to_float(uint16_t bits) { return num::f16_to_float(bits); }
uint16_t float_to_f16(float value) { return num::float_to_f16(value); }

}  // namespace strata
