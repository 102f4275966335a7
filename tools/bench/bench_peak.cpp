// strata-bench peak: the CPU's FMA-loop peak (kernels/cpu/fma_peak.h), f32 and bf16
// (the loop of the instruction bf16 GEMMs run on: AMX or vdpbf16ps), on all threads —
// the figure every other CPU benchmark in the same run states its GFLOP/s and MFU
// against, and which bf16 GEMM path this process runs. Printed as "RESULT peak_<dtype>_gflops" lines too, for
// tools/bench/report.sh.
#include <cstdio>

#include "bench.h"
#include "cpu/fma_peak.h"
#include "cpu/gemm_amx.h"
#include "cpu/matmul_bf16.h"

namespace strata::bench {

namespace {

void bench_peak() {
  Table t({"dtype", "loop", "threads", "rounds", "peak GFLOP/s", "per thread"});
  auto row = [&](const char* dtype, const cpu::FmaPeak& p) {
    t.row({dtype, p.kernel, std::to_string(p.threads), std::to_string(p.rounds), format_fixed(p.flops / 1e9, 1),
           format_fixed(p.flops / 1e9 / p.threads, 1)});
  };
  for (DType dt : {DType::f32, DType::bf16}) {
    const cpu::FmaPeak& p = cpu::fma_peak(dt);
    row(dtype_name(dt), p);
    std::printf("RESULT peak_%s_gflops %.1f\n", dtype_name(dt), p.flops / 1e9);
  }
  // With AMX, the vector loop too: what the fallback path (STRATA_AMX=0) is held against.
  if (cpu::amx_bf16_enabled()) row("bf16", cpu::fma_peak_vdpbf16ps());
  t.print("CPU peak: FMA loops (12 independent accumulators a thread; AMX: 4 independent tiles), all threads at\n"
          "once; each thread's fastest burst, rounds until three agree within 2%. MFU and '% of peak' elsewhere\n"
          "are against these");
  std::printf("bf16 GEMMs run on: %s%s\n", cpu::bf16_gemm_path(),
              cpu::amx_bf16_enabled() ? "" : " (STRATA_AMX=0, or no AMX-BF16 granted on this CPU)");
}

}  // namespace

STRATA_BENCH("peak", bench_peak);

}  // namespace strata::bench
