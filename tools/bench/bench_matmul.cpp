// matmul forward and backward speed at transformer shapes (N = 8*256 rows, GPT-2
// small widths), each GEMM against the same OpenBLAS sgemm threaded by OpenBLAS
// itself on two threads in the same run: the question is what strata's kernels and
// tiling on oneTBB gain over letting the BLAS do it all.
// Every rate is also shown as a share of the FMA-loop peak of the same run
// (kernels/cpu/fma_peak.h: f32 FMAs for f32, the bf16 GEMM's instruction for bf16).
// Timing is the minimum over rounds that run strata f32, strata bf16 and OpenBLAS in
// turn after a warm-up, so other load on the machine inflates nothing but the noise
// and hits the three alike.
#include "bench.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "common/convert.h"
#include "cpu/fma_peak.h"
#include "cpu/matmul_bf16.h"
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

// Seconds per call of strata f32, strata bf16 and OpenBLAS on two threads of its own
// (strata keeps it single-threaded, restored after each call), each the minimum over
// rounds that run the three in turn, so load from other processes hits all three alike
// and the ratios stay comparable on a shared machine.
struct Seconds {
  double f32, bf16, blas;
};

template <class F, class H, class B>
Seconds paired_seconds(F&& f32, H&& bf16, B&& blas) {
  using Clock = std::chrono::steady_clock;
  auto time = [](auto& f) {
    const auto t0 = Clock::now();
    f();
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  auto blas_2t = [&] {
    const int previous = openblas_get_num_threads();
    openblas_set_num_threads(2);
    blas();
    openblas_set_num_threads(previous);
  };
  for (int i = 0; i < 2; ++i) f32(), bf16(), blas_2t();
  Seconds best{1e300, 1e300, 1e300};
  double total = 0;
  for (int round = 0; round < 7 || total < 0.6; ++round) {
    const double a = time(f32), b = time(bf16), c = time(blas_2t);
    best = {std::min(best.f32, a), std::min(best.bf16, b), std::min(best.blas, c)};
    total += a + b + c;
  }
  return best;
}

void print_row(int64_t IC, int64_t OC, const char* pass, double flops, Seconds t) {
  const double t_f32 = t.f32, t_bf16 = t.bf16, t_blas = t.blas;
  const double peak_f32 = cpu::fma_peak(DType::f32).flops, peak_bf16 = cpu::fma_peak(DType::bf16).flops;
  std::printf("%6lld %6lld %-8s | %11.1f %5.0f%% | %11.1f %5.0f%% | %12.1f %5.0f%% | %9.2f %9.2f\n", (long long)IC,
              (long long)OC, pass, flops / t_f32 * 1e-9, 100 * flops / t_f32 / peak_f32, flops / t_bf16 * 1e-9,
              100 * flops / t_bf16 / peak_bf16, flops / t_blas * 1e-9, 100 * flops / t_blas / peak_f32,
              t_blas / t_f32, t_blas / t_bf16);
  std::printf("RESULT matmul_%lldx%lld_%s_f32_vs_openblas %.3f\n", (long long)IC, (long long)OC, pass, t_blas / t_f32);
}

void bench_matmul() {
  std::unique_ptr<Device> device = Device::cpu(0);
  Stream& s = device->stream();
  const int64_t N = 8 * 256;
  const int64_t shapes[][2] = {{256, 768}, {256, 256}, {256, 1024}, {1024, 256}, {768, 3072}, {3072, 768}};

  const double peak_f32 = cpu::fma_peak(DType::f32).flops, peak_bf16 = cpu::fma_peak(DType::bf16).flops;
  std::printf("\nmatmul, N = %lld rows; forward with bias, d_inp, d_weight (+=, dtype of weight);\n"
              "GFLOP/s (min of alternating rounds) and %% of the FMA peak (f32 %.1f, bf16 %.1f GFLOP/s, this run),\n"
              "OpenBLAS sgemm on 2 threads of its own for the same product, same run; bf16 GEMMs on %s\n",
              (long long)N, peak_f32 / 1e9, peak_bf16 / 1e9, cpu::bf16_gemm_path());
  std::printf("%6s %6s %-8s | %11s %6s | %11s %6s | %12s %6s | %9s %9s\n", "IC", "OC", "pass", "strata f32", "peak",
              "strata bf16", "peak", "OpenBLAS 2t", "peak", "f32/BLAS", "bf16/BLAS");
  for (const auto& shape : shapes) {
    const int64_t IC = shape[0], OC = shape[1];
    std::vector<float> inp = random_floats(size_t(N * IC), 1, 1.0f);
    std::vector<float> w = random_floats(size_t(OC * IC), 2, 0.05f);
    std::vector<float> bias = random_floats(size_t(OC), 3, 0.1f);
    std::vector<float> out(size_t(N * OC)), d_inp(size_t(N * IC)), d_w(size_t(OC * IC), 0.0f);
    std::vector<float> d_out = random_floats(size_t(N * OC), 4, 0.01f);
    std::vector<uint16_t> inp_h = to_bf16(inp), w_h = to_bf16(w), bias_h = to_bf16(bias), d_out_h = to_bf16(d_out);
    std::vector<uint16_t> out_h(size_t(N * OC)), d_inp_h(size_t(N * IC)), d_w_h(size_t(OC * IC), 0);
    Device* d = device.get();
    auto view = [&](auto& v, DType dt, std::initializer_list<int64_t> shape) { return TensorView(v.data(), dt, shape, d); };
    const DType f = DType::f32, h = DType::bf16;
    const double flops = 2.0 * double(N) * double(IC) * double(OC);

    ops::MatmulForwardArgs fwd_f{view(out, f, {N, OC}), view(inp, f, {N, IC}), view(w, f, {OC, IC}),
                                 view(bias, f, {OC})};
    ops::MatmulForwardArgs fwd_h{view(out_h, h, {N, OC}), view(inp_h, h, {N, IC}), view(w_h, h, {OC, IC}),
                                 view(bias_h, h, {OC})};
    print_row(IC, OC, "forward", flops, paired_seconds([&] { ops::matmul_forward(fwd_f, s); },
              [&] { ops::matmul_forward(fwd_h, s); }, [&] {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(N), int(OC), int(IC), 1.0f, inp.data(),
                            int(IC), w.data(), int(IC), 0.0f, out.data(), int(OC));
              }));

    ops::MatmulBackwardArgs di_f{view(d_inp, f, {N, IC}), {}, {}, view(d_out, f, {N, OC}), view(inp, f, {N, IC}),
                                 view(w, f, {OC, IC})};
    ops::MatmulBackwardArgs di_h{view(d_inp_h, h, {N, IC}), {}, {}, view(d_out_h, h, {N, OC}),
                                 view(inp_h, h, {N, IC}), view(w_h, h, {OC, IC})};
    print_row(IC, OC, "d_inp", flops, paired_seconds([&] { ops::matmul_backward(di_f, s); },
              [&] { ops::matmul_backward(di_h, s); }, [&] {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(N), int(IC), int(OC), 1.0f,
                            d_out.data(), int(OC), w.data(), int(IC), 0.0f, d_inp.data(), int(IC));
              }));

    ops::MatmulBackwardArgs dw_f{{}, view(d_w, f, {OC, IC}), {}, view(d_out, f, {N, OC}), view(inp, f, {N, IC}),
                                 view(w, f, {OC, IC})};
    ops::MatmulBackwardArgs dw_h{{}, view(d_w_h, h, {OC, IC}), {}, view(d_out_h, h, {N, OC}),
                                 view(inp_h, h, {N, IC}), view(w_h, h, {OC, IC})};
    print_row(IC, OC, "d_weight", flops, paired_seconds([&] { ops::matmul_backward(dw_f, s); },
              [&] { ops::matmul_backward(dw_h, s); }, [&] {
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(OC), int(IC), int(N), 1.0f,
                            d_out.data(), int(OC), inp.data(), int(IC), 1.0f, d_w.data(), int(IC));
              }));
  }
}

STRATA_BENCH("matmul", bench_matmul);

}  // namespace strata::bench
