// matmul_forward speed at transformer shapes (N = 8*256 rows, GPT-2 small widths),
// against OpenBLAS sgemm threaded by OpenBLAS itself on two threads: the question is
// what strata's tiling on oneTBB costs or gains over letting the BLAS split the work.
// Timing is the minimum over repeats after a warm-up, so other load on the machine
// inflates nothing but the noise.
#include "bench.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "common/convert.h"
#include "ops.h"
#include "strata/device.h"

namespace strata::bench {

namespace {

std::vector<float> random_floats(size_t n, uint32_t seed, float scale) {
  std::vector<float> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (float& f : v) {
    x = x * 1664525u + 1013904223u;
    f = scale * (float(x >> 8) / float(1 << 24) * 2.0f - 1.0f);
  }
  return v;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = num::float_to_bf16(v[i]);
  return out;
}

}  // namespace

void bench_matmul() {
  std::unique_ptr<Device> device = Device::cpu(0);
  Stream& s = device->stream();
  const int64_t N = 8 * 256;
  const int64_t shapes[][2] = {{256, 768}, {256, 256}, {256, 1024}, {1024, 256}, {768, 3072}, {3072, 768}};

  std::printf("matmul_forward, N = %lld rows, bias on; GFLOP/s (min of repeats)\n", (long long)N);
  std::printf("%6s %6s | %11s %11s | %12s | %9s %9s\n", "IC", "OC", "strata f32", "strata bf16",
              "OpenBLAS 2t", "f32/BLAS", "bf16/BLAS");
  for (const auto& shape : shapes) {
    const int64_t IC = shape[0], OC = shape[1];
    std::vector<float> inp = random_floats(size_t(N * IC), 1, 1.0f);
    std::vector<float> w = random_floats(size_t(OC * IC), 2, 0.05f);
    std::vector<float> bias = random_floats(size_t(OC), 3, 0.1f);
    std::vector<float> out(size_t(N * OC));
    std::vector<uint16_t> inp_h = to_bf16(inp), w_h = to_bf16(w), bias_h = to_bf16(bias);
    std::vector<uint16_t> out_h(size_t(N * OC));
    Device* d = device.get();

    ops::MatmulForwardArgs f32{TensorView(out.data(), DType::f32, {N, OC}, d),
                               TensorView(inp.data(), DType::f32, {N, IC}, d),
                               TensorView(w.data(), DType::f32, {OC, IC}, d),
                               TensorView(bias.data(), DType::f32, {OC}, d)};
    ops::MatmulForwardArgs bf{TensorView(out_h.data(), DType::bf16, {N, OC}, d),
                              TensorView(inp_h.data(), DType::bf16, {N, IC}, d),
                              TensorView(w_h.data(), DType::bf16, {OC, IC}, d),
                              TensorView(bias_h.data(), DType::bf16, {OC}, d)};
    const double flops = 2.0 * double(N) * double(IC) * double(OC);
    const double t_f32 = min_seconds([&] { ops::matmul_forward(f32, s); });
    const double t_bf16 = min_seconds([&] { ops::matmul_forward(bf, s); });

    // OpenBLAS on its own threads; strata keeps it single-threaded, so restore that.
    const int previous = openblas_get_num_threads();
    openblas_set_num_threads(2);
    const double t_blas = min_seconds([&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(OC), int(IC), 1.0f, inp.data(),
                  int(IC), w.data(), int(IC), 0.0f, out.data(), int(OC));
    });
    openblas_set_num_threads(previous);

    std::printf("%6lld %6lld | %11.1f %11.1f | %12.1f | %9.2f %9.2f\n", (long long)IC, (long long)OC,
                flops / t_f32 * 1e-9, flops / t_bf16 * 1e-9, flops / t_blas * 1e-9, t_blas / t_f32,
                t_blas / t_bf16);
  }
}

STRATA_BENCH("matmul", bench_matmul);

}  // namespace strata::bench
