// AMX-BF16 GEMM tile (gemm_amx.h). The eight tile registers hold one 32 x 32 C block
// as four f32 tiles (0-3), two A tiles of 16 rows x 32 k (4, 5) and the two B halves
// of a 32-column panel, 16 k-pairs each (6, 7): every A and B tile feeds two
// TDPBF16PS. A is packed per block into tile order, [k group][32 rows][32 k],
// zero-padded past M and K, so the kernel has no edges in A; the last k group of a B
// block, when K is not a multiple of 32, is copied into a zeroed tile; C blocks that
// cross M or N go through a zeroed 32 x 32 scratch.
// Invariant: C (i, j) accumulates 32-k groups in ascending order, K blocks of
// kGemmKcPairsBf16 pairs cut into sub-blocks of kSubK, C in f32 memory between them
// (exact), starting from 0 or from C — nothing depends on M, N or the tiling.
#if defined(__AMX_TILE__) && defined(__AMX_BF16__)
// GCC 12 reports its own _mm512_undefined_*() in the unpack intrinsics (bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define STRATA_AMX_BUILD 1
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <cstdlib>
#include <cstring>

#include "gemm_amx.h"
#include "strata/error.h"
#include "thread_scratch.h"

namespace strata::cpu {

namespace {

// The CPU has AMX-BF16 and AMX-TILE, and the kernel lets this process use tile data.
bool amx_granted() {
#if defined(STRATA_AMX_BUILD) && defined(__linux__) && defined(__x86_64__)
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  if (!(edx & (1u << 22)) || !(edx & (1u << 24))) return false;  // AMX-BF16, AMX-TILE
  constexpr long kGetPerm = 0x1022, kReqPerm = 0x1023, kXtileData = 18;
  if (syscall(SYS_arch_prctl, kReqPerm, kXtileData) != 0) return false;
  unsigned long features = 0;
  return syscall(SYS_arch_prctl, kGetPerm, &features) == 0 && (features & (1ul << kXtileData));
#else
  return false;
#endif
}

bool amx_from_environment() {
  const char* v = std::getenv("STRATA_AMX");
  STRATA_CHECK(!v || !*v || std::strcmp(v, "0") == 0 || std::strcmp(v, "1") == 0,
               "STRATA_AMX=" << v << ": expected 0 (bf16 GEMMs on vdpbf16ps) or 1 / unset (AMX where the CPU has it)");
  if (v && std::strcmp(v, "0") == 0) return false;
  return amx_granted();
}

}  // namespace

bool amx_bf16_enabled() {
  static const bool enabled = amx_from_environment();  // a throwing initialiser runs again at the next call
  return enabled;
}

#ifdef STRATA_AMX_BUILD

namespace {

constexpr int64_t kPanel = 32;    // columns of a packed B panel: two B tiles
constexpr int64_t kGroup = 32;    // k per tile step: 16 pairs
constexpr int64_t kSubK = 256;    // k per A pack: 32 rows x 256 k (16 KiB) stay in L1
constexpr int64_t kTileBytes = 64;

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Every tile 16 rows of 64 bytes: 16 x 16 f32, 16 x 32 bf16 or 16 pairs x 16 columns.
void configure_tiles() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.colsb[t] = kTileBytes, cfg.rows[t] = 16;
  _tile_loadconfig(&cfg);
}

// dst [groups][32][32] = A rows [0, rows) x k [0, kc), zero past rows and kc.
void pack_a(Strided<uint16_t> a, int64_t rows, int64_t kc, uint16_t* __restrict dst) {
  const int64_t groups = (kc + kGroup - 1) / kGroup;
  if (rows < kGemmRowsAmx || kc % kGroup) std::memset(dst, 0, size_t(groups * kGemmRowsAmx * kGroup) * 2);
  if (a.cs == 1) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < groups; ++g)
        std::memcpy(dst + (g * kGemmRowsAmx + r) * kGroup, a.p + r * a.rs + g * kGroup,
                    size_t(std::min(kGroup, kc - g * kGroup)) * 2);
    return;
  }
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  if (a.rs == 1) {  // d_out^T: k rows of d_out, transposed 16 x 16 pairs at a time
    for (int64_t h = 0; h < rows; h += 16) {
      const __mmask16 m = rows - h >= 16 ? __mmask16(0xffff) : __mmask16((1u << (rows - h)) - 1);
      for (int64_t g = 0; g < groups; ++g) {
        __m512i w[16];  // w[q] lane r = (A (h + r, k), A (h + r, k + 1)), k = 32 g + 2 q
        for (int q = 0; q < 16; ++q) {
          const int64_t k = g * kGroup + 2 * q;
          const __m512i lo = k < kc ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, a.p + h + k * a.cs))
                                    : _mm512_setzero_si512();
          const __m512i hi = k + 1 < kc
                                 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, a.p + h + (k + 1) * a.cs))
                                 : _mm512_setzero_si512();
          w[q] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
        }
        // 16 x 16 transpose of 32-bit words: unpack pairs, quads, then 128-bit lanes.
        __m512i t[16];
        for (int i = 0; i < 8; ++i) {
          t[2 * i] = _mm512_unpacklo_epi32(w[2 * i], w[2 * i + 1]);
          t[2 * i + 1] = _mm512_unpackhi_epi32(w[2 * i], w[2 * i + 1]);
        }
        for (int i = 0; i < 4; ++i) {
          w[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
          w[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
          w[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
          w[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
        }
        for (int i = 0; i < 4; ++i) {
          t[i] = _mm512_shuffle_i32x4(w[i], w[4 + i], 0x88);
          t[4 + i] = _mm512_shuffle_i32x4(w[i], w[4 + i], 0xdd);
          t[8 + i] = _mm512_shuffle_i32x4(w[8 + i], w[12 + i], 0x88);
          t[12 + i] = _mm512_shuffle_i32x4(w[8 + i], w[12 + i], 0xdd);
        }
        for (int i = 0; i < 8; ++i) {
          w[i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0x88);
          w[8 + i] = _mm512_shuffle_i32x4(t[i], t[8 + i], 0xdd);
        }
        uint16_t* d = dst + (g * kGemmRowsAmx + h) * kGroup;
        for (int r = 0; r < 16 && h + r < rows; ++r) _mm512_storeu_si512(d + r * kGroup, w[r]);
      }
    }
    return;
  }
#endif
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < kc; ++k) dst[(k / kGroup * kGemmRowsAmx + r) * kGroup + k % kGroup] = a.p[r * a.rs + k * a.cs];
}

// C tiles 0-3 = the 32 x 32 block at c (row stride ldc floats).
inline void load_c(const float* c, int64_t ldc) {
  const int64_t stride = ldc * 4;
  _tile_loadd(0, c, stride);
  _tile_loadd(1, c + 16, stride);
  _tile_loadd(2, c + 16 * ldc, stride);
  _tile_loadd(3, c + 16 * ldc + 16, stride);
}

inline void store_c(float* c, int64_t ldc) {
  const int64_t stride = ldc * 4;
  _tile_stored(0, c, stride);
  _tile_stored(1, c + 16, stride);
  _tile_stored(2, c + 16 * ldc, stride);
  _tile_stored(3, c + 16 * ldc + 16, stride);
}

// C tiles += A groups [0, groups) @ the panel's matching pair rows; bp is the panel's
// first pair row of this sub-block, `pairs` the rows the panel has from there.
inline void dot_groups(const uint16_t* ap, const uint32_t* bp, int64_t groups, int64_t pairs, uint32_t* b_tail) {
  for (int64_t g = 0; g < groups; ++g, ap += kGemmRowsAmx * kGroup, bp += 16 * kPanel) {
    const uint32_t* b = bp;
    const int64_t left = pairs - 16 * g;
    if (left < 16) {  // K tail: the panel ends inside this group
      std::memset(b_tail, 0, 16 * kPanel * 4);
      std::memcpy(b_tail, bp, size_t(left * kPanel) * 4);
      b = b_tail;
    }
    _tile_loadd(4, ap, kTileBytes);
    _tile_loadd(5, ap + 16 * kGroup, kTileBytes);
    _tile_loadd(6, b, kPanel * 4);
    _tile_loadd(7, b + 16, kPanel * 4);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
}

}  // namespace

void gemm_tile_amx(int64_t M, int64_t N, int64_t K, Strided<uint16_t> a, const uint32_t* packed_b,
                   int64_t n_packed, int64_t j0, float* c, int64_t ldc, bool accumulate) {
  constexpr int64_t kc_max = 2 * kGemmKcPairsBf16;
  const int64_t panels = (N + kPanel - 1) / kPanel, packed_panels = (n_packed + kPanel - 1) / kPanel;
  ThreadScratch<uint16_t, 22> a_pack(size_t(kGemmRowsAmx * std::min(kSubK, (K + kGroup - 1) / kGroup * kGroup)));
  ThreadScratch<uint32_t, 23> b_tail(size_t(16 * kPanel));
  ThreadScratch<float, 24> c_edge(size_t(kGemmRowsAmx * kPanel));  // (32, 32)
  configure_tiles();
  for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
    const int64_t kc = std::min(kc_max, K - k0), kp = (kc + 1) / 2;
    const uint32_t* block = packed_b + (k0 / 2 * packed_panels + j0 / kPanel * kp) * kPanel;
    for (int64_t s0 = 0; s0 < kc; s0 += kSubK) {
      const int64_t sc = std::min(kSubK, kc - s0), groups = (sc + kGroup - 1) / kGroup;
      const bool acc = accumulate || k0 > 0 || s0 > 0;
      for (int64_t i = 0; i < M; i += kGemmRowsAmx) {
        const int64_t rows = std::min(kGemmRowsAmx, M - i);
        pack_a(a.at(i, k0 + s0), rows, sc, a_pack.data());
        for (int64_t p = 0; p < panels; ++p) {
          const int64_t width = std::min(kPanel, N - p * kPanel);
          float* cp = c + i * ldc + p * kPanel;
          const bool whole = rows == kGemmRowsAmx && width == kPanel;
          float* ce = c_edge.data();
          if (!whole) {
            std::memset(ce, 0, size_t(kGemmRowsAmx * kPanel) * 4);
            if (acc)
              for (int64_t r = 0; r < rows; ++r) std::memcpy(ce + r * kPanel, cp + r * ldc, size_t(width) * 4);
          }
          if (!acc) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
          } else if (whole) {
            load_c(cp, ldc);
          } else {
            load_c(ce, kPanel);
          }
          dot_groups(a_pack.data(), block + (p * kp + s0 / 2) * kPanel, groups, kp - s0 / 2, b_tail.data());
          if (whole) {
            store_c(cp, ldc);
          } else {
            store_c(ce, kPanel);
            for (int64_t r = 0; r < rows; ++r) std::memcpy(cp + r * ldc, ce + r * kPanel, size_t(width) * 4);
          }
        }
      }
    }
  }
  _tile_release();
}

float amx_peak_loop(int64_t iters) {
  configure_tiles();
  // Small normal bf16 values (0x3a83 ~ 1e-3): the sums grow slowly and never overflow.
  alignas(64) uint16_t src[16 * 32];
  for (uint16_t& v : src) v = 0x3a83;
  _tile_loadd(4, src, kTileBytes);
  _tile_loadd(5, src, kTileBytes);
  _tile_loadd(6, src, kTileBytes);
  _tile_loadd(7, src, kTileBytes);
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t n = 0; n < iters; ++n) {
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  alignas(64) float out[4][16 * 16];
  _tile_stored(0, out[0], kTileBytes);
  _tile_stored(1, out[1], kTileBytes);
  _tile_stored(2, out[2], kTileBytes);
  _tile_stored(3, out[3], kTileBytes);
  _tile_release();
  return out[0][0] + out[1][17] + out[2][100] + out[3][255];
}

#else

void gemm_tile_amx(int64_t, int64_t, int64_t, Strided<uint16_t>, const uint32_t*, int64_t, int64_t, float*, int64_t,
                   bool) {}
float amx_peak_loop(int64_t) { return 0; }

#endif

}  // namespace strata::cpu
