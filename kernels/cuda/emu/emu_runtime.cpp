// The CUDA runtime of the emulation build (tests only, in place of runtime.cu): a
// Device::cuda() whose memory is host memory and whose kernels run through the
// emulator, so the whole Model and Trainer take the CUDA dispatch path in CI.
// Invariant: emulated launches run to completion before they return, so every
// stream is always idle: copies are memcpy, synchronize does nothing, and an event
// completes when it is recorded (it keeps that time, for elapsed_ms). New
// device memory is filled with 0xff bytes (NaN), as cudaMalloc memory is garbage: a
// read before a write shows up in results instead of passing as zero; live
// allocations are tracked so the op entry points refuse host memory (ops/check.cpp),
// and registered host ranges so tests see that pinned pools register and unregister.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

#include "cuda/cuda_ops.h"
#include "cuda/runtime.h"
#include "strata/error.h"

namespace strata {
int cuda_device_count() { return 1; }
bool built_with_cuda() { return true; }
}  // namespace strata

namespace strata::cuda_emu {
namespace {
class HostScratch : public Scratch {
 public:
  ~HostScratch() override { std::free(data_); }
  void* get(size_t bytes) override {
    if (bytes > size_) {
      std::free(data_);
      size_ = (bytes + 255) / 256 * 256;
      data_ = std::aligned_alloc(256, size_);
      STRATA_CHECK(data_, "CUDA emulator: out of host memory for " << size_ << " bytes of scratch");
    }
    return data_;
  }

 private:
  void* data_ = nullptr;
  size_t size_ = 0;
};
}  // namespace
}  // namespace strata::cuda_emu

namespace strata::cuda_runtime {

struct DeviceState {
  int index = 0;
  char streams[4] = {};  // their addresses are the (non-null) stream handles
  cuda_emu::HostScratch scratch;
};

DeviceState* open(int index, size_t& budget) {
  STRATA_CHECK(index == 0, "no CUDA device: cuda:" << index << " was requested but the CUDA emulator has one device");
  if (budget == 0) budget = size_t(1) << 40;
  auto* s = new DeviceState;
  s->index = index;
  return s;
}
void close(DeviceState* s) { delete s; }
void* stream(DeviceState* s, StreamRole role) { return &s->streams[int(role)]; }
void synchronize(void*) {}
namespace {
struct EmulatedEvent {
  std::chrono::steady_clock::time_point at{};
  bool recorded = false;
};
}  // namespace
void* event_create() { return new EmulatedEvent; }
void* timing_event_create() { return new EmulatedEvent; }
void event_destroy(void* e) { delete static_cast<EmulatedEvent*>(e); }
void event_record(void* e, void*) { *static_cast<EmulatedEvent*>(e) = {std::chrono::steady_clock::now(), true}; }
void stream_wait(void*, void*) {}
bool event_query(void*) { return true; }
void event_synchronize(void*) {}
float event_elapsed_ms(void* start, void* end) {
  auto* a = static_cast<EmulatedEvent*>(start);
  auto* b = static_cast<EmulatedEvent*>(end);
  STRATA_CHECK(a->recorded && b->recorded, "CUDA emulator: elapsed time of an event that was never recorded");
  return std::chrono::duration<float, std::milli>(b->at - a->at).count();
}

namespace {
// Live device allocations (start -> bytes), for is_device_memory.
std::mutex g_allocations_mutex;
std::map<uintptr_t, size_t> g_allocations;
// Registered host ranges (start -> bytes), under the same mutex: for host_registered_bytes.
std::map<uintptr_t, size_t> g_registered;
}  // namespace

ArenaMemory device_memory() {
  return {[](size_t bytes, size_t alignment) {
            void* p = std::aligned_alloc(alignment, bytes);
            if (!p) return p;
            std::memset(p, 0xff, bytes);
            std::lock_guard lock(g_allocations_mutex);
            g_allocations[uintptr_t(p)] = bytes;
            return p;
          },
          [](void* p) {
            {
              std::lock_guard lock(g_allocations_mutex);
              g_allocations.erase(uintptr_t(p));
            }
            std::free(p);
          },
          "emulated CUDA device memory", /*host_addressable=*/true};
}

bool is_device_memory(const void* p, size_t bytes) {
  std::lock_guard lock(g_allocations_mutex);
  auto it = g_allocations.upper_bound(uintptr_t(p));
  if (it == g_allocations.begin()) return false;
  --it;
  return uintptr_t(p) + bytes <= it->first + it->second;
}
bool host_register(void* p, size_t bytes) {
  std::lock_guard lock(g_allocations_mutex);
  return g_registered.emplace(uintptr_t(p), bytes).second;  // twice is refused, as by CUDA
}
void host_unregister(void* p) {
  std::lock_guard lock(g_allocations_mutex);
  if (!g_registered.erase(uintptr_t(p)))
    std::fprintf(stderr, "strata: CUDA emulator: host_unregister(%p) of memory that is not registered\n", p);
}
size_t host_registered_bytes() {
  std::lock_guard lock(g_allocations_mutex);
  size_t total = 0;
  for (const auto& [start, bytes] : g_registered) total += bytes;
  return total;
}
void launch_host_function(void*, std::function<void()> fn) { fn(); }  // the stream is idle
void copy_async(void* dst, const void* src, size_t bytes, void*) { std::memmove(dst, src, bytes); }

}  // namespace strata::cuda_runtime

namespace strata::cuda_emu {
Context context(Stream& s) {
  auto* state = static_cast<cuda_runtime::DeviceState*>(s.device().backend());
  return Context{s.native(), &state->scratch};
}
}  // namespace strata::cuda_emu
