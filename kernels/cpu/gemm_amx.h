// The bf16 GEMM tile on Intel AMX (gemm_amx.cpp): TDPBF16PS multiplies 16 x 32 bf16
// A tiles by 16 x 16 VNNI B tiles (k pairs interleaved, the layout pack_b_bf16 already
// writes) into 16 x 16 f32 accumulator tiles, a 32 x 32 C block at a time.
// Chosen at run time (matmul_bf16.cpp): only where the CPU has AMX-BF16 and the kernel
// grants this process the tile data (Linux arch_prctl), requested once; everything
// else runs the vdpbf16ps tile. Only gemm_amx.cpp is compiled with -mamx-*.
// Invariant: as gemm_tile_bf16, C (i, j) sums k in ascending order within fixed
// blocks that depend only on K, so a shape's result never depends on the caller's
// tiling or thread count; AMX sums each 32-k group in its own order, so the two
// tiles agree to rounding, not bitwise.
#pragma once
#include <cstdint>

#include "gemm_avx512.h"

namespace strata::cpu {

// Pairs of k per block of the packed bf16 B (pack_b_bf16): both tiles walk these blocks.
constexpr int64_t kGemmKcPairsBf16 = 512;

// Rows of C one AMX block computes: tiles of these many rows waste nothing.
constexpr int64_t kGemmRowsAmx = 32;

// Whether this process runs bf16 GEMMs on AMX: the CPU has AMX-BF16 and AMX-TILE, the
// kernel granted XTILEDATA, and STRATA_AMX is not "0" (STRATA_AMX=0 forces the
// vdpbf16ps tile, for comparisons). Decided once per process; a STRATA_AMX other than
// "", "0" or "1" throws, naming it.
bool amx_bf16_enabled();

// gemm_tile_bf16's contract on AMX tiles. Only callable when amx_bf16_enabled().
void gemm_tile_amx(int64_t M, int64_t N, int64_t K, Strided<uint16_t> a, const uint32_t* packed_b,
                   int64_t n_packed, int64_t j0, float* c, int64_t ldc, bool accumulate);

// The AMX peak loop for fma_peak: `iters` rounds of four independent TDPBF16PS on
// register tiles (kAmxLoopFlops each round); returns a value read from the tiles.
// Only callable when amx_bf16_enabled().
constexpr double kAmxLoopFlops = 4 * 16.0 * 16 * 32 * 2;
float amx_peak_loop(int64_t iters);

}  // namespace strata::cpu
