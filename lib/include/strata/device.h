// Devices, their memory arenas, streams and events.
// A Device is a rank's compute engine: a CUDA GPU or a simulated CPU device. Every
// device has an Arena with a capacity, so "does this fit in device memory" logic is
// exercised without a GPU. Code above kernels/ orders work only through streams and
// events, never by sleeping or by synchronizing a whole device.
//
// Every device has one stream per StreamRole, created with it. On a CUDA device they
// are cudaStream_t. On a CPU device the compute stream runs ops inline on the calling
// thread (the rank's thread), in submission order, which is the order a GPU stream
// guarantees (an op's parallelism comes from oneTBB inside it); each other stream is a
// worker thread running its items in FIFO order, so a missing Event wait is a real race
// on the CPU as on a GPU. Invariant: an item enqueued on a stream runs after every item
// enqueued on it before, and after every Event it was told to wait for.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace strata {

enum class DeviceKind : uint8_t { cpu, cuda };

const char* device_kind_name(DeviceKind kind);

// Where an arena's bytes come from: host memory by default, cudaMalloc for a CUDA
// device (function pointers, so this header needs no CUDA header).
struct ArenaMemory {
  void* (*allocate)(size_t bytes, size_t alignment);  // nullptr on failure
  void (*free)(void* ptr);
  const char* name;  // "host memory", "CUDA device memory": for error messages
  // Whether the host may read and write these bytes in place (host memory, the emulated
  // CUDA device's); false for cudaMalloc memory, reached only through Stream::copy.
  bool host_addressable = true;
  // Whether the arena reserves these bytes in segments it keeps and sub-allocates
  // (device memory: after its first step a training loop makes no runtime allocation
  // or free); false: one allocate/free per request (host memory, so a freed buffer's
  // pages go back to the system at once).
  bool segments = false;
  // Called on every block handed out of a segment and on its return (the emulator
  // poisons a block, as its cudaMalloc does, and bounds-checks ops against live
  // blocks); nullptr: nothing.
  void (*on_block)(void* ptr, size_t bytes) = nullptr;
  void (*on_block_free)(void* ptr) = nullptr;
};
ArenaMemory host_memory();

// Byte accounting with a hard capacity. Thread-safe.
class Arena {
 public:
  explicit Arena(std::string owner, size_t capacity, ArenaMemory memory = host_memory());
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // 64-byte aligned; 4 KiB aligned for requests of at least 4 KiB (O_DIRECT, pages).
  // Throws strata::Error naming the request, what is live, and the capacity.
  void* allocate(size_t bytes, const char* what);
  void free(void* ptr);

  size_t capacity() const { return capacity_; }
  const ArenaMemory& memory() const { return memory_; }
  size_t bytes_live() const;
  size_t bytes_high_water() const;
  void reset_high_water();
  // Bytes taken from the memory: the segments (memory().segments), else the live bytes.
  size_t bytes_reserved() const;

 private:
  void* take_block(size_t bytes, size_t alignment);  // mutex_ held; nullptr: none fits
  void* sub_allocate(size_t bytes, size_t alignment);
  void return_block(uintptr_t start, size_t bytes);
  void release_empty_segments();

  std::string owner_;
  size_t capacity_;
  ArenaMemory memory_;
  mutable std::mutex mutex_;
  size_t live_ = 0;
  size_t high_water_ = 0;
  std::unordered_map<void*, size_t> sizes_;
  std::map<uintptr_t, size_t> segments_;     // base -> bytes (memory().segments)
  std::map<uintptr_t, size_t> free_blocks_;  // start -> bytes, coalesced within a segment
  size_t reserved_ = 0;
};

class Device;
class Event;

// What a stream is for. compute: ops (Device::stream()); host_to_device: reads of
// tiers into device buffers; device_to_host: write-outs; communication: collectives.
enum class StreamRole : uint8_t { compute, host_to_device, device_to_host, communication };
const char* stream_role_name(StreamRole role);  // "compute", "host_to_device", ...
constexpr int kStreamRoles = 4;

class Stream {
 public:
  ~Stream();  // drains the queue first; never throws
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  Device& device() const { return *device_; }
  StreamRole role() const { return role_; }
  // The backend's stream handle (a cudaStream_t on CUDA devices; nullptr on CPU).
  void* native() const { return native_; }
  // Whether items run on a worker thread (a CPU device's non-compute streams) rather
  // than inline on the caller (a CPU compute stream) or on the GPU.
  bool is_worker() const { return worker_ != nullptr; }
  // Blocks the host until everything enqueued so far has run (an inline stream:
  // returns at once). Rethrows, once, the first error an item of a worker threw.
  void synchronize();
  // Copies `bytes` between host memory and this stream's device memory (either
  // direction, or within the device), ordered after the work already enqueued. CPU
  // compute stream: memcpy at once; CPU worker stream: memcpy on the worker; CUDA:
  // cudaMemcpyAsync on this stream. Neither side may be touched by the host, nor the
  // source overwritten, before the stream (or an Event recorded after the copy) says it
  // is done. The only way code above kernels/ moves bytes between the host and a device
  // buffer.
  void copy(void* dst, const void* src, size_t bytes);
  // Runs `fn` on the host in this stream's order: on the worker (CPU worker stream),
  // at once (inline stream), or from CUDA's callback thread (cudaLaunchHostFunc). `fn`
  // must not enqueue work on, or synchronize, any stream. What it throws is rethrown by
  // the next synchronize() (a CUDA callback's error is printed: it has no caller).
  void host_function(std::function<void()> fn);

 private:
  friend class Device;
  struct Worker;
  Stream(Device& device, StreamRole role, void* native);
  Device* device_;
  StreamRole role_;
  void* native_;
  std::unique_ptr<Worker> worker_;
};

// A point in a stream's order. record(s) marks "everything enqueued on s so far";
// wait(t) makes stream t's later items wait for the most recent record, without
// blocking the host (on a CPU device's inline compute stream the caller is the stream,
// so it blocks there). An Event never recorded counts as done, as in CUDA. Events of
// one device only: record and wait on streams of the device it was made for.
class Event {
 public:
  explicit Event(Device& device);
  ~Event();  // never throws; a pending record still completes
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;

  void record(Stream& stream);
  void wait(Stream& stream);
  // Whether the most recent record has completed (never blocks).
  bool query() const;
  // Blocks the host until the most recent record has completed.
  void synchronize();
  // Milliseconds from this event's completion to `later`'s; waits for both. Throws
  // strata::Error when either was never recorded.
  float elapsed_ms(Event& later);
  // Seconds on the lib/core clock (now_seconds) when the most recent record completed;
  // waits for it (CPU devices only: timestamps of worker items; a CUDA device throws).
  double completed_at();

 private:
  struct State;
  Device* device_;
  std::shared_ptr<State> state_;  // CPU: shared with the worker items that complete it
  void* native_ = nullptr;        // CUDA: a cudaEvent_t
};

// Ordering fuzz for CPU worker streams: with a seed other than 0, each copy and host
// function waits a pseudo-random 0-0.5 ms (seed, device, role, item index) before it
// runs (events' markers do not), so orderings that only hold by luck break. Starts from
// STRATA_STREAM_FUZZ (a decimal seed; else the first CPU device throws) or this hook.
void set_stream_fuzz(uint64_t seed);
uint64_t stream_fuzz();

class Device {
 public:
  // A CPU device with `capacity` bytes of arena (default: unlimited in practice).
  static std::unique_ptr<Device> cpu(int index = 0, size_t capacity = size_t(1) << 50);
  // CUDA device `index` with an arena of `budget` bytes of device memory (0: the
  // memory free when it is opened). Throws strata::Error starting "no CUDA device: "
  // when strata was built without CUDA or no usable GPU is present.
  static std::unique_ptr<Device> cuda(int index = 0, size_t budget = 0);
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  DeviceKind kind() const { return kind_; }
  int index() const { return index_; }
  std::string name() const;  // "cpu:0"
  Arena& arena() { return arena_; }
  // The compute stream: where ops run.
  Stream& stream() { return *streams_[0]; }
  Stream& stream(StreamRole role) { return *streams_[int(role)]; }
  // Whether the host can address this device's memory directly (CPU devices and the
  // emulated CUDA device): host-memory collectives (make_cpu_comms) accept its buffers.
  bool host_addressable() const { return arena_.memory().host_addressable; }
  // Backend state (CUDA: streams, events, cuBLASLt handle), opaque to this header.
  void* backend() const { return backend_; }

 private:
  Device(DeviceKind kind, int index, size_t capacity, ArenaMemory memory = host_memory(),
         void* backend = nullptr);
  DeviceKind kind_;
  int index_;
  void* backend_;
  Arena arena_;
  std::unique_ptr<Stream> streams_[kStreamRoles];  // by StreamRole; go before the arena
};

// Owning device memory from a device's arena. Movable, not copyable.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Device& device, size_t bytes, const char* what);
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t size() const { return bytes_; }
  Device* device() const { return device_; }

 private:
  void release();
  Device* device_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Worker threads every CPU op may use (oneTBB arena size). 0 = all cores.
void set_num_threads(int threads);
int num_threads();

}  // namespace strata

namespace strata {
// Number of CUDA devices this process can use: 0 when strata was built without the
// CUDA backend, or when no driver or device is present.
int cuda_device_count();
// Whether this build contains the CUDA backend.
bool built_with_cuda();
}  // namespace strata
