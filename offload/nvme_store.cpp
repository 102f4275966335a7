// NvmeStore: swap files (one per path, i.e. per drive), objects striped over them in
// fixed-size extents, and the split of each read/write into transfers for a backend.
//
// Threading design. Who submits: any thread calls read()/write(); the call checks
// its arguments, maps (object, offset, bytes) to transfers under a short lock and
// hands them to the backend's queue, then returns. Who reaps: with io_uring, one I/O
// thread per store owns the ring, submits from that queue (at most queue_depth in
// flight) and reaps completions (offload/uring_backend.cpp); in the fallback, a pool
// of worker threads each runs one blocking pread/pwrite transfer at a time
// (offload/thread_backend.cpp). Either way the request's callback (or future) is
// completed on that I/O thread once its last transfer settles.
//
// Layout. Extent k of an object lives on path (first_path + k) % P at file offset
// base[path] + (k / P) * extent; only an object's last extent may be short (rounded
// to 4 KiB), and it is the last of that object's extents on its path, so the
// formula holds for every extent. Objects are laid end to end in each file.
// Invariant: a transfer never crosses an extent, and every offset, length and
// buffer handed to a backend is 4 KiB aligned.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>

#include "lib/core/clock.h"
#include "offload/io_backend.h"
#include "offload/util.h"
#include "strata/error.h"

namespace strata::offload {

namespace {

std::atomic<int> g_store_counter{0};

// Opens a new swap file in dir with O_DIRECT when the filesystem takes it (checked
// with one aligned write, since some filesystems accept the flag and then refuse
// the I/O). Returns the fd; *direct says whether O_DIRECT stuck.
int open_swap_file(const std::string& file, bool* direct) {
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_DIRECT, 0600);
  *direct = fd >= 0;
  if (fd < 0 && errno == EINVAL) {
    // Filesystems without direct I/O (ramfs) create the file before refusing the
    // flag; O_EXCL proved it was not there before, so it is ours to remove.
    ::unlink(file.c_str());
    fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  }
  if (fd < 0)
    STRATA_FAIL("NVMe store: cannot create the swap file " << file << ": " << errno_text(errno));
  if (*direct) {
    void* block = std::aligned_alloc(kBlockBytes, kBlockBytes);
    std::memset(block, 0, kBlockBytes);
    ssize_t n = ::pwrite(fd, block, kBlockBytes, 0);
    std::free(block);
    if (n != ssize_t(kBlockBytes)) {
      *direct = false;
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_DIRECT);
    }
    if (ftruncate(fd, 0) != 0) {
      int err = errno;
      ::close(fd);
      ::unlink(file.c_str());
      STRATA_FAIL("NVMe store: cannot truncate the swap file " << file << ": " << errno_text(err));
    }
  }
  return fd;
}

}  // namespace

NvmeStore::NvmeStore(NvmeOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  STRATA_CHECK(!o.paths.empty(), "NVMe store: no paths given; pass one directory per drive");
  STRATA_CHECK(o.extent_bytes > 0 && o.extent_bytes % kBlockBytes == 0,
               "NVMe store: extent_bytes " << o.extent_bytes << " must be a positive multiple of 4096");
  STRATA_CHECK(o.block_bytes > 0 && o.block_bytes % kBlockBytes == 0 && o.block_bytes <= (size_t(1) << 30),
               "NVMe store: block_bytes " << o.block_bytes << " must be a multiple of 4096 in [4 KiB, 1 GiB]");
  STRATA_CHECK(o.queue_depth >= 1 && o.queue_depth <= 4096,
               "NVMe store: queue_depth " << o.queue_depth << " must be in [1, 4096]");
  for (const auto& path : o.paths) {
    struct stat st {};
    STRATA_CHECK(::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode),
                 "NVMe store: path '" << path << "' is not a directory; create it or pass another");
  }
  const int id = g_store_counter.fetch_add(1);
  try {
    for (size_t i = 0; i < o.paths.size(); ++i) {
      files_.push_back(o.paths[i] + "/strata-swap-" + std::to_string(getpid()) + "-" + std::to_string(id) +
                       "-" + std::to_string(i) + ".bin");
      bool direct = false;
      fds_.push_back(open_swap_file(files_.back(), &direct));
      // Unlinked now, the file vanishes when the fd closes, even if the process dies.
      if (!o.keep_files) ::unlink(files_.back().c_str());
      if (!direct && direct_) {
        direct_ = false;
        std::fprintf(stderr,
                     "strata: warning: NVMe store: %s does not accept O_DIRECT (tmpfs or an overlay?); "
                     "using a pread/pwrite thread pool through the page cache instead\n",
                     o.paths[i].c_str());
      }
    }
    file_bytes_.assign(files_.size(), 0);
    context_ = std::make_unique<IoContext>();
    context_->files = &files_;
    context_->fds = &fds_;
    context_->hook = o.fault_hook;
    context_->queue_depth = o.queue_depth;
    context_->pinned = o.pinned;
    if (direct_ && !o.force_fallback) {
      std::string why;
      backend_ = make_uring_backend(*context_, &why);
      if (!backend_)
        std::fprintf(stderr, "strata: warning: NVMe store: %s; using a pread/pwrite thread pool instead\n",
                     why.c_str());
    }
    if (!backend_)
      backend_ = make_thread_backend(*context_, o.fallback_threads > 0 ? o.fallback_threads
                                                                       : std::min(o.queue_depth, 32));
  } catch (...) {
    for (size_t i = 0; i < fds_.size(); ++i) {
      ::close(fds_[i]);
      if (o.keep_files) ::unlink(files_[i].c_str());
    }
    throw;
  }
}

NvmeStore::~NvmeStore() {
  backend_.reset();  // drains
  for (size_t i = 0; i < fds_.size(); ++i) {
    STRATA_CHECK_PRINT(::close(fds_[i]) == 0, "closing NVMe swap file " + files_[i]);
  }
}

std::vector<uint32_t> NvmeStore::reserve(const std::vector<NvmeObjectSpec>& plan) {
  std::lock_guard lock(mutex_);
  const uint32_t paths = uint32_t(files_.size());
  const uint64_t extent = options_.extent_bytes;
  std::vector<uint64_t> need(paths, 0);
  std::vector<std::unique_ptr<NvmeObject>> planned;
  for (const auto& spec : plan) {
    STRATA_CHECK(spec.bytes > 0, "NVMe store: object '" << spec.name << "' has 0 bytes; reserve at least 1");
    auto obj = std::make_unique<NvmeObject>();
    obj->name = spec.name;
    obj->bytes = spec.bytes;
    obj->first_path = uint32_t((objects_.size() + planned.size()) % paths);
    obj->base.resize(paths);
    for (uint32_t p = 0; p < paths; ++p) obj->base[p] = file_bytes_[p] + need[p];
    for (uint64_t k = 0; k * extent < spec.bytes; ++k)
      need[(obj->first_path + k) % paths] += std::min(extent, round_up(spec.bytes - k * extent, kBlockBytes));
    planned.push_back(std::move(obj));
  }
  // Paths on one filesystem share its free space: check the sum, per device.
  struct Device {
    uint64_t need = 0;
    uint32_t path = 0;
    std::string names;  // the paths on it, for the message
  };
  std::map<dev_t, Device> devices;
  for (uint32_t p = 0; p < paths; ++p) {
    struct stat st {};
    STRATA_CHECK(::fstat(fds_[p], &st) == 0, "NVMe store: cannot stat " << files_[p] << ": " << errno_text(errno));
    Device& d = devices[st.st_dev];
    d.need += need[p];
    d.path = p;
    d.names += (d.names.empty() ? "" : ", ") + options_.paths[p];
  }
  for (const auto& [id, d] : devices) {
    struct statvfs fs {};
    STRATA_CHECK(::fstatvfs(fds_[d.path], &fs) == 0,
                 "NVMe store: cannot read free space of " << options_.paths[d.path] << ": " << errno_text(errno));
    const uint64_t free_bytes = uint64_t(fs.f_bavail) * fs.f_frsize;
    // A filesystem of no stated size (ramfs: 0 blocks, 0 free) limits nothing here;
    // the writes themselves report when memory runs out.
    STRATA_CHECK(d.need <= free_bytes || fs.f_blocks == 0,
                 "NVMe store: the plan needs " << format_bytes(d.need) << " (" << d.need
                     << " bytes) on the filesystem of " << d.names << " but only " << format_bytes(free_bytes)
                     << " is free; free space, add a path or keep less on NVMe");
  }
  for (uint32_t p = 0; p < paths; ++p) {
    if (!need[p]) continue;
    int r = ::fallocate(fds_[p], 0, off_t(file_bytes_[p]), off_t(need[p]));
    if (r != 0 && errno == EOPNOTSUPP) r = ::ftruncate(fds_[p], off_t(file_bytes_[p] + need[p]));
    if (r != 0) {
      int err = errno;
      for (uint32_t q = 0; q <= p; ++q) [[maybe_unused]] int t = ::ftruncate(fds_[q], off_t(file_bytes_[q]));
      STRATA_FAIL("NVMe store: cannot reserve " << format_bytes(need[p]) << " at " << files_[p] << " offset "
                                                << file_bytes_[p] << ": " << errno_text(err)
                                                << "; nothing of this plan was reserved");
    }
  }
  std::vector<uint32_t> ids;
  for (uint32_t p = 0; p < paths; ++p) file_bytes_[p] += need[p];
  for (auto& obj : planned) {
    ids.push_back(uint32_t(objects_.size()));
    objects_.push_back(std::move(obj));
  }
  return ids;
}

uint32_t NvmeStore::reserve(const std::string& name, uint64_t bytes) { return reserve({{name, bytes}})[0]; }

uint64_t NvmeStore::object_bytes(uint32_t object) const {
  std::lock_guard lock(mutex_);
  STRATA_CHECK(object < objects_.size(), "NVMe store: no object " << object << " (" << objects_.size() << " reserved)");
  return objects_[object]->bytes;
}

void NvmeStore::submit(uint32_t object, uint64_t offset, char* buffer, size_t bytes, bool write,
                       IoCallback done) {
  const char* op = write ? "write" : "read";
  const NvmeObject* obj;
  {
    std::lock_guard lock(mutex_);
    STRATA_CHECK(object < objects_.size(),
                 "NVMe " << op << ": no object " << object << " (" << objects_.size() << " reserved)");
    obj = objects_[object].get();
  }
  STRATA_CHECK(buffer != nullptr, "NVMe " << op << " of object '" << obj->name << "': the buffer is null");
  STRATA_CHECK(offset % kBlockBytes == 0 && uintptr_t(buffer) % kBlockBytes == 0,
               "NVMe " << op << " of object '" << obj->name << "': offset " << offset << " and buffer "
                       << static_cast<void*>(buffer) << " must be 4096-byte aligned (O_DIRECT)");
  STRATA_CHECK(offset <= obj->bytes && bytes <= obj->bytes - offset,
               "NVMe " << op << " of object '" << obj->name << "': offset " << offset << " + size " << bytes
                       << " runs past its " << obj->bytes << " bytes");
  if (bytes == 0) {
    done(nullptr);
    return;
  }
  const uint64_t paths = files_.size(), extent = options_.extent_bytes;
  const uint64_t end = offset + round_up(bytes, kBlockBytes);
  auto* request = new IoRequest;
  busy_begin();
  request->done = [this, done = std::move(done)](std::exception_ptr error) {
    busy_end();
    done(error);
  };
  std::vector<Transfer> batch;
  for (uint64_t pos = offset; pos < end;) {
    const uint64_t k = pos / extent, within = pos % extent;
    const uint64_t len = std::min({extent - within, end - pos, uint64_t(options_.block_bytes)});
    Transfer t;
    t.request = request;
    t.object = obj;
    t.object_id = object;
    t.object_offset = pos;
    t.file = uint32_t((obj->first_path + k) % paths);
    t.file_offset = obj->base[t.file] + (k / paths) * extent + within;
    t.buffer = buffer + (pos - offset);
    t.bytes = size_t(len);
    t.write = write;
    batch.push_back(t);
    pos += len;
  }
  request->pending.store(int(batch.size()), std::memory_order_relaxed);
  backend_->submit(batch);
}

void NvmeStore::read(uint32_t object, uint64_t offset, void* dst, size_t bytes, IoCallback done) {
  submit(object, offset, static_cast<char*>(dst), bytes, false, std::move(done));
}

void NvmeStore::write(uint32_t object, uint64_t offset, const void* src, size_t bytes, IoCallback done) {
  // The backend only reads from the buffer of a write.
  submit(object, offset, const_cast<char*>(static_cast<const char*>(src)), bytes, true, std::move(done));
}

namespace {
std::pair<IoCallback, std::future<void>> promise_callback() {
  auto promise = std::make_shared<std::promise<void>>();
  auto future = promise->get_future();
  return {[promise](std::exception_ptr error) {
            if (error)
              promise->set_exception(error);
            else
              promise->set_value();
          },
          std::move(future)};
}
}  // namespace

std::future<void> NvmeStore::read(uint32_t object, uint64_t offset, void* dst, size_t bytes) {
  auto [callback, future] = promise_callback();
  read(object, offset, dst, bytes, std::move(callback));
  return std::move(future);
}

std::future<void> NvmeStore::write(uint32_t object, uint64_t offset, const void* src, size_t bytes) {
  auto [callback, future] = promise_callback();
  write(object, offset, src, bytes, std::move(callback));
  return std::move(future);
}

bool NvmeStore::fallback() const { return backend_->fallback(); }
bool NvmeStore::buffers_registered() const { return backend_->buffers_registered(); }
const char* NvmeStore::backend_name() const { return backend_->name(); }

void NvmeStore::busy_begin() {
  std::lock_guard lock(busy_mutex_);
  if (in_flight_++ == 0) busy_since_ = now_seconds();
}

void NvmeStore::busy_end() {
  std::lock_guard lock(busy_mutex_);
  if (--in_flight_ == 0) busy_seconds_ += now_seconds() - busy_since_;
}

NvmeStats NvmeStore::stats() const {
  NvmeStats s;
  {
    std::lock_guard lock(busy_mutex_);
    s.busy_seconds = busy_seconds_ + (in_flight_ > 0 ? now_seconds() - busy_since_ : 0.0);
  }
  const IoContext& c = *context_;
  s.bytes_read = c.bytes_read.load();
  s.bytes_written = c.bytes_written.load();
  s.transfers = c.transfers.load();
  s.short_transfers = c.short_transfers.load();
  s.retries = c.retries.load();
  s.errors = c.errors.load();
  std::lock_guard lock(mutex_);
  for (uint64_t b : file_bytes_) s.bytes_reserved += b;
  return s;
}

}  // namespace strata::offload
