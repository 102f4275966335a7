// matmul benchmark for strata-bench (`make bench`): the driver calls bench_matmul().
#pragma once

namespace strata::bench {

// Prints GFLOP/s of matmul_forward (f32 and bf16) at GPT-style shapes next to
// OpenBLAS sgemm with its own two threads, and the ratio strata / OpenBLAS.
void bench_matmul();

}  // namespace strata::bench
