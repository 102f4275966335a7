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

// Byte accounting with a hard capacity. Thread-safe.
class Arena {
 public:
  explicit Arena(std::string owner, size_t capacity);
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // 64-byte aligned; 4 KiB aligned for requests of at least 4 KiB (O_DIRECT, pages).
  // Throws strata::Error naming the request, what is live, and the capacity.
  void* allocate(size_t bytes, const char* what);
  void free(void* ptr);

  size_t capacity() const { return capacity_; }
  size_t bytes_live() const;
  size_t bytes_high_water() const;
  void reset_high_water();

 private:
  std::string owner_;
  size_t capacity_;
  mutable std::mutex mutex_;
  size_t live_ = 0;
  size_t high_water_ = 0;
  std::unordered_map<void*, size_t> sizes_;
};

class Device;

class Stream {
 public:
  explicit Stream(Device& device) : device_(&device) {}
  Device& device() const { return *device_; }
  // Waits for everything enqueued so far (inline CPU streams: returns at once).
  void synchronize();

 private:
  Device* device_;
};

class Device {
 public:
  // A CPU device with `capacity` bytes of arena (default: unlimited in practice).
  static std::unique_ptr<Device> cpu(int index = 0, size_t capacity = size_t(1) << 50);

  DeviceKind kind() const { return kind_; }
  int index() const { return index_; }
  std::string name() const;  // "cpu:0"
  Arena& arena() { return arena_; }
  Stream& stream() { return stream_; }

 private:
  Device(DeviceKind kind, int index, size_t capacity);
  DeviceKind kind_;
  int index_;
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
