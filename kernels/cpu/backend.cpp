// The CPU backend's op table: every op of kernels/ops/backend.h, each entry calling
// its kernel in this folder. CPU kernels run on the calling thread, so the stream
// only names the device.
// Invariant: registers every op (the CPU is the reference every other backend is
// compared with), and adds no check: the entry points have made them all.
#include "ops/backend.h"

#include "cpu.h"

namespace strata::cpu {

const ops::Backend& backend() {
  static const ops::Backend table = [] {
    using namespace strata::ops;
    Backend b;
    b.name = "cpu";
    b.kind = DeviceKind::cpu;
#define STRATA_CPU_ENTRY(op, Args) \
  b.op = [](const Args& a, Stream&) { cpu::op(a); };
    STRATA_OPS(STRATA_CPU_ENTRY)
#undef STRATA_CPU_ENTRY
    return b;
  }();
  return table;
}

}  // namespace strata::cpu
