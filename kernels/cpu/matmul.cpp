// CPU matmul (PyTorch Linear): out (N, OC) = inp (N, IC) @ weight (OC, IC)^T + bias.
// f32 GEMMs run on the AVX-512 tile of gemm_f32.cpp when the build targets AVX-512
// (faster than OpenBLAS's Haswell kernels, which CI forces), else on single-threaded
// OpenBLAS sgemm; either way one call per output tile, with the tiles spread over
// oneTBB tasks: oneTBB owns the cores, OpenBLAS never spawns.
// f16 operands are converted to f32 scratch, multiplied in f32 and rounded once on
// store; bf16 goes to the AVX512-BF16 kernels (matmul_bf16.cpp) when the build
// targets them, else takes the f16 road.
// With gelu_pre defined, each output tile is written to gelu_pre and GELU'd into out
// while it is still in cache (activation_math.h's gelu_tile).
// A padded out / d_out (out_padded, d_out_padded) only changes their row stride.
// Invariants: d_inp is assigned; d_weight and d_bias accumulate (+=), with one
// rounding per call when they are 16-bit. Tiles split only output dimensions, never
// the reduction, so every element is summed in the same order on any thread count.
#include <cblas.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "activation_math.h"
#include "cpu.h"
#include "gemm_avx512.h"
#include "gemv.h"
#include "matmul_bf16.h"
#include "strata/device.h"
#include "thread_scratch.h"
#include "util.h"
#include "op_profile.h"

namespace strata::cpu {

namespace {

// Scratch slots: held across a parallel_for (converted weight, accumulators, chunks)
// vs used inside one tile task.
enum Slot { kWeight, kDWeight, kDOut, kInp, kBias, kTileA, kTileC, kPackW, kPackInp, kPackDOut };

void blas_single_threaded() {
  static const bool once = (openblas_set_num_threads(1), true);
  (void)once;
}

// p rounded up to a cache line (64 B): the scratch is only 16-byte aligned, and each
// unaligned 64-byte load of a packed panel splits across two lines.
inline float* align_line(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

// B (k, n) as the f32 GEMM wants it: packed once (in parallel) for the AVX-512 tile,
// or left in place for OpenBLAS, which packs per call.
class PackedB {
 public:
  PackedB() = default;
  template <int Slot>
  PackedB(Strided<float> b, int64_t k, int64_t n, ThreadScratch<float, Slot>& scratch)
      : b_(b), n_(n), packed_(align_line(scratch.data())) {
    if constexpr (kHaveGemmF32) pack_b_f32(b, k, n, const_cast<float*>(packed_));
  }
  // Elements of the scratch a PackedB of B (k, n) needs, with room to align it.
  static size_t size(int64_t k, int64_t n) { return kHaveGemmF32 ? size_t(packed_b_size_f32(k, n)) + 16 : 0; }

  // C (m, n) [+]= A (m, k) @ columns [j0, j0 + n) of B, on this thread; with `bias`
  // (n), C = bias + A @ B.
  void gemm(int64_t m, int64_t n, int64_t k, Strided<float> a, int64_t j0, float* c, int64_t ldc,
            bool accumulate, const float* bias = nullptr) const {
    if constexpr (kHaveGemmF32) {
      gemm_tile_f32(m, n, k, a, packed_, n_, j0, c, ldc, accumulate, bias);
    } else {  // OpenBLAS wants one unit stride per operand
      if (bias) {
        for (int64_t r = 0; r < m; ++r) std::memcpy(c + r * ldc, bias, size_t(n) * sizeof(float));
        accumulate = true;
      }
      const Strided<float> b = b_.at(0, j0);
      const bool ta = a.cs != 1, tb = b.cs != 1;
      cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m),
                  int(n), int(k), 1.0f, a.p, int(ta ? a.cs : a.rs), b.p, int(tb ? b.cs : b.rs),
                  accumulate ? 1.0f : 0.0f, c, int(ldc));
    }
  }

  // The same with A (m, k) the tile's rows of a pack_a_f32 (AVX-512 builds only).
  void gemm_packed_a(int64_t m, int64_t n, int64_t k, const float* packed_a, int64_t j0, float* c, int64_t ldc,
                     bool accumulate) const {
    gemm_tile_f32_packed_a(m, n, k, packed_a, packed_, n_, j0, c, ldc, accumulate);
  }

 private:
  Strided<float> b_{};
  int64_t n_ = 0;  // columns of B
  const float* packed_ = nullptr;
};

GemmTiles plan_tiles(int64_t rows, int64_t cols) { return GemmTiles::plan(rows, cols, kGemmRowsF32); }

template <class T>
void to_f32(const T* __restrict src, float* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = load(src[i]);
}

// Rows of a 16-bit matrix with row stride ld (0: cols) as f32, with the same row
// stride (the padding columns are not converted): the matrix itself when T is float.
template <class T>
const float* rows_f32(const T* src, int64_t n_rows, int64_t cols, float* scratch, int64_t ld = 0) {
  if constexpr (std::is_same_v<T, float>) {
    return src;
  } else {
    if (ld == 0 || ld == cols) {
      parallel_for(n_rows, std::max<int64_t>(1, 16384 / cols), [&](int64_t r0, int64_t r1) {
        to_f32(src + r0 * cols, scratch + r0 * cols, (r1 - r0) * cols);
      });
    } else {
      parallel_for(n_rows, std::max<int64_t>(1, 16384 / cols), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) to_f32(src + r * ld, scratch + r * ld, cols);
      });
    }
    return scratch;
  }
}

// dst (n) += acc (n), dst f32 or 16-bit.
void accumulate_f32(const TensorView& dst, const float* acc, int64_t n) {
  dispatch_float(dst.dtype, [&](auto tag) {
    using D = decltype(tag);
    D* d = dst.ptr<D>();
    parallel_for(n, 16384, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) d[i] = store<D>(load(d[i]) + acc[i]);
    });
  });
}

// out tile (r1-r0, c1-c0) = inp rows @ weight rows^T + bias, stored to T (to
// gelu_pre, then GELU'd into out, with the epilogue).
template <class T>
void forward_tile(const ops::MatmulForwardArgs& a, const PackedB& w_t, int64_t r0, int64_t r1,
                  int64_t c0, int64_t c1) {
  const int64_t IC = a.weight.shape[1], ldo = a.out.size(-1);  // ldo = OC unless out_padded
  const int64_t n = r1 - r0, m = c1 - c0;
  const T* bias = a.bias.defined() ? a.bias.ptr<T>() + c0 : nullptr;
  const bool epilogue = a.gelu_pre.defined();
  T* out = (epilogue ? a.gelu_pre : a.out).ptr<T>() + r0 * ldo + c0;  // (n, m) with row stride ldo
  if constexpr (std::is_same_v<T, float>) {
    w_t.gemm(n, m, IC, {a.inp.ptr<float>() + r0 * IC, IC, 1}, c0, out, ldo, false, bias);
  } else {
    ThreadScratch<float, kTileA> inp_f(size_t(n * IC));  // (n, IC)
    ThreadScratch<float, kTileC> out_f(size_t(n * m));   // (n, m)
    to_f32(a.inp.ptr<T>() + r0 * IC, inp_f.data(), n * IC);
    w_t.gemm(n, m, IC, {inp_f.data(), IC, 1}, c0, out_f.data(), m, false);
    for (int64_t r = 0; r < n; ++r) {
      const float* __restrict src = out_f.data() + r * m;
      T* __restrict dst = out + r * ldo;
      if (bias) {
        for (int64_t j = 0; j < m; ++j) dst[j] = store<T>(src[j] + load(bias[j]));
      } else {
        for (int64_t j = 0; j < m; ++j) dst[j] = store<T>(src[j]);
      }
    }
  }
  if (epilogue) gelu_tile(static_cast<const T*>(out), a.out.ptr<T>() + r0 * ldo + c0, n, m, ldo);
}

template <class T>
void forward(const ops::MatmulForwardArgs& a) {
  const int64_t OC = a.weight.shape[0], IC = a.weight.shape[1];
  const int64_t N = a.inp.numel() / IC;
  ThreadScratch<float, kWeight> w_scratch(std::is_same_v<T, float> ? 0 : size_t(OC * IC));
  const float* wf = rows_f32(a.weight.ptr<T>(), OC, IC, w_scratch.data());  // (OC, IC)
  ThreadScratch<float, kPackW> w_pack(PackedB::size(IC, OC));
  const PackedB w_t({wf, 1, IC}, IC, OC, w_pack);  // (IC, OC)
  plan_tiles(N, OC).for_each(
      [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) { forward_tile<T>(a, w_t, r0, r1, c0, c1); });
}

// Rows [k0, k0 + kc) of the backward: d_inp rows (assigned) and their contribution
// to d_weight (accumulated in f32 into dw, row stride IC), in one set of tasks.
// d_out_f has row stride ldd (OC unless d_out_padded).
template <class T>
void backward_chunk(const ops::MatmulBackwardArgs& a, const float* d_out_f, int64_t ldd, const float* inp_f,
                    const PackedB* w, float* dw, int64_t k0, int64_t kc) {
  const int64_t OC = a.weight.shape[0], IC = a.weight.shape[1];
  const GemmTiles t_inp = a.d_inp.defined() ? plan_tiles(kc, IC) : GemmTiles{0, 0, 1, 1};
  const GemmTiles t_w = dw ? plan_tiles(OC, IC) : GemmTiles{0, 0, 1, 1};
  auto input_tile = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    const int64_t n = r1 - r0, m = c1 - c0;
    const Strided<float> d_out{d_out_f + r0 * ldd, ldd, 1};
    T* out = a.d_inp.ptr<T>() + (k0 + r0) * IC + c0;  // (n, m) with row stride IC
    if constexpr (std::is_same_v<T, float>) {
      w->gemm(n, m, OC, d_out, c0, out, IC, false);
    } else {
      ThreadScratch<float, kTileC> out_f(size_t(n * m));  // (n, m)
      w->gemm(n, m, OC, d_out, c0, out_f.data(), m, false);
      for (int64_t r = 0; r < n; ++r) {
        const float* __restrict src = out_f.data() + r * m;
        T* __restrict dst = out + r * IC;
        for (int64_t j = 0; j < m; ++j) dst[j] = store<T>(src[j]);
      }
    }
  };
  ThreadScratch<float, kPackInp> inp_pack(dw ? PackedB::size(kc, IC) : 0);
  const PackedB inp = dw ? PackedB({inp_f, IC, 1}, kc, IC, inp_pack) : PackedB();  // (kc, IC)
  // d_out^T, read column-wise, is packed once for all column tiles.
  const bool pack_d_out = dw && kHaveGemmF32;
  ThreadScratch<float, kPackDOut> d_out_pack(pack_d_out ? size_t(packed_a_size_f32(OC, kc)) : 0);
  if (pack_d_out) pack_a_f32({d_out_f, 1, ldd}, OC, kc, d_out_pack.data());
  auto weight_tile = [&](int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    float* c = dw + r0 * IC + c0;
    if (pack_d_out) inp.gemm_packed_a(r1 - r0, c1 - c0, kc, d_out_pack.data() + r0 * kc, c0, c, IC, true);
    else inp.gemm(r1 - r0, c1 - c0, kc, {d_out_f + r0, 1, ldd}, c0, c, IC, true);
  };
  // One set of tasks for both products, so neither waits for the other's stragglers.
  parallel_for(t_inp.count() + t_w.count(), 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const bool inp_task = t < t_inp.count();
      int64_t r0, r1, c0, c1;
      if (inp_task) t_inp.bounds(t, r0, r1, c0, c1);
      else t_w.bounds(t - t_inp.count(), r0, r1, c0, c1);
      if (inp_task) input_tile(r0, r1, c0, c1);
      else weight_tile(r0, r1, c0, c1);
    }
  });
}

// acc (OC) += column sums of d_out_f (kc, OC), each column summed in row order.
void bias_chunk(const float* d_out_f, float* acc, int64_t kc, int64_t OC) {
  parallel_for(OC, 256, [&](int64_t o0, int64_t o1) {
    float* __restrict s = acc + o0;
    for (int64_t r = 0; r < kc; ++r) {
      const float* __restrict row = d_out_f + r * OC + o0;
      for (int64_t o = 0; o < o1 - o0; ++o) s[o] += row[o];
    }
  });
}

template <class T>
void backward(const ops::MatmulBackwardArgs& a) {
  constexpr bool is_f32 = std::is_same_v<T, float>;
  const int64_t OC = a.weight.shape[0], IC = a.weight.shape[1], ldd = a.d_out.size(-1);
  const int64_t N = a.d_out.numel() / ldd;
  const bool want_dw = a.d_weight.defined(), want_db = a.d_bias.defined();
  if (!a.d_inp.defined() && !want_dw && !want_db) return;

  ThreadScratch<float, kWeight> w_scratch(!is_f32 && a.d_inp.defined() ? size_t(OC * IC) : 0);
  const float* wf = a.d_inp.defined() ? rows_f32(a.weight.ptr<T>(), OC, IC, w_scratch.data()) : nullptr;
  ThreadScratch<float, kPackW> w_pack(a.d_inp.defined() ? PackedB::size(OC, IC) : 0);
  const PackedB w = a.d_inp.defined() ? PackedB({wf, IC, 1}, OC, IC, w_pack) : PackedB();  // (OC, IC)

  // d_weight accumulates in f32: in place when it is f32, else in scratch added once.
  const bool dw_in_place = want_dw && a.d_weight.dtype == DType::f32;
  ThreadScratch<float, kDWeight> dw_scratch(want_dw && !dw_in_place ? size_t(OC * IC) : 0);
  float* dw = !want_dw ? nullptr : dw_in_place ? a.d_weight.ptr<float>() : dw_scratch.data();
  if (want_dw && !dw_in_place) std::fill(dw, dw + OC * IC, 0.0f);
  ThreadScratch<float, kBias> db(want_db ? size_t(OC) : 0);
  if (want_db) std::fill(db.data(), db.data() + OC, 0.0f);

  // f32 runs in one chunk straight from the operands; 16-bit operands are converted
  // a chunk of rows at a time so scratch stays near 16 MiB whatever N is.
  const int64_t chunk = is_f32 ? N : std::min(N, std::max<int64_t>((int64_t(1) << 22) / (OC + IC), 64));
  ThreadScratch<float, kDOut> d_out_s(is_f32 ? 0 : size_t(chunk * ldd));
  ThreadScratch<float, kInp> inp_s(is_f32 || !want_dw ? 0 : size_t(chunk * IC));
  for (int64_t k0 = 0; k0 < N; k0 += chunk) {
    const int64_t kc = std::min(chunk, N - k0);
    const float* d_out_f = rows_f32(a.d_out.ptr<T>() + k0 * ldd, kc, OC, d_out_s.data(), ldd);  // (kc, ldd)
    const float* inp_f = want_dw ? rows_f32(a.inp.ptr<T>() + k0 * IC, kc, IC, inp_s.data()) : nullptr;
        if (want_db) bias_chunk(d_out_f, db.data(), kc, OC);  // d_bias excludes d_out_padded: ldd == OC
    backward_chunk<T>(a, d_out_f, ldd, inp_f, &w, dw, k0, kc);
  }
  if (want_dw && !dw_in_place) accumulate_f32(a.d_weight, dw, OC * IC);
  if (want_db) accumulate_f32(a.d_bias, db.data(), OC);
}

}  // namespace

void matmul_forward(const ops::MatmulForwardArgs& a) {
  OpTimer timer(OpCategory::gemm);
  blas_single_threaded();
  if (matmul_forward_gemv(a)) return;  // decoding's few rows: the weight read in place
  if (a.weight.dtype == DType::bf16 && matmul_forward_bf16(a)) return;
  dispatch_float(a.weight.dtype, [&](auto tag) { forward<decltype(tag)>(a); });
}

void matmul_backward(const ops::MatmulBackwardArgs& a) {
  OpTimer timer(OpCategory::gemm);
  blas_single_threaded();
  if (a.weight.dtype == DType::bf16 && matmul_backward_bf16(a)) return;
  dispatch_float(a.weight.dtype, [&](auto tag) { backward<decltype(tag)>(a); });
}

}  // namespace strata::cpu
