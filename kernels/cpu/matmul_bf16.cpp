// bf16 matmul forward on AVX512-BF16: out (N, OC) = inp (N, IC) @ weight (OC, IC)^T
// + bias, with vdpbf16ps multiplying bf16 pairs into f32 accumulators.
// The weight is packed once per call into panels of 32 output columns, each k-pair
// of a panel one 64-byte line pair, so the micro-kernel streams it linearly; inp rows
// are read in place (their k-pairs are broadcast).
// Invariants: accumulation is f32 over k in ascending pair order whatever the
// tiling, so results do not depend on the thread count; each output is rounded once
// through num::store<bf16>. vdpbf16ps flushes subnormal inputs and outputs to zero,
// unlike the sgemm path: harmless at bf16 precision, but the two paths are not
// bit-identical.
#include "matmul_bf16.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "thread_scratch.h"
#include "util.h"

#ifdef __AVX512BF16__
#include <immintrin.h>
#endif

namespace strata::cpu {

#ifdef __AVX512BF16__

namespace {

constexpr int64_t kPanel = 32;    // output columns per packed panel (two zmm)
constexpr int kRowsPerKernel = 8;  // rows of inp per micro-kernel call
constexpr int64_t kRowsPerTask = 64;
constexpr int64_t kPanelsPerTask = 4;

// Two consecutive bf16 values as one 32-bit word (element 2k in the low half).
inline uint32_t pair_at(const uint16_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// packed (panels, KP, 32) u32 = weight (OC, IC) bf16 pairs, KP = ceil(IC / 2);
// columns past OC and the odd k past IC are zero.
void pack_weight(const uint16_t* w, int64_t OC, int64_t IC, uint32_t* packed) {
  const int64_t KP = (IC + 1) / 2, panels = (OC + kPanel - 1) / kPanel;
  parallel_for(panels, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      uint32_t* dst = packed + p * KP * kPanel;
      for (int64_t j = 0; j < kPanel; ++j) {
        const int64_t o = p * kPanel + j;
        if (o >= OC) {
          for (int64_t kp = 0; kp < KP; ++kp) dst[kp * kPanel + j] = 0;
          continue;
        }
        const uint16_t* row = w + o * IC;
        for (int64_t kp = 0; kp < IC / 2; ++kp) dst[kp * kPanel + j] = pair_at(row + 2 * kp);
        if (IC % 2) dst[(KP - 1) * kPanel + j] = row[IC - 1];
      }
    }
  });
}

// acc (R, 32) = rows of `a` (R, K, row stride lda) times one packed panel.
template <int R>
void micro_kernel(const uint16_t* a, int64_t lda, const uint32_t* panel, int64_t K, float* acc) {
  __m512 c0[R], c1[R];
  for (int r = 0; r < R; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
  const int64_t full = K / 2;
  for (int64_t kp = 0; kp < full; ++kp) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + kp * kPanel);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + kp * kPanel + 16);
    for (int r = 0; r < R; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(pair_at(a + r * lda + 2 * kp)));
      c0[r] = _mm512_dpbf16_ps(c0[r], av, b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], av, b1);
    }
  }
  if (K % 2) {  // last k alone: the high half of the pair is zero in both operands
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(panel + full * kPanel);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(panel + full * kPanel + 16);
    for (int r = 0; r < R; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int(a[r * lda + K - 1]));
      c0[r] = _mm512_dpbf16_ps(c0[r], av, b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], av, b1);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(acc + r * kPanel, c0[r]);
    _mm512_storeu_ps(acc + r * kPanel + 16, c1[r]);
  }
}

void micro_kernel_rows(int rows, const uint16_t* a, int64_t lda, const uint32_t* panel, int64_t K,
                       float* acc) {
  switch (rows) {
    case 8: micro_kernel<8>(a, lda, panel, K, acc); break;
    case 7: micro_kernel<7>(a, lda, panel, K, acc); break;
    case 6: micro_kernel<6>(a, lda, panel, K, acc); break;
    case 5: micro_kernel<5>(a, lda, panel, K, acc); break;
    case 4: micro_kernel<4>(a, lda, panel, K, acc); break;
    case 3: micro_kernel<3>(a, lda, panel, K, acc); break;
    case 2: micro_kernel<2>(a, lda, panel, K, acc); break;
    default: micro_kernel<1>(a, lda, panel, K, acc); break;
  }
}

}  // namespace

bool matmul_forward_bf16(const ops::MatmulForwardArgs& a) {
  const int64_t OC = a.weight.shape[0], IC = a.weight.shape[1];
  const int64_t N = a.inp.numel() / IC;
  const int64_t KP = (IC + 1) / 2, panels = (OC + kPanel - 1) / kPanel;
  ThreadScratch<uint32_t, 0> packed_s(size_t(panels * KP * kPanel));  // (panels, KP, 32)
  const uint32_t* packed = packed_s.data();
  pack_weight(a.weight.ptr<uint16_t>(), OC, IC, packed_s.data());

  const uint16_t* inp = a.inp.ptr<uint16_t>();  // (N, IC)
  const bf16* bias = a.bias.defined() ? a.bias.ptr<bf16>() : nullptr;
  bf16* out = a.out.ptr<bf16>();  // (N, OC)
  const int64_t row_tasks = (N + kRowsPerTask - 1) / kRowsPerTask;
  const int64_t col_tasks = (panels + kPanelsPerTask - 1) / kPanelsPerTask;
  parallel_for(row_tasks * col_tasks, 1, [&](int64_t t0, int64_t t1) {
    alignas(64) float acc[kRowsPerKernel * kPanel];  // (8, 32)
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t r_begin = (t / col_tasks) * kRowsPerTask, r_end = std::min(N, r_begin + kRowsPerTask);
      const int64_t p_begin = (t % col_tasks) * kPanelsPerTask;
      const int64_t p_end = std::min(panels, p_begin + kPanelsPerTask);
      for (int64_t p = p_begin; p < p_end; ++p) {
        const int64_t c0 = p * kPanel, width = std::min(kPanel, OC - c0);
        for (int64_t r = r_begin; r < r_end; r += kRowsPerKernel) {
          const int rows = int(std::min<int64_t>(kRowsPerKernel, r_end - r));
          micro_kernel_rows(rows, inp + r * IC, IC, packed + p * KP * kPanel, IC, acc);
          for (int i = 0; i < rows; ++i) {
            bf16* __restrict dst = out + (r + i) * OC + c0;
            const float* __restrict src = acc + i * kPanel;
            if (bias) {
              for (int64_t j = 0; j < width; ++j) dst[j] = store<bf16>(src[j] + load(bias[c0 + j]));
            } else {
              for (int64_t j = 0; j < width; ++j) dst[j] = store<bf16>(src[j]);
            }
          }
        }
      }
    }
  });
  return true;
}

#else

bool matmul_forward_bf16(const ops::MatmulForwardArgs&) { return false; }

#endif

}  // namespace strata::cpu
