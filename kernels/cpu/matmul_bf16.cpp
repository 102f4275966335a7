// bf16 matmul on AVX512-BF16, forward and backward, on the gemm_tile_bf16 tiles, or on
// AMX's gemm_tile_amx where this process may use it (gemm_amx.h, decided once):
//   out (N, OC)    = inp (N, IC) @ weight (OC, IC)^T + bias
//   d_inp (N, IC)  = d_out (N, OC) @ weight (OC, IC)
//   d_weight (OC, IC) += d_out^T (OC, N) @ inp (N, IC);  d_bias (OC) += sum of d_out rows
// A operands are read in place through strides (the tiles pack them), B operands are
// packed once per call; products are exact bf16 x bf16 in f32, accumulated in f32.
// A padded out / d_out (out_padded, d_out_padded) only changes their row stride.
// Invariants: tiles split only output dimensions, so each element is summed in the
// same order on any thread count; every 16-bit output is rounded once, d_weight
// included (its tile is loaded to f32, accumulated, stored). vdpbf16ps flushes
// subnormal inputs and outputs to zero, unlike the f32 path: harmless at bf16
// precision, but the two paths are not bit-identical.
#include "matmul_bf16.h"

#include <algorithm>
#include <cstdint>

#include "activation_math.h"
#include "gemm_amx.h"
#include "gemm_avx512.h"
#include "thread_scratch.h"
#include "util.h"

namespace strata::cpu {

#ifdef __AVX512BF16__

namespace {

constexpr int kTileSlot = 30;  // the f32 C tile of one task
constexpr int kPackSlot = 31;  // the packed B of one call

const uint16_t* bits(const TensorView& t) { return t.ptr<uint16_t>(); }

// The tile every bf16 GEMM of this process runs on, and its row quantum.
struct Bf16Tile {
  decltype(&gemm_tile_bf16) run;
  int64_t rows;
};
const Bf16Tile& bf16_tile() {
  static const Bf16Tile t = amx_bf16_enabled() ? Bf16Tile{gemm_tile_amx, kGemmRowsAmx}
                                               : Bf16Tile{gemm_tile_bf16, kGemmRowsBf16};
  return t;
}

// acc (width) = column sums of d_out (N, OC) over columns [c0, c0 + width), in row order.
void column_sums(const bf16* d_out, int64_t N, int64_t OC, int64_t c0, int64_t width, float* acc) {
  std::fill(acc, acc + width, 0.0f);
  for (int64_t r = 0; r < N; ++r) {
    const bf16* __restrict row = d_out + r * OC + c0;
    for (int64_t j = 0; j < width; ++j) acc[j] += load(row[j]);
  }
}

// d_bias (OC) += column sums of d_out, d_bias bf16 or f32.
void bias_backward(const TensorView& d_bias, const bf16* d_out, int64_t N, int64_t OC) {
  dispatch_float(d_bias.dtype, [&](auto tag) {
    using D = decltype(tag);
    D* db = d_bias.ptr<D>();
    parallel_for(OC, 128, [&](int64_t o0, int64_t o1) {
      float acc[128];
      for (int64_t c0 = o0; c0 < o1; c0 += 128) {
        const int64_t w = std::min<int64_t>(128, o1 - c0);
        column_sums(d_out, N, OC, c0, w, acc);
        for (int64_t j = 0; j < w; ++j) db[c0 + j] = store<D>(load(db[c0 + j]) + acc[j]);
      }
    });
  });
}

// d_weight (OC, IC) += d_out^T @ inp: in place when f32, else through an f32 tile.
void weight_backward(const ops::MatmulBackwardArgs& a, int64_t N, int64_t OC, int64_t IC) {
  const Strided<uint16_t> d_out_t{bits(a.d_out), 1, a.d_out.size(-1)};  // (OC, N)
  const Bf16Tile& tile = bf16_tile();
  ThreadScratch<uint32_t, kPackSlot> inp(size_t(packed_b_size_bf16(N, IC)));
  pack_b_bf16({bits(a.inp), IC, 1}, N, IC, inp.data());  // (N, IC)
  GemmTiles::plan(OC, IC, tile.rows).for_each([&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    const int64_t m = i1 - i0, n = j1 - j0;
    if (a.d_weight.dtype == DType::f32) {
      tile.run(m, n, N, d_out_t.at(i0, 0), inp.data(), IC, j0, a.d_weight.ptr<float>() + i0 * IC + j0, IC,
                     true);
      return;
    }
    ThreadScratch<float, kTileSlot> c(size_t(m * n));  // (m, n)
    bf16* dw = a.d_weight.ptr<bf16>() + i0 * IC + j0;   // (m, n) with row stride IC
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < n; ++j) c.data()[r * n + j] = load(dw[r * IC + j]);
    tile.run(m, n, N, d_out_t.at(i0, 0), inp.data(), IC, j0, c.data(), n, true);
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < n; ++j) dw[r * IC + j] = store<bf16>(c.data()[r * n + j]);
  });
}

// d_inp (N, IC) = d_out @ weight.
void input_backward(const ops::MatmulBackwardArgs& a, int64_t N, int64_t OC, int64_t IC) {
  const Strided<uint16_t> d_out{bits(a.d_out), a.d_out.size(-1), 1};  // (N, OC), row stride OCp when padded
  const Bf16Tile& tile = bf16_tile();
  ThreadScratch<uint32_t, kPackSlot> w(size_t(packed_b_size_bf16(OC, IC)));
  pack_b_bf16({bits(a.weight), IC, 1}, OC, IC, w.data());  // (OC, IC)
  bf16* d_inp = a.d_inp.ptr<bf16>();
  GemmTiles::plan(N, IC, tile.rows).for_each([&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    const int64_t m = i1 - i0, n = j1 - j0;
    ThreadScratch<float, kTileSlot> c(size_t(m * n));  // (m, n)
    tile.run(m, n, OC, d_out.at(i0, 0), w.data(), IC, j0, c.data(), n, false);
    for (int64_t r = 0; r < m; ++r) {
      bf16* __restrict dst = d_inp + (i0 + r) * IC + j0;
      const float* __restrict src = c.data() + r * n;
      for (int64_t j = 0; j < n; ++j) dst[j] = store<bf16>(src[j]);
    }
  });
}

}  // namespace

bool matmul_forward_bf16(const ops::MatmulForwardArgs& a) {
  const int64_t OC = a.weight.shape[0], IC = a.weight.shape[1], ldo = a.out.size(-1);  // ldo = OC unless padded
  const int64_t N = a.inp.numel() / IC;
  const Strided<uint16_t> inp{bits(a.inp), IC, 1};    // (N, IC)
  const Bf16Tile& tile = bf16_tile();
  ThreadScratch<uint32_t, kPackSlot> w_t(size_t(packed_b_size_bf16(IC, OC)));
  pack_b_bf16({bits(a.weight), 1, IC}, IC, OC, w_t.data());  // (IC, OC)
  const bf16* bias = a.bias.defined() ? a.bias.ptr<bf16>() : nullptr;
  // (N, OC); with the GELU epilogue the GEMM writes gelu_pre, GELU'd into out per tile.
  bf16* out = (a.gelu_pre.defined() ? a.gelu_pre : a.out).ptr<bf16>();
  GemmTiles::plan(N, OC, tile.rows).for_each([&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    const int64_t m = i1 - i0, n = j1 - j0;
    ThreadScratch<float, kTileSlot> c(size_t(m * n));  // (m, n)
    tile.run(m, n, IC, inp.at(i0, 0), w_t.data(), OC, j0, c.data(), n, false);
    for (int64_t r = 0; r < m; ++r) {
      bf16* __restrict dst = out + (i0 + r) * ldo + j0;
      const float* __restrict src = c.data() + r * n;
      if (bias) {
        for (int64_t j = 0; j < n; ++j) dst[j] = store<bf16>(src[j] + load(bias[j0 + j]));
      } else {
        for (int64_t j = 0; j < n; ++j) dst[j] = store<bf16>(src[j]);
      }
    }
    if (a.gelu_pre.defined())
      gelu_tile(static_cast<const bf16*>(out + i0 * ldo + j0), a.out.ptr<bf16>() + i0 * ldo + j0, m, n, ldo);
  });
  return true;
}

bool matmul_backward_bf16(const ops::MatmulBackwardArgs& a) {
  const int64_t OC = a.weight.shape[0], IC = a.weight.shape[1];
  const int64_t N = a.d_out.numel() / a.d_out.size(-1);
  if (a.d_bias.defined()) bias_backward(a.d_bias, a.d_out.ptr<bf16>(), N, OC);
  if (a.d_inp.defined()) input_backward(a, N, OC, IC);
  if (a.d_weight.defined()) weight_backward(a, N, OC, IC);
  return true;
}

const char* bf16_gemm_path() { return amx_bf16_enabled() ? "AMX tdpbf16ps" : "AVX512 vdpbf16ps"; }

#else

bool matmul_forward_bf16(const ops::MatmulForwardArgs&) { return false; }
bool matmul_backward_bf16(const ops::MatmulBackwardArgs&) { return false; }
const char* bf16_gemm_path() { return "f32 (no AVX512-BF16 in this build)"; }

#endif

}  // namespace strata::cpu
