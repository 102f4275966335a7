// The rules every NVMe backend shares (see io_backend.h): fault hook, retries,
// short-transfer resubmission, the -errno -> strata::Error boundary, completion.
// Invariant: settle() is the only place an I/O result becomes a strata::Error.
#include "offload/io_backend.h"

#include <cerrno>
#include <cstdio>
#include <sstream>

#include "offload/util.h"
#include "strata/error.h"

namespace strata::offload {

namespace {

void record(IoContext& ctx, Transfer& t, const std::string& what) {
  ctx.errors.fetch_add(1, std::memory_order_relaxed);
  const uint64_t offset = t.file_offset + t.done;
  std::ostringstream s;
  s << "strata: NVMe " << (t.write ? "write" : "read") << " failed: " << what << " at "
    << (*ctx.files)[t.file] << " offset " << offset << " size " << (t.bytes - t.done)
    << " (object '" << t.object->name << "' offset " << t.object_offset + t.done << ")";
  std::lock_guard lock(t.request->mutex);
  if (!t.request->error) t.request->error = std::make_exception_ptr(Error(s.str()));
}

}  // namespace

int64_t consult_hook(const IoContext& ctx, const Transfer& t, size_t* len) {
  if (!ctx.hook) return 0;
  NvmeFaultSite site{t.object_id, &(*ctx.files)[t.file], t.file_offset + t.done, *len, t.write};
  int64_t verdict = ctx.hook(site);
  if (verdict > 0 && size_t(verdict) < *len) *len = size_t(verdict);
  return verdict < 0 ? verdict : 0;
}

bool settle(IoContext& ctx, Transfer& t, int64_t result) {
  ctx.transfers.fetch_add(1, std::memory_order_relaxed);
  if (result == -EINTR || result == -EAGAIN) {
    ctx.retries.fetch_add(1, std::memory_order_relaxed);
    if (++t.retries <= kMaxRetries) return true;
    record(ctx, t, errno_text(int(-result)) + ", still after " + std::to_string(kMaxRetries) + " retries");
    return false;
  }
  if (result < 0) {
    std::string what = errno_text(int(-result));
    if (result == -ENOSPC) what += "; free space on that drive or reserve less";
    if (result == -EINVAL) what += "; O_DIRECT needs 4 KiB-aligned offsets, sizes and buffers";
    record(ctx, t, what);
    return false;
  }
  t.retries = 0;
  if (result == 0) {
    // No progress: past the end of the file, which reserve() makes impossible
    // unless something truncated it behind our back.
    record(ctx, t, "no bytes moved (was the swap file truncated?)");
    return false;
  }
  (t.write ? ctx.bytes_written : ctx.bytes_read).fetch_add(uint64_t(result), std::memory_order_relaxed);
  t.done += size_t(result);
  if (t.done < t.bytes) {
    ctx.short_transfers.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  return false;
}

void finish(Transfer& t) noexcept {
  IoRequest* r = t.request;
  if (r->pending.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  try {
    r->done(r->error);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "strata: NVMe completion callback threw (ignored): %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "strata: NVMe completion callback threw (ignored)\n");
  }
  delete r;
}

}  // namespace strata::offload
