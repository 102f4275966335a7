// Devices, their memory arenas, and streams.
// A Device is a rank's compute engine: a CUDA GPU or a simulated CPU device. Every
// device has an Arena with a capacity, so "does this fit in device memory" logic is
// exercised without a GPU. Code above kernels/ orders work only through streams.
//
// CPU streams execute ops inline on the calling thread (the rank's thread), in
// submission order, which is the order a GPU stream guarantees; the op's own
// parallelism comes from oneTBB inside the op.
#pragma once
#include <cstddef>
#include <cstdint>
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

 private:
  std::string owner_;
  size_t capacity_;
  ArenaMemory memory_;
  mutable std::mutex mutex_;
  size_t live_ = 0;
  size_t high_water_ = 0;
  std::unordered_map<void*, size_t> sizes_;
};

class Device;

class Stream {
 public:
  explicit Stream(Device& device, void* native = nullptr) : device_(&device), native_(native) {}
  Device& device() const { return *device_; }
  // The backend's stream handle (a cudaStream_t on CUDA devices; nullptr on CPU).
  void* native() const { return native_; }
  // Waits for everything enqueued so far (inline CPU streams: returns at once).
  void synchronize();
  // Copies `bytes` between host memory and this stream's device memory (either
  // direction, or within the device), ordered after the work already enqueued. CPU:
  // memcpy at once. CUDA: cudaMemcpyAsync on this stream; synchronize() before the host
  // reads a host destination. The only way code above kernels/ moves bytes between
  // the host and a device buffer.
  void copy(void* dst, const void* src, size_t bytes);

 private:
  Device* device_;
  void* native_;
};

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
  Stream& stream() { return stream_; }
  // Whether the host can address this device's memory directly (CPU devices and the
  // emulated CUDA device): host-memory collectives (make_cpu_comms) accept its buffers.
  bool host_addressable() const { return arena_.memory().host_addressable; }
  // Backend state (CUDA: streams, events, cuBLASLt handle), opaque to this header.
  void* backend() const { return backend_; }

 private:
  Device(DeviceKind kind, int index, size_t capacity, ArenaMemory memory = host_memory(),
         void* backend = nullptr, void* native_stream = nullptr);
  DeviceKind kind_;
  int index_;
  void* backend_;
  Arena arena_;
  Stream stream_;
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
