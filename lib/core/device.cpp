#include "strata/device.h"

#include <tbb/global_control.h>
#include <tbb/info.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "cuda/runtime.h"
#include "strata/error.h"

namespace strata {

namespace {
std::string format_bytes(size_t b) {
  std::ostringstream s;
  if (b >= (size_t(1) << 30))
    s << double(b) / double(size_t(1) << 30) << " GiB";
  else if (b >= (size_t(1) << 20))
    s << double(b) / double(size_t(1) << 20) << " MiB";
  else
    s << b << " B";
  return s.str();
}
}  // namespace

const char* device_kind_name(DeviceKind kind) { return kind == DeviceKind::cpu ? "cpu" : "cuda"; }

ArenaMemory host_memory() {
  return {[](size_t bytes, size_t alignment) { return std::aligned_alloc(alignment, bytes); },
          [](void* p) { std::free(p); }, "host memory"};
}

Arena::Arena(std::string owner, size_t capacity, ArenaMemory memory)
    : owner_(std::move(owner)), capacity_(capacity), memory_(memory) {}

Arena::~Arena() {
  STRATA_CHECK_PRINT(sizes_.empty(), owner_ + " arena destroyed with live allocations");
  if (memory_.segments) {
    for (auto& [base, bytes] : segments_) memory_.free(reinterpret_cast<void*>(base));
    return;
  }
  for (auto& [ptr, bytes] : sizes_) memory_.free(ptr);
}

namespace {
constexpr size_t kSegmentGranule = size_t(2) << 20;  // the CUDA allocator's own granule
constexpr size_t kMinSegment = size_t(32) << 20;
uintptr_t round_up(uintptr_t x, size_t to) { return (x + to - 1) / to * to; }
}  // namespace

// Best fit among the free blocks whose aligned start leaves room for the request.
void* Arena::take_block(size_t bytes, size_t alignment) {
  auto best = free_blocks_.end();
  for (auto it = free_blocks_.begin(); it != free_blocks_.end(); ++it) {
    const uintptr_t start = round_up(it->first, alignment);
    if (start + bytes <= it->first + it->second && (best == free_blocks_.end() || it->second < best->second))
      best = it;
  }
  if (best == free_blocks_.end()) return nullptr;
  const uintptr_t begin = best->first, end = best->first + best->second;
  const uintptr_t start = round_up(begin, alignment);
  free_blocks_.erase(best);
  if (start > begin) free_blocks_[begin] = start - begin;
  if (start + bytes < end) free_blocks_[start + bytes] = end - (start + bytes);
  return reinterpret_cast<void*>(start);
}

void* Arena::sub_allocate(size_t bytes, size_t alignment) {
  if (void* p = take_block(bytes, alignment)) return p;
  // A new segment: at least kMinSegment (or the capacity, if smaller), so that small
  // buffers share one; on failure, hand back empty segments and retry at the size asked.
  size_t segment = round_up(std::max(bytes, std::min(kMinSegment, capacity_)), kSegmentGranule);
  void* base = memory_.allocate(segment, 4096);
  if (!base) {
    release_empty_segments();
    segment = round_up(bytes, 4096);
    base = memory_.allocate(segment, 4096);
  }
  if (!base) return nullptr;
  segments_[uintptr_t(base)] = segment;
  reserved_ += segment;
  free_blocks_[uintptr_t(base)] = segment;
  return take_block(bytes, alignment);
}

void Arena::return_block(uintptr_t start, size_t bytes) {
  auto seg = std::prev(segments_.upper_bound(start));
  const uintptr_t seg_begin = seg->first, seg_end = seg->first + seg->second;
  auto next = free_blocks_.lower_bound(start);
  if (next != free_blocks_.end() && next->first == start + bytes && next->first < seg_end) {
    bytes += next->second;
    next = free_blocks_.erase(next);
  }
  if (next != free_blocks_.begin()) {
    auto prev = std::prev(next);
    if (prev->first >= seg_begin && prev->first + prev->second == start) {
      prev->second += bytes;
      return;
    }
  }
  free_blocks_[start] = bytes;
}

void Arena::release_empty_segments() {
  for (auto it = segments_.begin(); it != segments_.end();) {
    auto block = free_blocks_.find(it->first);
    if (block != free_blocks_.end() && block->second == it->second) {
      free_blocks_.erase(block);
      memory_.free(reinterpret_cast<void*>(it->first));
      reserved_ -= it->second;
      it = segments_.erase(it);
    } else {
      ++it;
    }
  }
}

void* Arena::allocate(size_t bytes, const char* what) {
  size_t alignment = bytes >= 4096 ? 4096 : 64;
  size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  if (rounded == 0) rounded = alignment;
  {
    std::lock_guard lock(mutex_);
    if (live_ + rounded > capacity_)
      STRATA_FAIL(owner_ << ": cannot allocate " << format_bytes(rounded) << " for " << what
                         << ": " << format_bytes(live_) << " live of a " << format_bytes(capacity_)
                         << " capacity; lower the batch size or sequence length, enable "
                            "recompute or offload, or raise the device budget");
    live_ += rounded;
    if (live_ > high_water_) high_water_ = live_;
  }
  void* p = nullptr;
  if (memory_.segments) {
    std::lock_guard lock(mutex_);
    p = sub_allocate(rounded, alignment);
    if (p && memory_.on_block) memory_.on_block(p, rounded);
  } else {
    p = memory_.allocate(rounded, alignment);
  }
  std::lock_guard lock(mutex_);
  if (!p) {
    live_ -= rounded;
    STRATA_FAIL(owner_ << ": out of " << memory_.name << " allocating " << format_bytes(rounded)
                       << " for " << what);
  }
  sizes_[p] = rounded;
  return p;
}

void Arena::free(void* ptr) {
  if (!ptr) return;
  {
    std::lock_guard lock(mutex_);
    auto it = sizes_.find(ptr);
    if (it == sizes_.end()) {
      STRATA_CHECK_PRINT(false, owner_ + ": free of a pointer this arena did not allocate");
      return;
    }
    live_ -= it->second;
    if (memory_.segments) {
      if (memory_.on_block_free) memory_.on_block_free(ptr);
      return_block(uintptr_t(ptr), it->second);
      sizes_.erase(it);
      return;
    }
    sizes_.erase(it);
  }
  memory_.free(ptr);
}

size_t Arena::bytes_reserved() const {
  std::lock_guard lock(mutex_);
  return memory_.segments ? reserved_ : live_;
}

size_t Arena::bytes_live() const {
  std::lock_guard lock(mutex_);
  return live_;
}

size_t Arena::bytes_high_water() const {
  std::lock_guard lock(mutex_);
  return high_water_;
}

void Arena::reset_high_water() {
  std::lock_guard lock(mutex_);
  high_water_ = live_;
}

Device::Device(DeviceKind kind, int index, size_t capacity, ArenaMemory memory, void* backend)
    : kind_(kind),
      index_(index),
      backend_(backend),
      arena_(std::string(device_kind_name(kind)) + ":" + std::to_string(index), capacity, memory) {
  auto* state = static_cast<cuda_runtime::DeviceState*>(backend);
  for (int r = 0; r < kStreamRoles; ++r)
    streams_[r].reset(new Stream(*this, StreamRole(r), state ? cuda_runtime::stream(state, StreamRole(r)) : nullptr));
}

Device::~Device() {
  for (auto& s : streams_) s.reset();  // workers drain while the arena and backend live
  if (kind_ == DeviceKind::cuda) cuda_runtime::close(static_cast<cuda_runtime::DeviceState*>(backend_));
}

std::unique_ptr<Device> Device::cpu(int index, size_t capacity) {
  return std::unique_ptr<Device>(new Device(DeviceKind::cpu, index, capacity));
}

std::unique_ptr<Device> Device::cuda(int index, size_t budget) {
  cuda_runtime::DeviceState* state = cuda_runtime::open(index, budget);  // throws "no CUDA device"
  return std::unique_ptr<Device>(new Device(DeviceKind::cuda, index, budget, cuda_runtime::device_memory(index),
                                            state));
}

std::string Device::name() const {
  return std::string(device_kind_name(kind_)) + ":" + std::to_string(index_);
}

Buffer::Buffer(Device& device, size_t bytes, const char* what)
    : device_(&device), data_(device.arena().allocate(bytes, what)), bytes_(bytes) {}

Buffer::~Buffer() { release(); }

Buffer::Buffer(Buffer&& o) noexcept : device_(o.device_), data_(o.data_), bytes_(o.bytes_) {
  o.device_ = nullptr;
  o.data_ = nullptr;
  o.bytes_ = 0;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    device_ = o.device_;
    data_ = o.data_;
    bytes_ = o.bytes_;
    o.device_ = nullptr;
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void Buffer::release() {
  if (device_ && data_) device_->arena().free(data_);
  data_ = nullptr;
}

namespace {
std::unique_ptr<tbb::global_control> g_thread_limit;
int g_threads = 0;
}  // namespace

void set_num_threads(int threads) {
  STRATA_CHECK(threads >= 0, "set_num_threads: " << threads << " threads; give 0 (all cores) or more");
  g_thread_limit.reset();
  g_threads = threads;
  if (threads > 0)
    g_thread_limit = std::make_unique<tbb::global_control>(
        tbb::global_control::max_allowed_parallelism, size_t(threads));
}

int num_threads() {
  return g_threads > 0 ? g_threads : int(tbb::global_control::active_value(
                                         tbb::global_control::max_allowed_parallelism));
}

}  // namespace strata
