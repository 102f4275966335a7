// The one way kernels are launched, and the one header every kernels/cuda/<family>.cu
// starts from. Under nvcc, launch() is `kernel<<<grid, block, shared, stream>>>`;
// compiled by g++ with -DSTRATA_CUDA_EMULATION (tests only), it runs the kernel on
// the CPU through kernels/cuda/emu (see emu/emu.h for how, and what a kernel must not
// do to stay emulatable: no inline PTX, no tensor-core intrinsics, no implicit warp
// lock-step, barriers reached by all threads of a block or none).
// Invariant: no kernel source uses <<< >>> or extern __shared__ directly, so every
// custom kernel runs unchanged in the emulator; what cannot (cuBLASLt GEMMs) lives in
// files the emulation build leaves out (matmul.cu, runtime.cu, device_query.cu).
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(STRATA_CUDA_EMULATION)
#include "emu/emu.h"
// Dynamic shared memory of the launch, as `SharedPtr<type> name`.
#define STRATA_DYNAMIC_SHARED(type, name) \
  ::strata::STRATA_CUDA_NS::SharedPtr<type> name = ::strata::emu::dynamic_shared_ptr<type>()
#define STRATA_CUDA_NS cuda_emu
#else
#include <cuda_runtime.h>
#define STRATA_DYNAMIC_SHARED(type, name)                    \
  extern __shared__ __align__(16) unsigned char strata_dynamic_shared_[]; \
  type* name = reinterpret_cast<type*>(strata_dynamic_shared_)
#define STRATA_CUDA_NS cuda
#endif

namespace strata::STRATA_CUDA_NS {

// Shared memory is declared and passed around through these two, so the emulator
// can check every access (emu/shared.h: bounds, races, bank conflicts):
//   __shared__ Shared<float[32]> buf;      // not: __shared__ float buf[32];
//   void helper(SharedPtr<float> row);     // not: float* row
// Under nvcc they are the plain array and pointer.
#if defined(STRATA_CUDA_EMULATION)
template <class A>
using Shared = ::strata::emu::Shared<A>;
template <class T>
using SharedPtr = ::strata::emu::SharedPtr<T>;
#else
template <class A>
using Shared = A;
template <class T>
using SharedPtr = T*;
#endif

#if !defined(STRATA_CUDA_EMULATION)
// Throws strata::Error for a failed launch (a bug: bad configuration, too much shared
// memory). Defined in runtime.cu.
void check_launch(cudaError_t status, const char* kernel_name);
// After each launch: a launch error names the kernel; with STRATA_CUDA_SYNC=1 the
// stream is synchronized too, so a fault names the kernel that made it (runtime.cu).
void after_launch(const void* kernel, void* stream);
bool sync_after_launch();  // STRATA_CUDA_SYNC=1 in the environment
#endif

// Launches kernel over grid x block threads with `shared_bytes` of dynamic shared
// memory on `stream` (a cudaStream_t; the emulator records it for its device and runs
// the grid to completion before returning).
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, void* stream,
            Args... args) {
#if defined(STRATA_CUDA_EMULATION)
  ::strata::emu::record_launch(reinterpret_cast<const void*>(kernel), stream);
  ::strata::emu::launch(reinterpret_cast<const void*>(kernel), grid, block, shared_bytes,
                        [&] { kernel(Params(args)...); });
#else
  // Past 48 KiB a kernel must opt in to more dynamic shared memory.
  if (shared_bytes > (size_t(48) << 10))
    check_launch(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared_bytes)),
                 "cudaFuncSetAttribute");
  kernel<<<grid, block, shared_bytes, static_cast<cudaStream_t>(stream)>>>(Params(args)...);
  after_launch(reinterpret_cast<const void*>(kernel), stream);
#endif
}

// Blocks of `threads` covering n items, capped so grid-stride loops take the rest.
inline unsigned blocks_for(int64_t n, int threads, int64_t cap = 4096) {
  int64_t b = (n + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > cap ? cap : b));
}

}  // namespace strata::STRATA_CUDA_NS
