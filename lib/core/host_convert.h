// Element conversion between the floating formats a checkpoint file may hold (F64,
// F32, BF16, F16) and host memory, with common/convert.h's rounding (nearest even).
// Invariant: host memory only; device tensors are staged by the caller.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cmath>
#include <cstring>
#include <string>

#include "common/convert.h"
#include "strata/device.h"
#include "strata/dtype.h"
#include "strata/error.h"
#include "strata/tensor.h"

namespace strata::io {

enum class FloatFormat : uint8_t { f64, f32, bf16, f16 };

inline bool float_format(const std::string& safetensors_dtype, FloatFormat& out) {
  if (safetensors_dtype == "F64") out = FloatFormat::f64;
  else if (safetensors_dtype == "F32") out = FloatFormat::f32;
  else if (safetensors_dtype == "BF16") out = FloatFormat::bf16;
  else if (safetensors_dtype == "F16") out = FloatFormat::f16;
  else return false;
  return true;
}

inline FloatFormat float_format(DType t) {
  switch (t) {
    case DType::f32: return FloatFormat::f32;
    case DType::bf16: return FloatFormat::bf16;
    case DType::f16: return FloatFormat::f16;
    default: break;
  }
  STRATA_FAIL("checkpoint: " << dtype_name(t) << " is not a floating dtype");
}

inline size_t format_size(FloatFormat f) {
  return f == FloatFormat::f64 ? 8 : f == FloatFormat::f32 ? 4 : 2;
}

// n elements src (format sf) -> f32.
inline void to_f32(const void* src, FloatFormat sf, float* dst, size_t n) {
  switch (sf) {
    case FloatFormat::f32: std::memcpy(dst, src, n * 4); return;
    case FloatFormat::f64: {
      const double* s = static_cast<const double*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = float(s[i]);
      return;
    }
    case FloatFormat::bf16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = num::bf16_to_float(s[i]);
      return;
    }
    case FloatFormat::f16: {
      const uint16_t* s = static_cast<const uint16_t*>(src);
      for (size_t i = 0; i < n; ++i) dst[i] = num::f16_to_float(s[i]);
      return;
    }
  }
}

// n elements f32 -> dst (format df; f64 not written by strata).
inline void from_f32(const float* src, void* dst, FloatFormat df, size_t n) {
  switch (df) {
    case FloatFormat::f32: std::memcpy(dst, src, n * 4); return;
    case FloatFormat::f64: {
      double* d = static_cast<double*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = double(src[i]);
      return;
    }
    case FloatFormat::bf16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = num::float_to_bf16(src[i]);
      return;
    }
    case FloatFormat::f16: {
      uint16_t* d = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) d[i] = num::float_to_f16(src[i]);
      return;
    }
  }
}

// Loads refuse weights and optimizer state that hold NaN or Inf: such a file comes
// from a diverged run or corruption the checksum could not see (written so), and
// would train or generate garbage without a word. `what` names the file and tensor.
inline void require_finite(const void* data, FloatFormat f, size_t n, const std::string& what) {
  size_t bad = n;
  bool nan = false;
  for (size_t i = 0; i < n && bad == n; ++i) {
    double x = 0;
    switch (f) {
      case FloatFormat::f64: x = static_cast<const double*>(data)[i]; break;
      case FloatFormat::f32: x = static_cast<const float*>(data)[i]; break;
      case FloatFormat::bf16: x = num::bf16_to_float(static_cast<const uint16_t*>(data)[i]); break;
      case FloatFormat::f16: x = num::f16_to_float(static_cast<const uint16_t*>(data)[i]); break;
    }
    if (!std::isfinite(x)) bad = i, nan = std::isnan(x);
  }
  STRATA_CHECK(bad == n, what << " holds a non-finite value (" << (nan ? "NaN" : "Inf") << " at element " << bad
                              << " of " << n << "); the file comes from a diverged run or is corrupt: "
                                               "use an earlier checkpoint");
}
inline void require_finite(const float* data, size_t n, const std::string& what) {
  require_finite(data, FloatFormat::f32, n, what);
}

// Requires a host (CPU-device or device-less) view: checkpoint code reads and
// writes tensor memory directly. A device backend stages through host memory first.
inline void require_host(const TensorView& t, const char* what) {
  STRATA_CHECK(t.device == nullptr || t.device->kind() == DeviceKind::cpu,
               what << ": tensors on " << t.device->name()
                    << " must be staged to host memory first; only CPU devices are supported so far");
}

}  // namespace strata::io
