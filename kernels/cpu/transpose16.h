// An in-register transpose of a 16 x 16 block of floats (AVX-512), shared by the few-row
// matmul (gemv.cpp: weight rows into columns) and decoding attention
// (attention_decode.cpp: sixteen keys' lane sums into one vector of scores).
#pragma once
#ifdef __AVX512F__
#include <immintrin.h>

namespace strata::cpu {

namespace transpose_detail {
// The all-lanes masked forms spare GCC's false "maybe uninitialized" on the unmasked
// intrinsics.
inline __m512 unpack_lo(__m512 a, __m512 b) { return _mm512_mask_unpacklo_ps(a, 0xffff, a, b); }
inline __m512 unpack_hi(__m512 a, __m512 b) { return _mm512_mask_unpackhi_ps(a, 0xffff, a, b); }
template <int kImm>
inline __m512 shuffle(__m512 a, __m512 b) { return _mm512_mask_shuffle_ps(a, 0xffff, a, b, kImm); }
template <int kImm>
inline __m512 shuffle_lanes(__m512 a, __m512 b) { return _mm512_mask_shuffle_f32x4(a, 0xffff, a, b, kImm); }

}  // namespace transpose_detail

// r[i] = row i of a 16 x 16 block -> r[k] = column k.
inline void transpose16(__m512 r[16]) {
  using namespace transpose_detail;
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = unpack_lo(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = unpack_hi(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = shuffle<_MM_SHUFFLE(1, 0, 1, 0)>(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = shuffle<_MM_SHUFFLE(3, 2, 3, 2)>(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = shuffle<_MM_SHUFFLE(1, 0, 1, 0)>(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = shuffle<_MM_SHUFFLE(3, 2, 3, 2)>(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = shuffle_lanes<0x88>(r[i], r[4 + i]);
    t[4 + i] = shuffle_lanes<0xdd>(r[i], r[4 + i]);
    t[8 + i] = shuffle_lanes<0x88>(r[8 + i], r[12 + i]);
    t[12 + i] = shuffle_lanes<0xdd>(r[8 + i], r[12 + i]);
  }
  for (int i = 0; i < 8; ++i) {
    r[i] = shuffle_lanes<0x88>(t[i], t[8 + i]);
    r[8 + i] = shuffle_lanes<0xdd>(t[i], t[8 + i]);
  }
}

}  // namespace strata::cpu

#endif
