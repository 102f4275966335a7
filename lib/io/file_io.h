// POSIX file helpers for checkpoints: whole writes and reads at offsets, fsync of
// files and directories, and atomic publication of a directory by rename.
// Invariant (liburing habit): the low-level calls return -errno; they become a
// strata::Error only here, at the boundary, with the path and offset in the message.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace strata::io {

class File {
 public:
  enum class Mode { read, create };  // create: O_CREAT | O_EXCL | O_WRONLY (fails if present)
  File(const std::string& path, Mode mode);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const;
  // All bytes, or an error naming the path and offset (a short read is "truncated").
  void pread_all(void* dst, size_t bytes, uint64_t offset) const;
  void pwrite_all(const void* src, size_t bytes, uint64_t offset);
  void fsync();
  void close();  // reports the error close(2) gives; the destructor only logs

 private:
  std::string path_;
  int fd_ = -1;
};

// fsync of a directory, so the names created or renamed in it are durable.
void fsync_dir(const std::string& dir);

// Writes bytes to path through a file created exclusively, then fsyncs it.
void write_file_synced(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

// Parent directory of a path ("." when it has none).
std::string parent_dir(const std::string& path);

}  // namespace strata::io
