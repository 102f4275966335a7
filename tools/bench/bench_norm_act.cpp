// Bandwidth of gelu_forward and norm_forward (LayerNorm, RMSNorm): achieved GB/s
// (bytes read + written) next to a parallel memcpy moving the same bytes in the
// same run, in f32 and bf16.
// Invariant: byte counts are what the op cannot avoid moving (inputs, outputs,
// parameters, saved statistics), so the ratio to memcpy is honest.
#include "bench.h"
#include "kernels/ops.h"

namespace strata::bench {
namespace {

constexpr int64_t kN = int64_t(1) << 25;  // elements of the activation, past the LLC
constexpr int64_t kC = 768;               // channels of a GPT-2 small row
constexpr int64_t kRows = kN / kC;

Stream& stream() { return bench_device().stream(); }

void gelu_rows(Table& t, DType dt) {
  BenchTensor inp(bench_device(), dt, {kN}, -4.0f, 4.0f), out(bench_device(), dt, {kN});
  bandwidth_row(t, "gelu_forward", dtype_name(dt), kN, 2.0 * double(dtype_size(dt)) * kN,
                [&] { ops::gelu_forward({out.view(), inp.view()}, stream()); });
}

void norm_rows(Table& t, DType dt, bool rms) {
  const double size = double(dtype_size(dt));
  BenchTensor inp(bench_device(), dt, {kRows, kC}), out(bench_device(), dt, {kRows, kC});
  BenchTensor weight(bench_device(), dt, {kC}, 0.5f, 1.5f), bias(bench_device(), dt, {kC});
  BenchTensor mean(bench_device(), DType::f32, {kRows}), rstd(bench_device(), DType::f32, {kRows});
  ops::NormForwardArgs a;
  a.out = out.view();
  a.mean = rms ? TensorView{} : mean.view();
  a.rstd = rstd.view();
  a.inp = inp.view();
  a.weight = weight.view();
  a.bias = rms ? TensorView{} : bias.view();
  a.rms = rms;
  // in and out rows, the parameters once, and the saved statistics (f32 per row)
  const int64_t elements = kRows * kC;
  double bytes = 2.0 * size * double(elements) + (rms ? 1.0 : 2.0) * size * kC + (rms ? 4.0 : 8.0) * kRows;
  bandwidth_row(t, rms ? "norm_forward (RMSNorm)" : "norm_forward (LayerNorm)",
                std::string(dtype_name(dt)) + ", C=" + std::to_string(kC), elements, bytes,
                [&] { ops::norm_forward(a, stream()); });
}

void bench_norm_act() {
  Table t = bandwidth_table();
  for (DType dt : {DType::f32, DType::bf16}) {
    gelu_rows(t, dt);
    norm_rows(t, dt, false);
    norm_rows(t, dt, true);
  }
  t.print("gelu_forward and norm_forward vs memcpy");
}

STRATA_BENCH("norm_act", bench_norm_act);

}  // namespace
}  // namespace strata::bench
