// Built instead of the CUDA sources when strata is configured without CUDA.
#include "strata/device.h"

namespace strata {
int cuda_device_count() { return 0; }
bool built_with_cuda() { return false; }
}  // namespace strata
