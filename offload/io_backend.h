// The engine under NvmeStore: a request is split into transfers (one contiguous
// range of one swap file), and a backend — io_uring or a pread/pwrite thread pool —
// carries them out. The rules every backend shares live here: the fault hook,
// retrying EINTR/EAGAIN, resubmitting short transfers, turning -errno into a
// strata::Error with path, offset and size, and completing the request.
// Invariant: inside, results are bytes or -errno; a strata::Error is made only in
// settle(), the boundary; a request's callback runs exactly once, after its last
// transfer has settled (never while another of its transfers is in flight).
#pragma once
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "strata/offload.h"

namespace strata::offload {

struct NvmeObject {
  std::string name;
  uint64_t bytes = 0;
  uint32_t first_path = 0;       // extent k lives on path (first_path + k) % paths
  std::vector<uint64_t> base;    // per path: file offset of this object's first extent there
};

struct IoRequest {
  IoCallback done;
  std::atomic<int> pending{0};   // transfers not yet settled
  std::mutex mutex;
  std::exception_ptr error;      // the first failure
};

struct Transfer {
  IoRequest* request = nullptr;
  const NvmeObject* object = nullptr;
  uint32_t object_id = 0;
  uint64_t object_offset = 0;
  uint32_t file = 0;             // index into the swap files
  uint64_t file_offset = 0;
  char* buffer = nullptr;
  size_t bytes = 0;
  size_t done = 0;               // moved so far (short transfers resume here)
  int retries = 0;
  bool write = false;
};

// What the store shares with its backend.
struct IoContext {
  const std::vector<std::string>* files = nullptr;
  const std::vector<int>* fds = nullptr;
  NvmeFaultHook hook;
  int queue_depth = 32;
  PinnedPool* pinned = nullptr;
  std::atomic<uint64_t> bytes_read{0}, bytes_written{0}, transfers{0}, short_transfers{0},
      retries{0}, errors{0};
};

class NvmeBackend {
 public:
  explicit NvmeBackend(IoContext& context) : ctx_(context) {}
  virtual ~NvmeBackend() = default;  // derived destructors drain all transfers first
  virtual void submit(std::vector<Transfer>& batch) = 0;
  virtual const char* name() const = 0;
  virtual bool buffers_registered() const { return false; }
  virtual bool fallback() const = 0;

 protected:
  IoContext& ctx_;
};

// io_uring, or nullptr with *why set when the kernel refuses it (old kernel,
// seccomp, io_uring_disabled).
std::unique_ptr<NvmeBackend> make_uring_backend(IoContext& context, std::string* why);
std::unique_ptr<NvmeBackend> make_thread_backend(IoContext& context, int threads);

inline constexpr int kMaxRetries = 64;  // EINTR/EAGAIN in a row before giving up

// Before a transfer: the fault hook's verdict. Returns 0 to go ahead (with *len
// possibly shortened) or -errno to fail it without doing it.
int64_t consult_hook(const IoContext& ctx, const Transfer& t, size_t* len);

// After a transfer returned `result` (bytes moved or -errno): true when it must be
// submitted again (short, EINTR, EAGAIN); false when it has settled, successfully
// or with its error recorded on the request.
bool settle(IoContext& ctx, Transfer& t, int64_t result);

// Marks a settled transfer done; the last one of a request runs its callback.
void finish(Transfer& t) noexcept;

}  // namespace strata::offload
