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
// Two devices (cuda:0, cuda:1), each thread with a current device as in CUDA: every
// allocation is recorded on the device current when it ran and every launch on the
// device that owns its stream; one that runs while another device is current is
// recorded as misplaced (tests read both, tests/cuda_emu/test_devices.cpp).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <sstream>
#include <utility>
#include <vector>

#include "cuda/cuda_ops.h"
#include "cuda/emu/sanitize.h"
#include "cuda/runtime.h"
#include "strata/error.h"

namespace strata {
int cuda_device_count() { return cuda_runtime::kEmulatedDevices; }
bool built_with_cuda() { return true; }
}  // namespace strata

namespace strata::cuda_runtime {
void count_scratch_allocation(int device);
}

namespace strata::cuda_emu {
namespace {
class HostScratch : public Scratch {
 public:
  int device = 0;
  ~HostScratch() override { std::free(data_); }
  void* get(size_t bytes) override {
    if (bytes > size_) {
      std::free(data_);
      size_ = (bytes + 255) / 256 * 256;
      data_ = std::aligned_alloc(256, size_);
      cuda_runtime::count_scratch_allocation(device);  // cudaMallocAsync on a GPU
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

namespace {
thread_local int t_current_device = 0;  // cudaSetDevice's per-thread state
std::atomic<bool> g_guard_on{true};

std::mutex g_records_mutex;
DeviceRecord g_records[kEmulatedDevices];
std::vector<std::string> g_misplaced;
std::map<const void*, int> g_streams;  // stream handle -> its device

void misplaced(const std::string& what) {
  std::lock_guard lock(g_records_mutex);
  g_misplaced.push_back(what);
}

// Makes `index` the thread's current device for its scope, as runtime.cu's guard does
// with cudaSetDevice (off under set_device_guard(false): the test of the checks).
class DeviceGuard {
 public:
  explicit DeviceGuard(int index) : before_(t_current_device), on_(g_guard_on.load()) {
    if (on_) t_current_device = index;
  }
  ~DeviceGuard() {
    if (on_) t_current_device = before_;
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int before_;
  bool on_;
};
}  // namespace

void count_scratch_allocation(int device) {
  std::lock_guard lock(g_records_mutex);
  ++g_records[device].scratch_allocations;
}

DeviceState* open(int index, size_t& budget) {
  STRATA_CHECK(index >= 0 && index < kEmulatedDevices, "no CUDA device: cuda:" << index
                                                           << " was requested but the CUDA emulator has "
                                                           << kEmulatedDevices << " devices");
  DeviceGuard guard(index);
  if (budget == 0) budget = size_t(1) << 40;
  auto* s = new DeviceState;
  s->index = index;
  s->scratch.device = index;
  std::lock_guard lock(g_records_mutex);
  for (char& st : s->streams) g_streams[&st] = index;
  return s;
}
void close(DeviceState* s) {
  if (!s) return;
  {
    std::lock_guard lock(g_records_mutex);
    for (char& st : s->streams) g_streams.erase(&st);
  }
  delete s;
}
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
void* timing_event_create(int) { return new EmulatedEvent; }
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
// Live device allocations (start -> bytes, device current at the cudaMalloc), for
// allocation_device (segments of the arenas; is_device_memory reads g_blocks).
struct Allocation {
  size_t bytes;
  int device;
};
std::mutex g_allocations_mutex;
std::map<uintptr_t, Allocation> g_allocations;
// Registered host ranges (start -> bytes), under the same mutex: for host_registered_bytes.
std::map<uintptr_t, size_t> g_registered;
HostRecord g_host_record;

// cudaMalloc / cudaFree for device I's arena, each under a guard making I current.
template <int I>
void* allocate_on(size_t bytes, size_t alignment) {
  DeviceGuard guard(I);
  const int current = t_current_device;
  if (current != I) {
    std::ostringstream m;
    m << "an allocation of " << bytes << " bytes for cuda:" << I << "'s arena ran with cuda:" << current
      << " current";
    misplaced(m.str());
  }
  void* p = std::aligned_alloc(alignment, bytes);  // on_block poisons what the arena hands out
  if (!p) return p;
  {
    std::lock_guard lock(g_records_mutex);
    ++g_records[current].allocations;
  }
  std::lock_guard lock(g_allocations_mutex);
  g_allocations[uintptr_t(p)] = {bytes, current};
  return p;
}
template <int I>
void free_on(void* p) {
  DeviceGuard guard(I);
  {
    std::lock_guard lock(g_records_mutex);
    ++g_records[t_current_device].frees;
  }
  {
    std::lock_guard lock(g_allocations_mutex);
    g_allocations.erase(uintptr_t(p));
  }
  std::free(p);
}
// The arena's live blocks within the segments (start -> bytes): what ops may touch.
std::map<uintptr_t, size_t> g_blocks;
void on_block(void* p, size_t bytes) {
  std::memset(p, 0xff, bytes);
  std::lock_guard lock(g_allocations_mutex);
  g_blocks[uintptr_t(p)] = bytes;
}
void on_block_free(void* p) {
  std::lock_guard lock(g_allocations_mutex);
  g_blocks.erase(uintptr_t(p));
}
static_assert(kEmulatedDevices == 2, "device_memory's table below has one entry per emulated device");
}  // namespace

ArenaMemory device_memory(int index) {
  STRATA_CHECK(index >= 0 && index < kEmulatedDevices, "CUDA emulator: no device cuda:" << index);
  static constexpr void* (*allocate[])(size_t, size_t) = {allocate_on<0>, allocate_on<1>};
  static constexpr void (*release[])(void*) = {free_on<0>, free_on<1>};
  return {allocate[index], release[index], "emulated CUDA device memory", /*host_addressable=*/true,
          /*segments=*/true, on_block, on_block_free};
}

bool is_device_memory(const void* p, size_t bytes) {
  std::lock_guard lock(g_allocations_mutex);
  auto it = g_blocks.upper_bound(uintptr_t(p));  // a live arena block, not just its segment
  if (it == g_blocks.begin()) return false;
  --it;
  return uintptr_t(p) + bytes <= it->first + it->second;
}
int allocation_device(const void* p) {
  std::lock_guard lock(g_allocations_mutex);
  auto it = g_allocations.upper_bound(uintptr_t(p));
  if (it == g_allocations.begin()) return -1;
  --it;
  return uintptr_t(p) < it->first + it->second.bytes ? it->second.device : -1;
}

DeviceRecord device_record(int index) {
  STRATA_CHECK(index >= 0 && index < kEmulatedDevices, "CUDA emulator: no device cuda:" << index);
  std::lock_guard lock(g_records_mutex);
  return g_records[index];
}
HostRecord host_record() {
  std::lock_guard lock(g_allocations_mutex);
  return g_host_record;
}
std::vector<std::string> take_misplaced() {
  std::lock_guard lock(g_records_mutex);
  return std::exchange(g_misplaced, {});
}
void set_device_guard(bool on) { g_guard_on.store(on); }
void set_current_device(int index) { t_current_device = index; }
int current_device() { return t_current_device; }

bool host_register(void* p, size_t bytes) {
  std::lock_guard lock(g_allocations_mutex);
  ++g_host_record.registrations;
  return g_registered.emplace(uintptr_t(p), bytes).second;  // twice is refused, as by CUDA
}
void host_unregister(void* p) {
  std::lock_guard lock(g_allocations_mutex);
  ++g_host_record.unregistrations;
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

namespace strata::emu {
void record_launch(const void* kernel, void* stream) {
  using namespace cuda_runtime;
  std::lock_guard lock(g_records_mutex);
  auto it = g_streams.find(stream);
  const int current = t_current_device;
  if (it == g_streams.end()) {
    g_misplaced.push_back("a launch of " + sanitize::kernel_name(kernel) + " on a stream of no open device");
    return;
  }
  ++g_records[it->second].launches;
  if (it->second != current) {
    std::ostringstream m;
    m << "a launch of " << sanitize::kernel_name(kernel) << " on cuda:" << it->second << "'s stream ran with cuda:"
      << current << " current";
    g_misplaced.push_back(m.str());
  }
}
}  // namespace strata::emu

namespace strata::cuda_emu {
Context context(Stream& s) {
  auto* state = static_cast<cuda_runtime::DeviceState*>(s.device().backend());
  // The op's launches follow on this thread: its device becomes current, as
  // runtime.cu's context() does (cudaSetDevice).
  if (cuda_runtime::g_guard_on.load()) cuda_runtime::t_current_device = state->index;
  return Context{s.native(), &state->scratch};
}
}  // namespace strata::cuda_emu
