// Built instead of the CUDA sources when strata is configured without CUDA: asking
// for a CUDA device gives a clear error; nothing else here can be reached, since no
// CUDA Device (hence no CUDA stream or state) can exist in such a build.
#include "cuda/runtime.h"
#include "strata/device.h"
#include "strata/error.h"

namespace strata {
int cuda_device_count() { return 0; }
bool built_with_cuda() { return false; }
}  // namespace strata

namespace strata::cuda_runtime {

DeviceState* open(int index, size_t&) {
  STRATA_FAIL("no CUDA device: cuda:" << index
                                      << " was requested but strata was built without the CUDA backend; "
                                         "rebuild with -DSTRATA_CUDA=ON where the CUDA toolkit is installed, "
                                         "or run on a CPU device");
}
void close(DeviceState*) {}
void* stream(DeviceState*, StreamRole) { return nullptr; }
std::string product_name(int) { return ""; }
void synchronize(void*) {}
void* event_create() { return nullptr; }
void event_destroy(void*) {}
void event_record(void*, void*) {}
void stream_wait(void*, void*) {}
bool event_query(void*) { return true; }
void event_synchronize(void*) {}
void* timing_event_create() { return nullptr; }
void* timing_event_create(int) { return nullptr; }
float event_elapsed_ms(void*, void*) { return 0; }
double memory_bandwidth(int) { return 0; }
ArenaMemory device_memory(int) { return host_memory(); }
bool host_register(void*, size_t) { return false; }
void host_unregister(void*) {}
void launch_host_function(void*, std::function<void()>) {}
void copy_async(void*, const void*, size_t, void*) {}

}  // namespace strata::cuda_runtime
