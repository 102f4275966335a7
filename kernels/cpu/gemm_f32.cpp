// The f32 GEMM tile on AVX-512 (gemm_avx512.h): a 14 x 32 register block (28 zmm
// accumulators) over B panels of 32 columns streamed linearly. A is broadcast from
// its rows in place when they are dense (packing them cost ~10%); dense rows at
// strides where the 14 rows would share L1 sets (gemm_rows_fit_l1_sets) and dense
// tails are copied to a padded row stride first; only A not dense in k (d_out^T) is
// packed k-major into slivers of 14 rows. Its rate against the FMA peak and
// OpenBLAS is measured by `strata-bench matmul` (docs/performance.md).
// Invariant: C (i, j) is summed in fixed K blocks of kGemmKcF32 (gemm_avx512.h): one FMA
// chain over each block's k in ascending order from 0 (the first block of an assigned
// C from the bias or 0), each block's chain then added to C in block order. One chain
// over a long K had several times the rounding error. Neither the tiling nor the
// packing changes a bit; tails are zero-padded in the copies and masked on store.
#include <cstring>

#ifdef __AVX512F__
// GCC 12 reports its own intrinsics' _mm*_undefined_*() as maybe-uninitialized
// (GCC bug 105593), located in the header: silence it there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include "gemm_avx512.h"
#include "thread_scratch.h"

namespace strata::cpu {

#ifdef __AVX512F__

namespace {

constexpr int kRows = int(kGemmRowsF32);
constexpr int64_t kPanel = 32;
constexpr int64_t kKc = kGemmKcF32;
// k ahead of the loads that the micro-kernel prefetches B (and a packed A) into L1:
// the L1 streamer alone left the FMAs waiting on L2 (docs/performance.md).
constexpr int64_t kPrefetchK = 16;

// The first w of 16 lanes.
inline __mmask16 lanes(int64_t w) { return w >= 16 ? __mmask16(0xffff) : w <= 0 ? 0 : __mmask16((1u << w) - 1); }

// Row stride of copied A rows: kKc plus one cache line, so the 14 rows fall into
// distinct L1 sets whatever the caller's stride was.
constexpr int64_t kCopyLd = kKc + 16;

// a_rows (kRows, kCopyLd) = dense A rows [0, rows) x k [0, kc), rows past `rows` zero.
// A plain copy: transposing dense rows into a k-major pack cost more than the FMAs
// saved for thin outputs.
void copy_a_rows(Strided<float> a, int64_t rows, int64_t kc, float* __restrict dst) {
  for (int64_t r = 0; r < kRows; ++r) {
    if (r < rows) std::memcpy(dst + r * kCopyLd, a.p + r * a.rs, size_t(kc) * sizeof(float));
    else std::memset(dst + r * kCopyLd, 0, size_t(kc) * sizeof(float));
  }
}

// a_pack (kc, kRows) = A rows [0, rows) x k [0, kc), rows past `rows` zero; A not
// dense in k (a.cs != 1).
void pack_a(Strided<float> a, int64_t rows, int64_t kc, float* __restrict dst) {
  if (rows < kRows) std::memset(dst, 0, size_t(kc * kRows) * sizeof(float));
  if (a.rs == 1) {  // d_out^T: each k a contiguous run of rows, one masked move
    const __mmask16 m = lanes(rows);
    for (int64_t k = 0; k < kc; ++k)
      _mm512_mask_storeu_ps(dst + k * kRows, m, _mm512_maskz_loadu_ps(m, a.p + k * a.cs));
  } else {
    for (int64_t k = 0; k < kc; ++k) {
      const float* __restrict src = a.p + k * a.cs;
      for (int64_t r = 0; r < rows; ++r) dst[k * kRows + r] = src[r * a.rs];
    }
  }
}

// b_pack (panels, kc, 32) = B k [0, kc) x columns [0, n), columns past n zero.
void pack_b(Strided<float> b, int64_t kc, int64_t n, float* __restrict dst) {
  for (int64_t j0 = 0; j0 < n; j0 += kPanel, dst += kc * kPanel) {
    const int64_t w = std::min(kPanel, n - j0);
    if (w < kPanel) std::memset(dst, 0, size_t(kc * kPanel) * sizeof(float));
    if (b.cs == 1) {
      for (int64_t k = 0; k < kc; ++k) std::memcpy(dst + k * kPanel, b.p + k * b.rs + j0, size_t(w) * 4);
    } else {
      for (int64_t j = 0; j < w; ++j) {
        const float* __restrict src = b.p + (j0 + j) * b.cs;
        for (int64_t k = 0; k < kc; ++k) dst[k * kPanel + j] = src[k * b.rs];
      }
    }
  }
}

// c (rows, width) [+]= A (kRows, kc) @ b_panel (kc, 32), A either a_pack (kc, kRows)
// or, kInPlace, kRows full rows with row stride lda (no packing when rows are dense).
// The chain over kc starts from 0, or from `init` (width, the bias) when set; with
// `accumulate` the finished chain is added to c, one rounding.
template <bool kInPlace>
void micro_kernel(const float* __restrict ap, int64_t lda, const float* __restrict bp, int64_t kc, float* c,
                  int64_t ldc, int64_t rows, int64_t width, bool accumulate, const float* init) {
  const __mmask16 m0 = lanes(width), m1 = lanes(width - 16);
  const __m512 i0 = init ? _mm512_maskz_loadu_ps(m0, init) : _mm512_setzero_ps();
  const __m512 i1 = init ? _mm512_maskz_loadu_ps(m1, init + 16) : _mm512_setzero_ps();
  __m512 c0[kRows], c1[kRows];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) c0[r] = i0, c1[r] = i1;
  for (int64_t k = 0; k < kc; ++k, ap += kInPlace ? 1 : kRows, bp += kPanel) {
    const __m512 b0 = _mm512_loadu_ps(bp), b1 = _mm512_loadu_ps(bp + 16);
    // Past the panel's end this touches the next panel or nothing: prefetches never fault.
    _mm_prefetch(reinterpret_cast<const char*>(bp + kPrefetchK * kPanel), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(bp + kPrefetchK * kPanel + 16), _MM_HINT_T0);
    if constexpr (!kInPlace) _mm_prefetch(reinterpret_cast<const char*>(ap + kPrefetchK * kRows), _MM_HINT_T0);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const __m512 av = _mm512_set1_ps(kInPlace ? ap[r * lda] : ap[r]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    if (r >= rows) break;
    if (accumulate) {
      c0[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c + r * ldc), c0[r]);
      c1[r] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + r * ldc + 16), c1[r]);
    }
    _mm512_mask_storeu_ps(c + r * ldc, m0, c0[r]);
    _mm512_mask_storeu_ps(c + r * ldc + 16, m1, c1[r]);
  }
}

}  // namespace

void pack_b_f32(Strided<float> b, int64_t K, int64_t N, float* packed) {
  const int64_t panels = (N + kPanel - 1) / kPanel, blocks = (K + kKc - 1) / kKc;
  parallel_for(blocks * panels, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t k0 = t / panels * kKc, p = t % panels, kc = std::min(kKc, K - k0);
      pack_b(b.at(k0, p * kPanel), kc, std::min(kPanel, N - p * kPanel), packed + k0 * panels * kPanel + p * kc * kPanel);
    }
  });
}

void pack_a_f32(Strided<float> a, int64_t M, int64_t K, float* packed) {
  parallel_for((M + kRows - 1) / kRows, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) pack_a(a.at(s * kRows, 0), std::min<int64_t>(kRows, M - s * kRows), K, packed + s * kRows * K);
  });
}

namespace {

// gemm_tile_f32 with A read from `a`, or (packed_a set) from pack_a_f32's slivers.
void gemm_tile(int64_t M, int64_t N, int64_t K, Strided<float> a, const float* packed_a, const float* packed_b,
               int64_t n_packed, int64_t j0, float* c, int64_t ldc, bool accumulate, const float* bias) {
  const int64_t panels = (N + kPanel - 1) / kPanel, packed_panels = (n_packed + kPanel - 1) / kPanel;
  const bool dense = !packed_a && a.cs == 1;
  ThreadScratch<float, 21> a_pack(packed_a ? 0 : size_t(std::max(std::min(K, kKc) * kRows, kRows * kCopyLd)));
  const bool rows_fit = dense && gemm_rows_fit_l1_sets(a.rs * int64_t(sizeof(float)), kRows);
  for (int64_t k0 = 0; k0 < K; k0 += kKc) {
    const int64_t kc = std::min(kKc, K - k0);
    for (int64_t i = 0; i < M; i += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, M - i);
      // Dense full rows at a stride that fits L1 are read in place, other dense rows
      // from a copy at kCopyLd, and A not dense in k from a k-major pack.
      const bool in_place = dense && rows == kRows && rows_fit;
      const float* ap = packed_a ? packed_a + i * K + k0 * kRows : in_place ? a.at(i, k0).p : a_pack.data();
      if (dense && !in_place) copy_a_rows(a.at(i, k0), rows, kc, a_pack.data());
      else if (!dense && !packed_a) pack_a(a.at(i, k0), rows, kc, a_pack.data());
      const int64_t lda = in_place ? a.rs : kCopyLd;
      for (int64_t p = 0; p < panels; ++p) {
        const float* bp = packed_b + (k0 * packed_panels + (j0 / kPanel + p) * kc) * kPanel;
        float* cp = c + i * ldc + p * kPanel;
        const bool acc = accumulate || k0 > 0;
        const float* init = bias && !acc ? bias + p * kPanel : nullptr;
        if (dense) micro_kernel<true>(ap, lda, bp, kc, cp, ldc, rows, N - p * kPanel, acc, init);
        else micro_kernel<false>(ap, 0, bp, kc, cp, ldc, rows, N - p * kPanel, acc, init);
      }
    }
  }
}

}  // namespace

void gemm_tile_f32(int64_t M, int64_t N, int64_t K, Strided<float> a, const float* packed_b, int64_t n_packed,
                   int64_t j0, float* c, int64_t ldc, bool accumulate, const float* bias) {
  gemm_tile(M, N, K, a, nullptr, packed_b, n_packed, j0, c, ldc, accumulate, bias);
}

void gemm_tile_f32_packed_a(int64_t M, int64_t N, int64_t K, const float* packed_a, const float* packed_b,
                            int64_t n_packed, int64_t j0, float* c, int64_t ldc, bool accumulate) {
  gemm_tile(M, N, K, {}, packed_a, packed_b, n_packed, j0, c, ldc, accumulate, nullptr);
}

#else

void pack_b_f32(Strided<float>, int64_t, int64_t, float*) {}
void pack_a_f32(Strided<float>, int64_t, int64_t, float*) {}
void gemm_tile_f32(int64_t, int64_t, int64_t, Strided<float>, const float*, int64_t, int64_t, float*, int64_t,
                   bool, const float*) {}
void gemm_tile_f32_packed_a(int64_t, int64_t, int64_t, const float*, const float*, int64_t, int64_t, float*,
                            int64_t, bool) {}

#endif

}  // namespace strata::cpu
