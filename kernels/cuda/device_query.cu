// CUDA runtime probe. Asking for CUDA on a machine without a driver or device must
// give a clear answer, never a crash: cudaGetDeviceCount's error is turned into 0.
#include <cuda_runtime.h>

#include "strata/device.h"

namespace strata {

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return n;
}

bool built_with_cuda() { return true; }

}  // namespace strata
