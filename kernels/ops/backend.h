// Backend dispatch for the op entry points: after the checks, an op runs its CUDA
// launcher when the stream belongs to a CUDA device, else the CPU kernel.
// The entry points are compiled once more for tests with -DSTRATA_CUDA_EMULATION,
// where cuda:: names the emulated kernels (tests/CMakeLists.txt, strata_emulated).
// Invariant: used only after check::require_backend, so a CUDA stream reaching here
// means the op has a CUDA implementation in this build.
#pragma once
#include "strata/device.h"

#if defined(STRATA_WITH_CUDA)
#include "cuda/cuda_ops.h"
#if defined(STRATA_CUDA_EMULATION)
// The emulated-device build (tests only): CUDA streams run the emulated kernels.
namespace strata {
namespace cuda = cuda_emu;
}
#endif
// Runs `call` (a strata::cuda launcher) and returns from the entry point when s is a
// CUDA stream.
#define STRATA_CUDA_OP(s, call)                          \
  do {                                                   \
    if ((s).device().kind() == ::strata::DeviceKind::cuda) { \
      call;                                              \
      return;                                            \
    }                                                    \
  } while (0)
#else
#define STRATA_CUDA_OP(s, call) \
  do {                          \
  } while (0)
#endif
