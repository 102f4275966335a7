// The CUDA backend's op table: every op of kernels/ops/backend.h, each entry calling
// its launcher with the stream's context (runtime.cu; in the emulated build, compiled
// by g++ in namespace cuda_emu with emu/emu_runtime.cpp's context). Plain C++: no
// kernel lives here.
// Invariant: an entry only enqueues (context() may throw before anything is enqueued,
// when the cuBLASLt workspace cannot be allocated).
#include "../ops/backend.h"
#include "cuda_ops.h"

namespace strata::STRATA_CUDA_NS {

const ops::Backend& backend() {
  static const ops::Backend table = [] {
    using namespace strata::ops;
    Backend b;
    b.name = "cuda";
    b.kind = DeviceKind::cuda;
#define STRATA_CUDA_ENTRY(op, Args) \
  b.op = [](const Args& a, Stream& s) { STRATA_CUDA_NS::op(a, context(s)); };
    STRATA_OPS(STRATA_CUDA_ENTRY)
#undef STRATA_CUDA_ENTRY
    return b;
  }();
  return table;
}

}  // namespace strata::STRATA_CUDA_NS
