// Few-row f32 and bf16 matmul (decoding: one row per sequence) that reads the weight in its
// stored (OC, IC) layout instead of packing it per call as the GEMM tile does:
//   out (N, OC) = inp (N, IC) @ weight (OC, IC)^T + bias,  N <= kGemvRows.
// Sixteen weight rows x sixteen k are loaded and transposed in registers, so lane j
// of a vector is column j of W^T, and each output is summed as the GEMM tile sums it
// (gemm_f32.cpp's invariant): a fused multiply-add chain over k in ascending order per
// K block of kGemmKcF32, the first from its bias (or 0), the blocks added in order.
// bf16 (on AVX512-BF16, IC even) does the same with k pairs and vdpbf16ps, as the bf16
// tile does.
// Invariant: bitwise the result of the GEMM path, for any N up to kGemvRows, so which
// of the two runs never changes a bit (batched decoding equals one row alone).
#include "gemv.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "activation_math.h"
#include "gemm_avx512.h"
#include "transpose16.h"
#include "util.h"

namespace strata::cpu {

#ifdef __AVX512F__

namespace {

// Columns [j0, j0 + 16) of out rows [0, n): out row stride ldo, masked past OC.
template <int64_t kRows>
void column_block(const float* inp, int64_t n, const float* w, const float* bias, int64_t IC, int64_t OC, int64_t j0,
                  float* out, int64_t ldo) {
  const int64_t width = std::min<int64_t>(16, OC - j0);
  const __mmask16 cols = __mmask16((1u << width) - 1);
  __m512 c[kRows];
  for (int64_t r = 0; r < kRows; ++r) c[r] = bias ? _mm512_maskz_loadu_ps(cols, bias + j0) : _mm512_setzero_ps();
  __m512 col[16], part[kRows];
  static_assert(kGemmKcF32 % 16 == 0, "a K block holds whole 16-k steps");
  // The GEMM's K blocks (gemm_f32.cpp): the first block's chain starts from the bias,
  // each later one from 0 and is then added, so a row is bitwise the GEMM's row.
  for (int64_t kb = 0; kb < IC; kb += kGemmKcF32) {
    __m512* acc = kb == 0 ? c : part;
    if (kb > 0)
      for (int64_t r = 0; r < kRows; ++r) part[r] = _mm512_setzero_ps();
    for (int64_t k0 = kb; k0 < std::min(IC, kb + kGemmKcF32); k0 += 16) {
      const int64_t kc = std::min<int64_t>(16, IC - k0);
      const __mmask16 ks = __mmask16((1u << kc) - 1);
      for (int64_t i = 0; i < 16; ++i)
        col[i] = i < width ? _mm512_maskz_loadu_ps(ks, w + (j0 + i) * IC + k0) : _mm512_setzero_ps();
      transpose16(col);
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t r = 0; r < kRows; ++r)
          if (r < n) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(inp[r * IC + k0 + k]), col[k], acc[r]);
    }
    if (kb > 0)
      for (int64_t r = 0; r < kRows; ++r) c[r] = _mm512_add_ps(c[r], part[r]);
  }
  for (int64_t r = 0; r < n; ++r) _mm512_mask_storeu_ps(out + r * ldo + j0, cols, c[r]);
}

#ifdef __AVX512BF16__
// The bf16 form: a u32 of a bf16 row is the k pair (2q, 2q + 1) the bf16 tile
// multiplies with vdpbf16ps, so the same transpose gives its packed panel; each output
// is the tile's chain of pairs from 0, then + bias and one rounding (matmul_bf16.cpp).
// IC is even (the caller's condition), so no pair straddles two rows.
template <int64_t kRows>
void column_block_bf16(const uint16_t* inp, int64_t n, const uint16_t* w, const bf16* bias, int64_t IC, int64_t OC,
                       int64_t j0, bf16* out, int64_t ldo) {
  const int64_t width = std::min<int64_t>(16, OC - j0), pairs = IC / 2;
  const __mmask16 cols = __mmask16((1u << width) - 1);
  __m512 c[kRows];
  for (int64_t r = 0; r < kRows; ++r) c[r] = _mm512_setzero_ps();
  __m512 col[16];
  for (int64_t q0 = 0; q0 < pairs; q0 += 16) {
    const int64_t qc = std::min<int64_t>(16, pairs - q0);
    const __mmask16 qs = __mmask16((1u << qc) - 1);
    for (int64_t i = 0; i < 16; ++i)
      col[i] = i < width ? _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(qs, w + (j0 + i) * IC + 2 * q0))
                         : _mm512_setzero_ps();
    transpose16(col);
    for (int64_t q = 0; q < qc; ++q)
      for (int64_t r = 0; r < kRows; ++r)
        if (r < n) {
          uint32_t word;
          std::memcpy(&word, inp + r * IC + 2 * (q0 + q), 4);
          c[r] = _mm512_dpbf16_ps(c[r], (__m512bh)_mm512_set1_epi32(int(word)), (__m512bh)_mm512_castps_si512(col[q]));
        }
  }
  float lanes[16];
  for (int64_t r = 0; r < n; ++r) {
    _mm512_storeu_ps(lanes, c[r]);
    bf16* __restrict dst = out + r * ldo + j0;
    for (int64_t j = 0; j < width; ++j) dst[j] = store<bf16>(bias ? lanes[j] + load(bias[j0 + j]) : lanes[j]);
  }
  (void)cols;
}
#endif

// Output columns in blocks of 16 over oneTBB tasks, then the GELU epilogue per task.
template <class T, class F>
void for_column_blocks(const ops::MatmulForwardArgs& a, int64_t N, int64_t OC, int64_t IC, F&& block) {
  const int64_t ldo = a.out.size(-1), blocks = (OC + 15) / 16;
  T* out = (a.gelu_pre.defined() ? a.gelu_pre : a.out).ptr<T>();
  // A task of several blocks: enough weight rows that the spawn is cheap beside them.
  parallel_for(blocks, std::max<int64_t>(1, 4096 / std::max<int64_t>(IC, 1)), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) block(b * 16, out, ldo);
    if (a.gelu_pre.defined()) {
      const int64_t c0 = b0 * 16, c1 = std::min(OC, b1 * 16);
      gelu_tile(static_cast<const T*>(out) + c0, a.out.ptr<T>() + c0, N, c1 - c0, ldo);
    }
  });
}

}  // namespace

bool matmul_forward_gemv(const ops::MatmulForwardArgs& a) {
  const int64_t OC = a.weight.shape[0], IC = a.weight.shape[1], N = a.inp.numel() / IC;
  if (N > kGemvRows) return false;
  if (a.weight.dtype == DType::f32) {
    const float* bias = a.bias.defined() ? a.bias.ptr<float>() : nullptr;
    for_column_blocks<float>(a, N, OC, IC, [&](int64_t j0, float* out, int64_t ldo) {
      column_block<kGemvRows>(a.inp.ptr<float>(), N, a.weight.ptr<float>(), bias, IC, OC, j0, out, ldo);
    });
    return true;
  }
#ifdef __AVX512BF16__
  if (a.weight.dtype == DType::bf16 && IC % 2 == 0) {
    const bf16* bias = a.bias.defined() ? a.bias.ptr<bf16>() : nullptr;
    for_column_blocks<bf16>(a, N, OC, IC, [&](int64_t j0, bf16* out, int64_t ldo) {
      column_block_bf16<kGemvRows>(a.inp.ptr<uint16_t>(), N, a.weight.ptr<uint16_t>(), bias, IC, OC, j0, out, ldo);
    });
    return true;
  }
#endif
  return false;
}

#else

bool matmul_forward_gemv(const ops::MatmulForwardArgs&) { return false; }

#endif

}  // namespace strata::cpu
