// bf16 and fp16 <-> fp32 conversions, the only implementation in strata.
// Invariant: float -> 16-bit rounds to nearest, ties to even; NaN stays NaN (quiet,
// sign and top payload bits kept); values past the largest finite round to Inf;
// subnormals are produced and consumed exactly. CPU and CUDA share this code, so a
// bf16 run rounds identically on every backend.
#pragma once
#include <cstdint>
#include <cstring>

#include "hd.h"

namespace strata::num {

STRATA_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

STRATA_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

STRATA_HD float bf16_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

STRATA_HD uint16_t float_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even; carries into Inf on overflow
  return uint16_t(u >> 16);
}

STRATA_HD float f16_to_float(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return bits_float(sign | 0x7f800000u | (man << 13));  // Inf / NaN
  if (exp != 0) return bits_float(sign | ((exp + 112u) << 23) | (man << 13));
  if (man == 0) return bits_float(sign);
  // subnormal: value = man * 2^-24, exact in fp32
  float v = float(man) * 5.9604644775390625e-8f;
  return sign ? -v : v;
}

STRATA_HD uint16_t float_to_f16(float f) {
  uint32_t x = float_bits(f);
  uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((x >> 13) & 0x3ffu));  // NaN
  if (x >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to Inf
  if (x >= 0x38800000u) {                                 // normal in fp16 (>= 2^-14)
    uint32_t r = x - 0x38000000u;                         // rebias exponent by 112
    r += 0xfffu + ((r >> 13) & 1u);
    return uint16_t(sign | (r >> 13));
  }
  if (x <= 0x33000000u) return sign;  // <= 2^-25 rounds to zero (2^-25 is a tie)
  uint32_t e = x >> 23;
  uint32_t m = (x & 0x7fffffu) | 0x800000u;
  uint32_t s = 126u - e;  // 14..24
  uint32_t k = m >> s;
  uint32_t rem = m & ((1u << s) - 1u);
  uint32_t half = 1u << (s - 1u);
  if (rem > half || (rem == half && (k & 1u))) ++k;  // may carry into the smallest normal
  return uint16_t(sign | k);
}

// Storage types used by templated kernels. They are bit containers: arithmetic is
// always done in float after load().
struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

STRATA_HD float load(float v) { return v; }
STRATA_HD float load(bf16 v) { return bf16_to_float(v.bits); }
STRATA_HD float load(f16 v) { return f16_to_float(v.bits); }

template <class T>
STRATA_HD T store(float v);
template <>
STRATA_HD float store<float>(float v) { return v; }
template <>
STRATA_HD bf16 store<bf16>(float v) { return bf16{float_to_bf16(v)}; }
template <>
STRATA_HD f16 store<f16>(float v) { return f16{float_to_f16(v)}; }

// Round a float through T and back: what storing then loading a value gives.
template <class T>
STRATA_HD float round_through(float v) { return load(store<T>(v)); }

}  // namespace strata::num
