// The host side of ZeRO-Infinity: a budgeted pool of pinned host memory and an NVMe
// store that moves bytes between that memory and swap files striped across drives.
// Invariants: every byte of pinned memory comes from one pool reserved up front (so
// it can be registered with io_uring once), and NVMe I/O is in 4 KiB blocks — an
// I/O's offset and buffer are 4 KiB aligned, and a length that is not a multiple of
// 4 KiB moves the whole last block (the buffer must hold it; pinned buffers do).
// No CUDA header here: a pool that serves a CUDA device is page-locked for CUDA too
// (cudaHostRegister of the same reservation, through PinnedRegistration's function
// pointers), so its copies to and from the GPU are asynchronous DMA.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace strata {
class Device;
}

namespace strata::offload {

inline constexpr size_t kBlockBytes = 4096;  // O_DIRECT alignment of offsets, lengths, buffers

// ---- pinned pool

struct PinnedPoolStats {
  size_t bytes_reserved = 0;    // the budget, mapped (and locked) up front
  size_t bytes_in_use = 0;      // handed out in live buffers (rounded to 4 KiB)
  size_t bytes_high_water = 0;  // the most ever in use at once
  bool locked = false;          // false: mlock was refused, the memory is pageable
  bool registered = false;      // registered with a device runtime (PinnedRegistration)
};

// Page-locks a pool's whole reservation for a device's copy engine (cudaHostRegister
// on CUDA) once, at construction, and undoes it at destruction. Function pointers, so
// this header needs no CUDA header; a default-constructed one registers nothing.
struct PinnedRegistration {
  bool (*register_memory)(void* base, size_t bytes) = nullptr;  // false: refused
  void (*unregister_memory)(void* base) = nullptr;              // never throws
  const char* name = "";  // "CUDA": for the warning when registration is refused
};
// What a pool moving bytes to and from `device` needs: CUDA's registration for a CUDA
// device, none for a CPU device.
PinnedRegistration pinned_registration_for(const Device& device);

class PinnedPool;

// A 4 KiB-aligned span of pinned memory, returned to its pool when destroyed.
// capacity() is size() rounded up to 4 KiB: the bytes a block I/O may touch.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  PinnedBuffer(PinnedBuffer&& other) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& other) noexcept;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer() { reset(); }

  void* data() const { return data_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  explicit operator bool() const { return data_ != nullptr; }
  void reset();  // gives the memory back now

 private:
  friend class PinnedPool;
  PinnedPool* pool_ = nullptr;
  void* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

// One budgeted region of page-aligned, locked host memory, sub-allocated first-fit
// into PinnedBuffers. Thread-safe. The pool must outlive its buffers.
class PinnedPool {
 public:
  // Reserves budget_bytes (rounded up to 4 KiB) now. If mlock is refused (the
  // RLIMIT_MEMLOCK soft limit is raised to the hard limit first), the pool keeps
  // pageable memory, prints one warning line and reports locked = false.
  // huge_pages asks for transparent huge pages: physically contiguous buffers make
  // fewer DMA segments per transfer (worth 2-3x on virtio disks); false keeps 4 KiB pages.
  // `registration` then page-locks the reservation for a device runtime; if that is
  // refused, the pool stays usable (copies from it are then staged by the driver),
  // prints one warning line and reports registered = false.
  explicit PinnedPool(size_t budget_bytes, std::string name = "pinned pool", bool huge_pages = true,
                      PinnedRegistration registration = {});
  ~PinnedPool();
  PinnedPool(const PinnedPool&) = delete;
  PinnedPool& operator=(const PinnedPool&) = delete;

  // Throws strata::Error naming the request, what is in use and the budget when
  // the request does not fit.
  PinnedBuffer allocate(size_t bytes);
  PinnedPoolStats stats() const;
  void reset_high_water();  // to what is in use now: the high-water of a window starts here

  // The whole reserved range: what the NVMe store registers with io_uring.
  char* base() const { return base_; }
  size_t bytes_reserved() const { return reserved_; }
  bool contains(const void* ptr, size_t bytes) const;
  const std::string& name() const { return name_; }

 private:
  friend class PinnedBuffer;
  void release(void* ptr, size_t capacity) noexcept;

  std::string name_;
  char* base_ = nullptr;
  size_t reserved_ = 0;
  bool locked_ = false;
  PinnedRegistration registration_;
  bool registered_ = false;
  mutable std::mutex mutex_;
  std::map<size_t, size_t> free_;  // offset -> bytes, coalesced
  size_t in_use_ = 0;
  size_t high_water_ = 0;
};

// ---- NVMe store

// Where a transfer is about to go, as the fault hook sees it.
struct NvmeFaultSite {
  uint32_t object = 0;
  const std::string* path = nullptr;  // the swap file
  uint64_t file_offset = 0;
  size_t bytes = 0;
  bool write = false;
};

// Called before every transfer (resubmissions included). Returns 0 to go ahead,
// -errno to fail the transfer with that error without doing it, or n > 0 to move
// at most n bytes (a short transfer, which the store must resubmit).
using NvmeFaultHook = std::function<int64_t(const NvmeFaultSite&)>;

struct NvmeOptions {
  std::vector<std::string> paths;  // directories, one per drive; must exist
  size_t extent_bytes = size_t(4) << 20;  // stripe unit, round-robin over paths (4 KiB multiple)
  size_t block_bytes = size_t(1) << 20;   // largest single transfer (4 KiB multiple)
  int queue_depth = 32;                   // transfers in flight
  bool force_fallback = false;   // use the pread/pwrite thread pool even where io_uring works
  int fallback_threads = 0;      // 0: queue_depth, at most 32
  bool keep_files = false;       // false: swap files vanish when the store closes (or dies)
  PinnedPool* pinned = nullptr;  // registered with io_uring once, when given
  NvmeFaultHook fault_hook;      // tests only
};

struct NvmeObjectSpec {
  std::string name;
  uint64_t bytes = 0;
};

struct NvmeStats {
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  uint64_t bytes_reserved = 0;  // fallocated across all swap files
  uint64_t transfers = 0;
  uint64_t short_transfers = 0;  // resubmitted for the remainder
  uint64_t retries = 0;          // EINTR / EAGAIN
  uint64_t errors = 0;
  // Wall time with at least one read or write in flight (their union, not their sum):
  // the store's transfer time, against which offload measures what compute waited.
  double busy_seconds = 0;
};

// Called once per read or write, on the store's I/O thread, with nullptr on success
// or the strata::Error. Keep it short; it may submit more I/O but must not wait on it.
using IoCallback = std::function<void(std::exception_ptr)>;

class NvmeBackend;  // io_uring or the thread pool (offload/io_backend.h)
struct IoContext;
struct NvmeObject;

// Swap space striped over the paths in fixed-size extents. Objects are reserved
// (fallocated, after checking free space for the whole plan) and then read and
// written asynchronously at (object, offset, bytes). Thread-safe: any thread may
// submit. Threading design: offload/nvme_store.cpp, at the top.
class NvmeStore {
 public:
  explicit NvmeStore(NvmeOptions options);
  ~NvmeStore();  // waits for I/O in flight, then closes (and removes) the swap files
  NvmeStore(const NvmeStore&) = delete;
  NvmeStore& operator=(const NvmeStore&) = delete;

  // Checks that every path has room for the whole plan, then fallocates it; nothing
  // is reserved if any check fails. Returns one object id per spec, in order.
  std::vector<uint32_t> reserve(const std::vector<NvmeObjectSpec>& plan);
  uint32_t reserve(const std::string& name, uint64_t bytes);

  // Bad arguments throw here, before anything is queued; I/O errors arrive through
  // the future or the callback. `bytes` may be odd (the last block moves whole).
  std::future<void> read(uint32_t object, uint64_t offset, void* dst, size_t bytes);
  std::future<void> write(uint32_t object, uint64_t offset, const void* src, size_t bytes);
  void read(uint32_t object, uint64_t offset, void* dst, size_t bytes, IoCallback done);
  void write(uint32_t object, uint64_t offset, const void* src, size_t bytes, IoCallback done);

  uint64_t object_bytes(uint32_t object) const;
  const std::vector<std::string>& files() const { return files_; }  // one per path
  bool fallback() const;        // true: the pread/pwrite thread pool
  bool direct() const { return direct_; }  // O_DIRECT on every path
  bool buffers_registered() const;
  const char* backend_name() const;
  NvmeStats stats() const;

 private:
  void submit(uint32_t object, uint64_t offset, char* buffer, size_t bytes, bool write,
              IoCallback done);

  NvmeOptions options_;
  std::vector<std::string> files_;
  std::vector<int> fds_;
  bool direct_ = true;
  // Requests in flight and the busy time they add up to (NvmeStats::busy_seconds).
  void busy_begin();
  void busy_end();
  mutable std::mutex busy_mutex_;
  int64_t in_flight_ = 0;
  double busy_since_ = 0, busy_seconds_ = 0;
  mutable std::mutex mutex_;                    // objects_ and file_bytes_
  std::vector<std::unique_ptr<NvmeObject>> objects_;
  std::vector<uint64_t> file_bytes_;            // reserved bytes per swap file
  std::unique_ptr<IoContext> context_;          // shared with the backend, outlives it
  std::unique_ptr<NvmeBackend> backend_;
};

// ---- offload placement (the OffloadStore, offload/offload_store.h, implements it)

// Where one kind of training state lives: the device arena, host RAM, or NVMe
// (swap files, moved through the pinned pool).
enum class Tier : uint8_t { device, host, nvme };
const char* tier_name(Tier t);

struct OffloadOptions {
  Tier params = Tier::host;     // working parameters (precision dtype)
  Tier grads = Tier::host;      // f32 accumulated gradients
  Tier optimizer = Tier::host;  // f32 master, Adam m and v
  std::vector<std::string> nvme_paths;  // one directory per drive (any tier on nvme)
  size_t pinned_bytes = size_t(256) << 20;  // the pinned pool's budget
  int prefetch = 2;                 // units read ahead (forward order, reverse in backward)
  int64_t tile_elements = 1 << 20;  // optimizer tile streamed from NVMe (multiple of 2048)
  bool require_direct = true;       // false: accept paths that refuse O_DIRECT (tests)
  NvmeFaultHook nvme_fault_hook;    // tests only: passed to the NVMe store
};

// Bytes live per tier and I/O of the last step (or since construction).
struct OffloadStats {
  size_t device_bytes = 0;       // the store's device buffers (pool + device-tier state)
  size_t pinned_bytes = 0;       // pinned pool high-water in the window
  size_t host_bytes = 0;         // host-tier state
  uint64_t nvme_bytes = 0;       // reserved on NVMe
  uint64_t nvme_read = 0, nvme_written = 0;  // bytes moved in the window
  double seconds = 0;            // the window's wall time
  double stall_seconds = 0;      // compute waiting on I/O in the window
  // Transfer time in the window: NVMe busy time (NvmeStats::busy_seconds) plus the
  // tier copies' own time on the host_to_device and device_to_host streams (events).
  double transfer_seconds = 0;
  // The share of transfer time compute did not wait for: 1 - stall / transfer, in
  // [0, 1]; 0 when nothing moved.
  double overlap_fraction() const {
    return transfer_seconds > 0 ? std::clamp(1.0 - stall_seconds / transfer_seconds, 0.0, 1.0) : 0.0;
  }
  double norm_seconds = 0;       // the global-norm pass (clipping's price) in the window
  // The background optimizer steps that finished in the window: their wall time and
  // their own NVMe traffic (what they streamed, beside the forward's reads).
  double update_seconds = 0;
  uint64_t update_read = 0, update_written = 0;
  double read_gbps() const { return seconds > 0 ? double(nvme_read) / seconds / 1e9 : 0; }
  double write_gbps() const { return seconds > 0 ? double(nvme_written) / seconds / 1e9 : 0; }
};

}  // namespace strata::offload
