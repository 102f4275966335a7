// The CPU's arithmetic peak, measured by FMA loops that do nothing else: the figure
// every CPU rate is held against (GEMM GFLOP/s in strata-bench, training MFU, the
// plan's matmul rate). docs/performance.md says how it is measured.
// Invariant: the peak is an upper bound of what any kernel can reach on these
// threads. Each thread's rate is its fastest short burst (one without preemption),
// summed over threads that all run at once, so other load on the machine lowers it
// only when it denies every burst a whole core — and MFU against it cannot pass 100%.
#pragma once
#include <string>

#include "strata/dtype.h"

namespace strata::cpu {

struct FmaPeak {
  double flops = 0;    // FLOP/s on all threads (an FMA counts 2, a bf16 pair-dot 4, a TDPBF16PS 16384)
  int threads = 0;     // threads that ran the loop at once (strata::num_threads())
  int rounds = 0;      // rounds run until the last three agreed within 2%
  std::string kernel;  // the loop that gave the peak, e.g. "zmm vfmadd231ps x12", "amx tdpbf16ps x4"
};

// The peak for GEMMs of `dtype` on num_threads() threads: f32 (and f16, whose GEMM
// runs in f32) is the best of 512- and 256-bit FMA loops; bf16 is the loop of the bf16
// GEMM's instruction: TDPBF16PS where this process runs bf16 GEMMs on AMX
// (amx_bf16_enabled), else vdpbf16ps where the CPU has AVX512_BF16, else the f32 peak.
// Measured once per (dtype, thread count) and process; 0.1 to 1 s the first time.
const FmaPeak& fma_peak(DType dtype);

// The vdpbf16ps loop's peak (the f32 one where the build lacks AVX512_BF16), whatever
// bf16 GEMMs run on: strata-bench peak shows it beside the AMX loop's.
const FmaPeak& fma_peak_vdpbf16ps();

}  // namespace strata::cpu
