// Rendezvous through a shared filesystem: one process publishes a small blob (the NCCL
// unique id), the others wait for it. Invariant: a reader never sees a partial file:
// the writer writes a temp file in the same directory, fsyncs it, then rename(2)s it
// into place, which is atomic on POSIX filesystems (NFS and Lustre included).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace strata::dist::detail {

// Throws strata::Error naming the path and the failing call.
void write_file_atomically(const std::string& path, const void* data, size_t bytes);
// Polls until `path` exists and holds exactly `bytes` bytes, then returns them.
// Throws strata::Error after timeout_s, saying which file it waited for.
std::vector<unsigned char> wait_for_file(const std::string& path, size_t bytes, double timeout_s);

}  // namespace strata::dist::detail
