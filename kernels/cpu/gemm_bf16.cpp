// The bf16 GEMM tile on AVX512-BF16 (gemm_avx512.h): vdpbf16ps multiplies bf16 pairs
// along k into f32 accumulators, in a 14 x 32 register block. B is packed into
// panels of 32 columns, one 64-byte line pair per k-pair. A pairs are broadcast from
// dense rows in place (unless they would share L1 sets, gemm_rows_fit_l1_sets),
// else A is packed into slivers of 14 rows, one 32-bit k-pair
// per row and step: packing makes the pairs whatever the strides, so d_weight's
// d_out^T needs no separate transpose.
// Invariant: C (i, j) accumulates k-pairs in ascending order, in blocks of kKcPairs,
// starting from 0 or from C; an odd K pairs its last k with a zero, and tails are
// zero-padded in the packs and masked on store.
#include <cstring>

#ifdef __AVX512BF16__
// GCC 12 reports its own intrinsics' _mm*_undefined_*() as maybe-uninitialized
// (GCC bug 105593), located in the header: silence it there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include "gemm_amx.h"
#include "gemm_avx512.h"
#include "thread_scratch.h"

namespace strata::cpu {

#ifdef __AVX512BF16__

namespace {

constexpr int kRows = int(kGemmRowsBf16);
constexpr int64_t kPanel = 32;
constexpr int64_t kKcPairs = kGemmKcPairsBf16;  // a B panel block (64 KiB) streams from L2

// Elements k and k+1 of a strided run (k+1 < kc or not) as one word, low half first.
inline uint32_t pair(const uint16_t* p, int64_t stride, bool both) {
  return uint32_t(p[0]) | (both ? uint32_t(p[stride]) << 16 : 0u);
}

// The first w of 16 lanes.
inline __mmask16 lanes(int64_t w) { return w >= 16 ? __mmask16(0xffff) : w <= 0 ? 0 : __mmask16((1u << w) - 1); }

// a_pack (kp, kRows) = A rows [0, rows) x k [0, kc), rows past `rows` zero.
void pack_a(Strided<uint16_t> a, int64_t rows, int64_t kc, uint32_t* __restrict dst) {
  const int64_t kp = (kc + 1) / 2;
  if (rows < kRows) std::memset(dst, 0, size_t(kp * kRows) * 4);
  if (a.cs == 1) {
    for (int64_t r = 0; r < rows; ++r) {
      const uint16_t* __restrict src = a.p + r * a.rs;
      for (int64_t q = 0; q < kc / 2; ++q) std::memcpy(dst + q * kRows + r, src + 2 * q, 4);
      if (kc % 2) dst[(kp - 1) * kRows + r] = src[kc - 1];
    }
  } else if (a.rs == 1) {  // d_out^T: rows 2q and 2q+1 of d_out interleaved
    const __mmask16 m = lanes(rows);
    for (int64_t q = 0; q < kp; ++q) {
      const uint16_t* __restrict lo = a.p + 2 * q * a.cs;
      const uint16_t* __restrict hi = lo + a.cs;
      uint32_t* __restrict d = dst + q * kRows;
      if (2 * q + 1 < kc) {  // one masked move: widen both rows to 32 bits, hi rows on top
        const __m512i l = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, lo));
        const __m512i h = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, hi));
        _mm512_mask_storeu_epi32(d, m, _mm512_or_si512(l, _mm512_slli_epi32(h, 16)));
      } else {
        for (int64_t r = 0; r < rows; ++r) d[r] = lo[r];
      }
    }
  } else {
    for (int64_t q = 0; q < kp; ++q) {
      const uint16_t* __restrict src = a.p + 2 * q * a.cs;
      const bool both = 2 * q + 1 < kc;
      for (int64_t r = 0; r < rows; ++r) dst[q * kRows + r] = pair(src + r * a.rs, a.cs, both);
    }
  }
}

// b_pack (panels, kp, 32) = B k [0, kc) x columns [0, n), columns past n zero.
void pack_b(Strided<uint16_t> b, int64_t kc, int64_t n, uint32_t* __restrict dst) {
  const int64_t kp = (kc + 1) / 2;
  for (int64_t j0 = 0; j0 < n; j0 += kPanel, dst += kp * kPanel) {
    const int64_t w = std::min(kPanel, n - j0);
    if (w < kPanel) std::memset(dst, 0, size_t(kp * kPanel) * 4);
    if (b.cs == 1) {  // rows 2q and 2q+1 interleaved
      for (int64_t q = 0; q < kp; ++q) {
        const uint16_t* __restrict lo = b.p + 2 * q * b.rs + j0;
        const uint16_t* __restrict hi = lo + b.rs;
        uint32_t* __restrict d = dst + q * kPanel;
        if (2 * q + 1 < kc) {
          for (int64_t j = 0; j < w; ++j) d[j] = uint32_t(lo[j]) | uint32_t(hi[j]) << 16;
        } else {
          for (int64_t j = 0; j < w; ++j) d[j] = lo[j];
        }
      }
    } else {
      for (int64_t j = 0; j < w; ++j) {
        const uint16_t* __restrict src = b.p + (j0 + j) * b.cs;
        for (int64_t q = 0; q < kp; ++q) dst[q * kPanel + j] = pair(src + 2 * q * b.rs, b.rs, 2 * q + 1 < kc);
      }
    }
  }
}

// c (rows, width) [+]= A (kRows, 2 kp) @ b_panel (kp, 32), pairs multiplied by
// vdpbf16ps; A either a_pack (kp, kRows) or, kInPlace, kRows full rows of bf16 with
// row stride lda (no packing when rows are dense and the block's k count is even).
template <bool kInPlace>
void micro_kernel(const void* a, int64_t lda, const uint32_t* __restrict bp, int64_t kp, float* c,
                  int64_t ldc, int64_t rows, int64_t width, bool accumulate) {
  const uint32_t* __restrict ap = static_cast<const uint32_t*>(a);
  const uint16_t* __restrict ah = static_cast<const uint16_t*>(a);
  const __mmask16 m0 = lanes(width), m1 = lanes(width - 16);
  __m512 c0[kRows], c1[kRows];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    const bool live = accumulate && r < rows;
    c0[r] = live ? _mm512_maskz_loadu_ps(m0, c + r * ldc) : _mm512_setzero_ps();
    c1[r] = live ? _mm512_maskz_loadu_ps(m1, c + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t q = 0; q < kp; ++q, ap += kRows, ah += 2, bp += kPanel) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp), b1 = (__m512bh)_mm512_loadu_si512(bp + 16);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      uint32_t word;
      if constexpr (kInPlace) std::memcpy(&word, ah + r * lda, 4);
      else word = ap[r];
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(word));
      c0[r] = _mm512_dpbf16_ps(c0[r], av, b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], av, b1);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    if (r >= rows) break;
    _mm512_mask_storeu_ps(c + r * ldc, m0, c0[r]);
    _mm512_mask_storeu_ps(c + r * ldc + 16, m1, c1[r]);
  }
}

}  // namespace

void pack_b_bf16(Strided<uint16_t> b, int64_t K, int64_t N, uint32_t* packed) {
  const int64_t panels = (N + kPanel - 1) / kPanel, kc_max = 2 * kKcPairs, blocks = (K + kc_max - 1) / kc_max;
  parallel_for(blocks * panels, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t k0 = t / panels * kc_max, p = t % panels, kc = std::min(kc_max, K - k0), kp = (kc + 1) / 2;
      pack_b(b.at(k0, p * kPanel), kc, std::min(kPanel, N - p * kPanel),
             packed + (k0 / 2 * panels + p * kp) * kPanel);
    }
  });
}

void gemm_tile_bf16(int64_t M, int64_t N, int64_t K, Strided<uint16_t> a, const uint32_t* packed_b,
                    int64_t n_packed, int64_t j0, float* c, int64_t ldc, bool accumulate) {
  const int64_t panels = (N + kPanel - 1) / kPanel, kc_max = 2 * kKcPairs;
  const int64_t packed_panels = (n_packed + kPanel - 1) / kPanel;
  ThreadScratch<uint32_t, 21> a_pack(size_t((std::min(K, kc_max) + 1) / 2 * kRows));  // (kp, 14)
  const bool rows_fit = gemm_rows_fit_l1_sets(a.rs * int64_t(sizeof(uint16_t)), kRows);
  for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
    const int64_t kc = std::min(kc_max, K - k0), kp = (kc + 1) / 2;
    for (int64_t i = 0; i < M; i += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, M - i);
      const bool in_place = a.cs == 1 && rows == kRows && kc % 2 == 0 && rows_fit;
      if (!in_place) pack_a(a.at(i, k0), rows, kc, a_pack.data());
      for (int64_t p = 0; p < panels; ++p) {
        const uint32_t* bp = packed_b + (k0 / 2 * packed_panels + (j0 / kPanel + p) * kp) * kPanel;
        float* cp = c + i * ldc + p * kPanel;
        const bool acc = accumulate || k0 > 0;
        if (in_place) micro_kernel<true>(a.at(i, k0).p, a.rs, bp, kp, cp, ldc, rows, N - p * kPanel, acc);
        else micro_kernel<false>(a_pack.data(), 0, bp, kp, cp, ldc, rows, N - p * kPanel, acc);
      }
    }
  }
}

#else

void pack_b_bf16(Strided<uint16_t>, int64_t, int64_t, uint32_t*) {}
void gemm_tile_bf16(int64_t, int64_t, int64_t, Strided<uint16_t>, const uint32_t*, int64_t, int64_t, float*,
                    int64_t, bool) {}

#endif

}  // namespace strata::cpu
