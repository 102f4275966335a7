// Vectorised conversion of contiguous blocks between a storage type and f32, for
// kernels that work on f32 scratch. The compiler vectorises the f32 and bf16 cases
// on its own; f16 needs the hardware converters (F16C / AVX-512), which round to
// nearest even exactly as num::store does.
// Invariant: every path here is bitwise identical to num::load / num::store element
// by element (NaN payloads included), so a result never depends on whether an
// element fell in a vector body or a scalar tail. tests/ops/test_elementwise.cpp
// checks this on every special value.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX512F__) || defined(__F16C__)
// GCC 12 reports its own intrinsics' _mm*_undefined_*() as maybe-uninitialized
// (GCC bug 105593); the warning is located in the header, so silence it there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include "../common/convert.h"

namespace strata::cpu {

// dst[i] = load(src[i]) for i < n.
template <class T>
inline void load_block(const T* __restrict src, float* __restrict dst, int64_t n) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, num::f16>) {
#if defined(__AVX512F__)
    const uint16_t* bits = reinterpret_cast<const uint16_t*>(src);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fff), inf = _mm512_set1_epi32(0x7c00);
    for (; i + 16 <= n; i += 16) {
      __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bits + i));
      __m512 f = _mm512_cvtph_ps(h);
      // The converter quiets signalling NaNs; num::load keeps the payload as is.
      __m512i w = _mm512_cvtepu16_epi32(h);
      __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(w, abs_mask), inf);
      if (nan) {
        __m512i exact = _mm512_or_si512(
            _mm512_or_si512(_mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x8000)), 16),
                            _mm512_set1_epi32(0x7f800000)),
            _mm512_slli_epi32(_mm512_and_si512(w, _mm512_set1_epi32(0x3ff)), 13));
        f = _mm512_mask_mov_ps(f, nan, _mm512_castsi512_ps(exact));
      }
      _mm512_storeu_ps(dst + i, f);
    }
#endif
  }
  for (; i < n; ++i) dst[i] = num::load(src[i]);
}

// dst[i] = store<T>(src[i]) for i < n.
template <class T>
inline void store_block(const float* __restrict src, T* __restrict dst, int64_t n) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, num::f16>) {
#if defined(__AVX512F__) || defined(__F16C__)
    uint16_t* bits = reinterpret_cast<uint16_t*>(dst);
#endif
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
      __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(bits + i), h);
    }
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
      __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(bits + i), h);
    }
#endif
  }
  for (; i < n; ++i) dst[i] = num::store<T>(src[i]);
}

// Elements per f32 scratch block: small enough for a few blocks to sit in L1.
constexpr int64_t kBlock = 1024;

}  // namespace strata::cpu
