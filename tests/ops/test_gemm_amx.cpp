// The AMX bf16 GEMM tile (kernels/cpu/gemm_amx.h) on its own, against a float64
// reference and the vdpbf16ps tile, over the edges it handles: M and N not multiples of
// the 32 x 32 block, K not a multiple of a 32-k group, K spanning several packed-B
// blocks, A dense, transposed (d_weight's d_out^T) and strided, C assigned and
// accumulated; and its tiling invariance: one call and a split into tiles give the same
// bits. Skipped where this process does not run bf16 GEMMs on AMX.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <vector>

#include "common/convert.h"
#include "cpu/gemm_amx.h"
#include "support/skip.h"

namespace strata::test {

namespace {

using cpu::Strided;

std::vector<uint16_t> random_bf16(size_t n, uint32_t seed) {
  std::vector<uint16_t> v(n);
  uint32_t x = seed * 2654435761u + 7;
  for (uint16_t& h : v) {
    x = x * 1664525u + 1013904223u;
    h = num::float_to_bf16(float(x >> 8) / float(1 << 24) * 2.0f - 1.0f);
  }
  return v;
}

float f(uint16_t h) { return num::bf16_to_float(h); }

// A (M, K) in one of three layouts over the same values: row-major, column-major
// (d_out^T), and row-major with a padded row and every second column.
struct Operand {
  std::vector<uint16_t> data;
  Strided<uint16_t> view;
};

Operand make_a(const std::vector<uint16_t>& dense, int64_t M, int64_t K, int layout) {
  Operand o;
  if (layout == 0) {
    o.data = dense;
    o.view = {nullptr, K, 1};
  } else if (layout == 1) {
    o.data.resize(size_t(M * K));
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K; ++k) o.data[size_t(k * M + i)] = dense[size_t(i * K + k)];
    o.view = {nullptr, 1, M};
  } else {
    const int64_t rs = 2 * K + 6;
    o.data.assign(size_t(M * rs), 0x7fc0);  // NaN between the elements: never read
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K; ++k) o.data[size_t(i * rs + 2 * k)] = dense[size_t(i * K + k)];
    o.view = {nullptr, rs, 2};
  }
  o.view.p = o.data.data();
  return o;
}

struct Case {
  int64_t M, N, K;
};

}  // namespace

TEST_CASE("AMX bf16 tile matches the float64 reference and the vdpbf16ps tile at every edge", "[cpu][matmul][amx]") {
  if (!cpu::amx_bf16_enabled()) return skip_test("bf16 GEMMs do not run on AMX in this process");
  const Case cases[] = {{1, 1, 1},     {32, 32, 32},   {17, 45, 33},  {45, 70, 31},  {64, 96, 256},
                        {33, 31, 257}, {70, 40, 1100}, {5, 64, 2100}, {96, 33, 2048}, {31, 1, 2}};
  for (const Case& cs : cases) {
    const int64_t M = cs.M, N = cs.N, K = cs.K;
    const std::vector<uint16_t> a = random_bf16(size_t(M * K), uint32_t(M * 131 + K));
    const std::vector<uint16_t> b = random_bf16(size_t(K * N), uint32_t(N * 71 + K));
    const std::vector<float> c0 = [&] {
      std::vector<float> c(size_t(M * N));
      for (size_t i = 0; i < c.size(); ++i) c[i] = float(int(i % 7) - 3) * 0.25f;
      return c;
    }();
    std::vector<uint32_t> packed(size_t(cpu::packed_b_size_bf16(K, N)));
    cpu::pack_b_bf16({b.data(), N, 1}, K, N, packed.data());
    for (int layout = 0; layout < 3; ++layout) {
      for (bool accumulate : {false, true}) {
        INFO("M " << M << " N " << N << " K " << K << " A layout " << layout << " accumulate " << accumulate);
        const Operand op = make_a(a, M, K, layout);
        std::vector<float> amx = c0, avx = c0;
        cpu::gemm_tile_amx(M, N, K, op.view, packed.data(), N, 0, amx.data(), N, accumulate);
        cpu::gemm_tile_bf16(M, N, K, op.view, packed.data(), N, 0, avx.data(), N, accumulate);
        int bad = 0;
        for (int64_t i = 0; i < M; ++i)
          for (int64_t j = 0; j < N; ++j) {
            double ref = accumulate ? c0[size_t(i * N + j)] : 0.0, mag = std::fabs(ref);
            for (int64_t k = 0; k < K; ++k) {
              const double p = double(f(a[size_t(i * K + k)])) * double(f(b[size_t(k * N + j)]));
              ref += p, mag += std::fabs(p);
            }
            // f32 sums of K + 1 terms: each addition rounds by at most 2^-24 of what it adds up.
            const double tol = double(K + 1) * 0x1p-24 * mag + 1e-30;
            const double e_amx = std::fabs(double(amx[size_t(i * N + j)]) - ref);
            const double e_avx = std::fabs(double(avx[size_t(i * N + j)]) - ref);
            if (e_amx > tol || e_avx > tol) {
              if (++bad <= 3) FAIL_CHECK("C(" << i << ", " << j << "): amx " << amx[size_t(i * N + j)] << " vdpbf16ps "
                                              << avx[size_t(i * N + j)] << " reference " << ref << " tolerance " << tol);
            }
          }
        CHECK(bad == 0);
      }
    }
  }
}

TEST_CASE("AMX bf16 tile gives the same bits in one call and split into tiles", "[cpu][matmul][amx]") {
  if (!cpu::amx_bf16_enabled()) return skip_test("bf16 GEMMs do not run on AMX in this process");
  const int64_t M = 100, N = 130, K = 1500;
  const std::vector<uint16_t> a = random_bf16(size_t(M * K), 3), b = random_bf16(size_t(K * N), 4);
  std::vector<uint32_t> packed(size_t(cpu::packed_b_size_bf16(K, N)));
  cpu::pack_b_bf16({b.data(), N, 1}, K, N, packed.data());
  for (int layout = 0; layout < 2; ++layout) {
    INFO("A layout " << layout);
    const Operand op = make_a(a, M, K, layout);
    std::vector<float> whole(size_t(M * N)), split(size_t(M * N));
    cpu::gemm_tile_amx(M, N, K, op.view, packed.data(), N, 0, whole.data(), N, false);
    // Tiles of 32 or 64 rows (and a ragged last one) by 32 or 64 columns.
    for (int64_t i0 = 0, tm = 32; i0 < M; i0 += tm, tm = 96 - tm)
      for (int64_t j0 = 0, tn = 64; j0 < N; j0 += tn, tn = 96 - tn) {
        const int64_t m = std::min(tm, M - i0), n = std::min(tn, N - j0);
        cpu::gemm_tile_amx(m, n, K, op.view.at(i0, 0), packed.data(), N, j0, split.data() + i0 * N + j0, N, false);
      }
    CHECK(std::memcmp(whole.data(), split.data(), whole.size() * sizeof(float)) == 0);
  }
}

}  // namespace strata::test
