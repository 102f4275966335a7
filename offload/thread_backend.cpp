// The fallback NVMe backend: a pool of threads doing blocking pread/pwrite, for
// paths without O_DIRECT (tmpfs, some overlays) and kernels that refuse io_uring.
// Threading: submitters push transfers on one queue; each worker pops one, moves
// it to completion (resubmitting short or interrupted transfers itself) and runs
// the request's callback if it was the last transfer.
// Invariant: the destructor returns only after the queue is empty and every
// worker is idle, so no callback runs after the store is gone.
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <thread>

#include "offload/io_backend.h"

namespace strata::offload {

namespace {

class ThreadBackend final : public NvmeBackend {
 public:
  ThreadBackend(IoContext& context, int threads) : NvmeBackend(context) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }

  ~ThreadBackend() override {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    ready_.notify_all();
    for (auto& w : workers_) w.join();
  }

  void submit(std::vector<Transfer>& batch) override {
    {
      std::lock_guard lock(mutex_);
      for (auto& t : batch) queue_.push_back(t);
    }
    if (batch.size() == 1)
      ready_.notify_one();
    else
      ready_.notify_all();
  }

  const char* name() const override { return "pread/pwrite threads"; }
  bool fallback() const override { return true; }

 private:
  void work() {
    for (;;) {
      Transfer t;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and nothing left to do
        t = queue_.front();
        queue_.pop_front();
      }
      run(t);
      finish(t);
    }
  }

  void run(Transfer& t) {
    const int fd = (*ctx_.fds)[t.file];
    for (;;) {
      size_t len = t.bytes - t.done;
      int64_t result = consult_hook(ctx_, t, &len);
      if (result == 0) {
        char* buffer = t.buffer + t.done;
        off_t offset = off_t(t.file_offset + t.done);
        ssize_t n = t.write ? ::pwrite(fd, buffer, len, offset) : ::pread(fd, buffer, len, offset);
        result = n < 0 ? -errno : n;
      }
      if (!settle(ctx_, t, result)) return;
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Transfer> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace

std::unique_ptr<NvmeBackend> make_thread_backend(IoContext& context, int threads) {
  return std::make_unique<ThreadBackend>(context, threads);
}

}  // namespace strata::offload
