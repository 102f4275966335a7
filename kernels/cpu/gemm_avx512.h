// Single-threaded AVX-512 GEMM tiles for the CPU matmul (gemm_f32.cpp, gemm_bf16.cpp):
// C (M, N) = [C +] A (M, K) @ B (K, N), A and B read through strides so one routine
// serves out = inp @ W^T, d_inp = d_out @ W and d_weight += d_out^T @ inp without
// transposing anything first. B is packed once per call into panels of 32 columns;
// A is read in place, copied per K block (f32 rows at aliasing strides), or packed
// into row slivers per K block or once per call (pack_a_f32); C is f32 in memory.
// Invariants: every C element is summed over k in ascending order in fixed K blocks,
// whatever M, N and the caller's tiling are, so results never depend on the thread
// count; in f32 each block is a chain of its own added to C (gemm_f32.cpp). The bf16 tile multiplies bf16 pairs exactly into f32 (vdpbf16ps, which
// flushes subnormals); C is never rounded to 16 bits here.
#pragma once
#include <algorithm>
#include <cstdint>

#include "util.h"

namespace strata::cpu {

// Element (i, j) of a matrix is p[i * rs + j * cs].
template <class T>
struct Strided {
  const T* p;
  int64_t rs, cs;
  Strided at(int64_t i, int64_t j) const { return {p + i * rs + j * cs, rs, cs}; }
};

#ifdef __AVX512F__
constexpr bool kHaveGemmF32 = true;
#else
constexpr bool kHaveGemmF32 = false;
#endif
#ifdef __AVX512BF16__
constexpr bool kHaveGemmBf16 = true;
#else
constexpr bool kHaveGemmBf16 = false;
#endif

// Rows of C one micro-kernel call computes (32 columns each): tiles of these many
// rows waste nothing.
constexpr int64_t kGemmRowsF32 = 14, kGemmRowsBf16 = 14;

// k per f32 K block: each block's FMA chain starts from 0 and is added to C, so this
// fixes the summation order (and the bits) of every f32 product; a B panel block
// (kGemmKcF32 x 32) streams from L2.
constexpr int64_t kGemmKcF32 = 512;

// Whether `rows` rows of A, `row_bytes` apart, can be broadcast from in place: rows
// whose addresses agree modulo 4 KiB (one L1 way) fall into the same L1 sets, and at
// strides of a multiple of 2 KiB (K = 1024 or 3072 in f32) the 14 rows read in step
// share one or two sets and evict each other. Such A is packed instead.
inline bool gemm_rows_fit_l1_sets(int64_t row_bytes, int64_t rows) {
  int64_t stride = (row_bytes / 64) % 64, sets = 64;  // in cache lines, modulo a way
  for (int64_t a = stride; a != 0;) {  // distinct set offsets = 64 / gcd(stride, 64)
    const int64_t t = sets % a;
    sets = a;
    a = t;
  }
  const int64_t distinct = std::min<int64_t>(rows, 64 / sets);
  return (rows + distinct - 1) / distinct <= 4;
}

// B (K, N) packed once per call, shared by every tile: K blocks of the tile's kc
// (f32 k, or bf16 pairs as u32), each block holding every panel of 32 columns one
// after the other — f32 (K blocks, panels, kc, 32), bf16 (K blocks, panels, kp, 32),
// zero-padded. A tile's panels for one K block are thus one contiguous run: with
// panel-major layout, panels K x 128 B apart (128 KiB at K = 1024) fell into the
// same L2 sets and evicted each other. Sizes in elements; pack_b_* run in parallel.
inline int64_t packed_b_size_f32(int64_t K, int64_t N) { return (N + 31) / 32 * 32 * K; }
inline int64_t packed_b_size_bf16(int64_t K, int64_t N) { return (N + 31) / 32 * 32 * ((K + 1) / 2); }
void pack_b_f32(Strided<float> b, int64_t K, int64_t N, float* packed);
void pack_b_bf16(Strided<uint16_t> b, int64_t K, int64_t N, uint32_t* packed);

// A (M, K) not dense in k (d_out^T of d_weight) packed once per call in slivers of
// kGemmRowsF32 rows, k-major — (slivers, K, 14), zero-padded — rather than once per
// column tile: read column-wise, it cost more than a tenth of d_weight. Runs in parallel.
inline int64_t packed_a_size_f32(int64_t M, int64_t K) { return (M + kGemmRowsF32 - 1) / kGemmRowsF32 * kGemmRowsF32 * K; }
void pack_a_f32(Strided<float> a, int64_t M, int64_t K, float* packed);

// C (M, N) row stride ldc = A @ columns [j0, j0 + N) of a packed B (j0 a multiple
// of 32) that has n_packed columns in all, assigned or added to C when `accumulate`;
// assigned with `bias` (N), the sums start from it: bitwise C = bias, then added.
// Only callable when kHaveGemmF32 / kHaveGemmBf16 (they do nothing otherwise). bf16
// is raw bits.
void gemm_tile_f32(int64_t M, int64_t N, int64_t K, Strided<float> a, const float* packed_b, int64_t n_packed,
                   int64_t j0, float* c, int64_t ldc, bool accumulate, const float* bias = nullptr);
// The same with A from pack_a_f32 of K columns: packed_a = packed + i0 * K
// for a tile starting at row i0, a multiple of kGemmRowsF32.
void gemm_tile_f32_packed_a(int64_t M, int64_t N, int64_t K, const float* packed_a, const float* packed_b,
                            int64_t n_packed, int64_t j0, float* c, int64_t ldc, bool accumulate);
void gemm_tile_bf16(int64_t M, int64_t N, int64_t K, Strided<uint16_t> a, const uint32_t* packed_b,
                    int64_t n_packed, int64_t j0, float* c, int64_t ldc, bool accumulate);

// An (M, N) output cut into tiles for oneTBB tasks: rows in multiples of `quantum`,
// columns in multiples of 32, about kTasks of them so a few tasks per thread balance
// the load on a shared machine, but not below 8 slivers x 128 columns: smaller tiles
// reuse A and B too little (f32 d_weight lost ~15% at 4 x 64). The tiling never depends on the thread count: the tiles above are
// tiling-invariant anyway, but OpenBLAS's sums depend on each call's shape.
struct GemmTiles {
  int64_t M, N, tile_m, tile_n;

  int64_t row_tiles() const { return (M + tile_m - 1) / tile_m; }
  int64_t col_tiles() const { return (N + tile_n - 1) / tile_n; }
  int64_t count() const { return row_tiles() * col_tiles(); }

  static GemmTiles plan(int64_t M, int64_t N, int64_t quantum) {
    constexpr int64_t kTasks = 16;
    auto round_up = [](int64_t x, int64_t q) { return (x + q - 1) / q * q; };
    GemmTiles t{M, N, std::min(16 * quantum, round_up(M, quantum)), std::min<int64_t>(256, round_up(N, 32))};
    while (t.count() < kTasks && (t.tile_m > 8 * quantum || t.tile_n > 128)) {
      if (t.tile_m / quantum * 16 >= t.tile_n) t.tile_m = round_up(t.tile_m / 2, quantum);
      else t.tile_n = round_up(t.tile_n / 2, 32);
    }
    return t;
  }

  // Rows [i0, i1) and columns [j0, j1) of tile t.
  void bounds(int64_t t, int64_t& i0, int64_t& i1, int64_t& j0, int64_t& j1) const {
    i0 = (t / col_tiles()) * tile_m, i1 = std::min(M, i0 + tile_m);
    j0 = (t % col_tiles()) * tile_n, j1 = std::min(N, j0 + tile_n);
  }

  // f(i0, i1, j0, j1) for every tile, spread over oneTBB tasks.
  template <class F>
  void for_each(F&& f) const {
    parallel_for(count(), 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        int64_t i0, i1, j0, j1;
        bounds(t, i0, i1, j0, j1);
        f(i0, i1, j0, j1);
      }
    });
  }
};

}  // namespace strata::cpu
