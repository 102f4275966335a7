// The io_uring NVMe backend.
// Threading: one I/O thread owns the ring — it creates it, registers the files and
// the pinned pool, and is the only thread that ever submits or reaps, so the ring
// needs no lock (and can be SINGLE_ISSUER | DEFER_TASKRUN). Other threads hand it
// transfers through a mutex-protected queue and an eventfd; the I/O thread keeps one
// read of that eventfd in the ring, so a single io_uring_submit_and_wait() sleeps
// until either an I/O completes or new work arrives. It keeps at most queue_depth
// transfers in flight, resubmits short/EINTR/EAGAIN ones first, and runs callbacks.
// Invariant: the destructor returns only when nothing is queued or in flight.
#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <deque>
#include <future>
#include <thread>

#include "offload/io_backend.h"
#include "offload/util.h"

namespace strata::offload {

namespace {

constexpr uint64_t kWakeTag = ~uint64_t(0);
constexpr size_t kRegisteredChunk = size_t(1) << 30;  // the kernel's largest registered buffer

class UringBackend final : public NvmeBackend {
 public:
  explicit UringBackend(IoContext& context) : NvmeBackend(context), depth_(context.queue_depth) {
    slots_.resize(size_t(depth_));
    for (int i = depth_ - 1; i >= 0; --i) free_slots_.push_back(i);
  }

  // Starts the I/O thread; returns 0 or the -errno with which the ring was refused.
  int start() {
    event_fd_ = eventfd(0, EFD_CLOEXEC);
    if (event_fd_ < 0) return -errno;
    std::promise<int> setup;
    auto result = setup.get_future();
    thread_ = std::thread([this, &setup] { run(setup); });
    int r = result.get();
    if (r < 0) thread_.join();
    return r;
  }

  ~UringBackend() override {
    if (thread_.joinable()) {
      {
        std::lock_guard lock(mutex_);
        stop_ = true;
      }
      wake();
      thread_.join();
    }
    if (event_fd_ >= 0) close(event_fd_);
  }

  void submit(std::vector<Transfer>& batch) override {
    {
      std::lock_guard lock(mutex_);
      for (auto& t : batch) incoming_.push_back(t);
    }
    wake();
  }

  const char* name() const override { return "io_uring"; }
  bool buffers_registered() const override { return registered_buffers_; }
  bool fallback() const override { return false; }

 private:
  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(event_fd_, &one, sizeof one);
  }

  int setup_ring() {
    io_uring_params params{};
    params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    const unsigned entries = unsigned(depth_) + 1;  // + the eventfd read
    int r = io_uring_queue_init_params(entries, &ring_, &params);
    if (r == -EINVAL) {  // a kernel older than 6.1: plain ring
      params = io_uring_params{};
      r = io_uring_queue_init_params(entries, &ring_, &params);
    }
    if (r < 0) return r;
    const auto& fds = *ctx_.fds;
    fixed_files_ = io_uring_register_files(&ring_, fds.data(), unsigned(fds.size())) == 0;
    if (PinnedPool* pool = ctx_.pinned) {
      std::vector<iovec> chunks;
      for (size_t off = 0; off < pool->bytes_reserved(); off += kRegisteredChunk)
        chunks.push_back({pool->base() + off, std::min(kRegisteredChunk, pool->bytes_reserved() - off)});
      int rb = io_uring_register_buffers(&ring_, chunks.data(), unsigned(chunks.size()));
      registered_buffers_ = rb == 0;
      if (rb < 0)
        std::fprintf(stderr,
                     "strata: warning: NVMe store: io_uring refused to register %s of pinned memory "
                     "(%s); transfers use unregistered buffers (raise `ulimit -l`)\n",
                     format_bytes(pool->bytes_reserved()).c_str(), errno_text(-rb).c_str());
    }
    return 0;
  }

  void run(std::promise<int>& setup) {
    int r = setup_ring();
    setup.set_value(r);  // `setup` dies with start() once this returns: not touched again
    if (r < 0) return;
    arm_wake();
    std::deque<Transfer> waiting;
    int in_flight = 0;
    for (;;) {
      bool stopping;
      {
        std::lock_guard lock(mutex_);
        for (auto& t : incoming_) waiting.push_back(t);
        incoming_.clear();
        stopping = stop_;
      }
      while (in_flight < depth_ && !waiting.empty()) {
        Transfer t = waiting.front();
        waiting.pop_front();
        if (start(t)) {
          ++in_flight;
        } else if (settle(ctx_, t, hook_result_)) {
          waiting.push_front(t);
        } else {
          finish(t);
        }
      }
      if (stopping && in_flight == 0 && waiting.empty()) break;
      int s = io_uring_submit_and_wait(&ring_, 1);
      if (s < 0 && s != -EINTR && s != -EAGAIN && s != -EBUSY)
        std::fprintf(stderr, "strata: NVMe io_uring_submit_and_wait: %s\n", errno_text(-s).c_str());
      io_uring_cqe* cqe;
      unsigned head, seen = 0;
      io_uring_for_each_cqe(&ring_, head, cqe) {
        ++seen;
        if (cqe->user_data == kWakeTag) {
          arm_wake();
          continue;
        }
        const int slot = int(cqe->user_data);
        Transfer t = slots_[size_t(slot)];
        free_slots_.push_back(slot);
        --in_flight;
        if (settle(ctx_, t, cqe->res))
          waiting.push_front(t);  // the remainder goes first: it is the oldest work
        else
          finish(t);
      }
      io_uring_cq_advance(&ring_, seen);
    }
    io_uring_queue_exit(&ring_);
  }

  void arm_wake() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    io_uring_prep_read(sqe, event_fd_, &wake_value_, sizeof wake_value_, 0);
    io_uring_sqe_set_data64(sqe, kWakeTag);
  }

  // Queues one transfer's remainder; false when the fault hook failed it instead
  // (its result is left in hook_result_).
  bool start(Transfer& t) {
    size_t len = t.bytes - t.done;
    hook_result_ = consult_hook(ctx_, t, &len);
    if (hook_result_ < 0) return false;
    const int slot = free_slots_.back();
    free_slots_.pop_back();
    slots_[size_t(slot)] = t;
    char* buffer = t.buffer + t.done;
    const uint64_t offset = t.file_offset + t.done;
    const int fd = fixed_files_ ? int(t.file) : (*ctx_.fds)[t.file];
    int buf_index = -1;
    if (registered_buffers_ && ctx_.pinned->contains(buffer, len)) {
      size_t at = size_t(buffer - ctx_.pinned->base());
      if (at / kRegisteredChunk == (at + len - 1) / kRegisteredChunk) buf_index = int(at / kRegisteredChunk);
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (t.write) {
      if (buf_index >= 0)
        io_uring_prep_write_fixed(sqe, fd, buffer, unsigned(len), offset, buf_index);
      else
        io_uring_prep_write(sqe, fd, buffer, unsigned(len), offset);
    } else {
      if (buf_index >= 0)
        io_uring_prep_read_fixed(sqe, fd, buffer, unsigned(len), offset, buf_index);
      else
        io_uring_prep_read(sqe, fd, buffer, unsigned(len), offset);
    }
    if (fixed_files_) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, uint64_t(slot));
    return true;
  }

  const int depth_;
  io_uring ring_{};
  int event_fd_ = -1;
  uint64_t wake_value_ = 0;
  bool fixed_files_ = false;
  bool registered_buffers_ = false;
  int64_t hook_result_ = 0;
  std::vector<Transfer> slots_;  // in flight, indexed by user_data
  std::vector<int> free_slots_;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<Transfer> incoming_;
  bool stop_ = false;
};

}  // namespace

std::unique_ptr<NvmeBackend> make_uring_backend(IoContext& context, std::string* why) {
  auto backend = std::make_unique<UringBackend>(context);
  int r = backend->start();
  if (r < 0) {
    *why = "io_uring refused: " + errno_text(-r);
    return nullptr;
  }
  return backend;
}

}  // namespace strata::offload
