// The CUDA runtime seen from plain C++ (lib/core/device.cpp, the op entry points):
// opening a device, its memory, streams, events and pinned host memory. Implemented in
// runtime.cu; in a build without CUDA, no_cuda.cpp makes open() throw.
// Invariant: no CUDA header here; handles are void* (cudaStream_t, cudaEvent_t).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "strata/device.h"

namespace strata::cuda_runtime {

// Per-device state: the four ordered streams, cuBLASLt handle and workspace, and the
// compute stream's scratch. Owned by the Device (Device::backend()).
struct DeviceState;

using strata::StreamRole;  // the public one (strata/device.h)

// Opens GPU `index`: selects it, creates the streams and the cuBLASLt handle. `budget`
// 0 becomes the free device memory. Throws strata::Error "no CUDA device: ..." when
// there is none (or strata was built without CUDA), naming what was found.
DeviceState* open(int index, size_t& budget);
void close(DeviceState* state);  // never throws

void* stream(DeviceState* state, StreamRole role);  // a cudaStream_t

// The GPU's product name (cudaGetDeviceProperties), e.g. "NVIDIA H100 80GB HBM3";
// "" when there is no such device.
std::string product_name(int index);
void synchronize(void* stream);

// Events order streams without blocking the host: record on one, wait on another.
void* event_create();
void event_destroy(void* event);
void event_record(void* event, void* stream);
void stream_wait(void* stream, void* event);
bool event_query(void* event);        // the latest record has completed
void event_synchronize(void* event);  // blocks the host until it has
// Kernel timing (strata-bench kernels): an event that records a time, and the
// milliseconds between two recorded ones (waits until `end` has happened).
void* timing_event_create();
void* timing_event_create(int device);  // on GPU `device`, whichever is current
float event_elapsed_ms(void* start, void* end);

// Peak DRAM bandwidth of GPU `index` in bytes/s (2 x memory clock x bus width, the
// data-sheet figure); 0 when unknown.
double memory_bandwidth(int index);

// Device memory for the arena of GPU `index` (cudaMalloc, 256-byte aligned), each
// allocation and free made with `index` current, whichever device the caller's is.
ArenaMemory device_memory(int index);

// Page-locks existing host memory for every device (cudaHostRegister, portable), so
// copies from and to it are asynchronous DMA that overlaps compute: the offload pinned
// pool's reservation (offload::pinned_registration_for). false when refused; the
// memory then stays pageable. host_unregister never throws.
bool host_register(void* ptr, size_t bytes);
void host_unregister(void* ptr);

// Runs `fn` on the host in `stream`'s order (cudaLaunchHostFunc); an exception it throws
// is printed, as the callback thread has no caller to hand it to.
void launch_host_function(void* stream, std::function<void()> fn);

// Asynchronous copies on `stream` (cudaMemcpyAsync, direction inferred).
void copy_async(void* dst, const void* src, size_t bytes, void* stream);

#if defined(STRATA_CUDA_EMULATION)
// Emulated devices only (tests): cuda:0 and cuda:1.
constexpr int kEmulatedDevices = 2;
// What the emulated runtime ran on one device since the process started: cudaMalloc /
// cudaFree (arena memory, recorded on the device current when they ran), launches
// (recorded on the device owning their stream) and stream-scratch growths
// (cudaMallocAsync on a GPU).
struct DeviceRecord {
  uint64_t allocations = 0, frees = 0, launches = 0, scratch_allocations = 0;
};
DeviceRecord device_record(int index);
// cudaHostRegister / cudaHostUnregister calls, all devices.
struct HostRecord {
  uint64_t registrations = 0, unregistrations = 0;
};
HostRecord host_record();
// The device current when the live allocation holding `p` was made; -1 when none holds it.
int allocation_device(const void* p);
// What landed on a device other than its owner since the last call (an allocation for
// one device's arena, or a launch on its stream, made with another device current),
// one sentence each, and clears them.
std::vector<std::string> take_misplaced();
// The test of the checks: with the guard off, nothing sets the current device, so
// set_current_device's wrong choice stays and the emulator must report it.
void set_device_guard(bool on);
void set_current_device(int index);  // this thread's, as cudaSetDevice
int current_device();
// Emulated device only: whether [p, p + bytes) lies in one live device allocation.
bool is_device_memory(const void* p, size_t bytes);
// Emulated device only: host bytes registered by host_register and not yet unregistered.
size_t host_registered_bytes();
#endif

}  // namespace strata::cuda_runtime
