// POSIX file helpers (see file_io.h). EINTR is retried; partial transfers continue.
#include "file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "strata/error.h"

namespace strata::io {

namespace {
std::string errno_text(int err) { return std::strerror(err); }
}  // namespace

File::File(const std::string& path, Mode mode) : path_(path) {
  const int flags = mode == Mode::read ? O_RDONLY | O_CLOEXEC : O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
  do fd_ = ::open(path.c_str(), flags, 0644);
  while (fd_ < 0 && errno == EINTR);
  STRATA_CHECK(fd_ >= 0, "cannot " << (mode == Mode::read ? "open" : "create") << " " << path << ": "
                                   << errno_text(errno));
}

File::~File() {
  if (fd_ >= 0) STRATA_CHECK_PRINT(::close(fd_) == 0, path_);
}

uint64_t File::size() const {
  struct stat st;
  STRATA_CHECK(::fstat(fd_, &st) == 0, "cannot stat " << path_ << ": " << errno_text(errno));
  return uint64_t(st.st_size);
}

void File::pread_all(void* dst, size_t bytes, uint64_t offset) const {
  char* p = static_cast<char*>(dst);
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pread(fd_, p + done, bytes - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    STRATA_CHECK(n >= 0, "cannot read " << path_ << " at offset " << offset + done << ": " << errno_text(errno));
    STRATA_CHECK(n > 0, path_ << " is truncated: wanted " << bytes << " bytes at offset " << offset << ", the file ends at "
                              << offset + done);
    done += size_t(n);
  }
}

void File::pwrite_all(const void* src, size_t bytes, uint64_t offset) {
  const char* p = static_cast<const char*>(src);
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::pwrite(fd_, p + done, bytes - done, off_t(offset + done));
    if (n < 0 && errno == EINTR) continue;
    STRATA_CHECK(n > 0, "cannot write " << path_ << " at offset " << offset + done << ": "
                                        << errno_text(n < 0 ? errno : ENOSPC));
    done += size_t(n);
  }
}

void File::fsync() {
  STRATA_CHECK(::fsync(fd_) == 0, "cannot fsync " << path_ << ": " << errno_text(errno));
}

void File::close() {
  const int fd = fd_;
  fd_ = -1;
  STRATA_CHECK(fd < 0 || ::close(fd) == 0, "cannot close " << path_ << ": " << errno_text(errno));
}

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  STRATA_CHECK(fd >= 0, "cannot open the directory " << dir << " to fsync it: " << errno_text(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  STRATA_CHECK(rc == 0, "cannot fsync the directory " << dir << ": " << errno_text(err));
}

void write_file_synced(const std::string& path, const std::string& bytes) {
  File f(path, File::Mode::create);
  f.pwrite_all(bytes.data(), bytes.size(), 0);
  f.fsync();
  f.close();
}

std::string read_file(const std::string& path) {
  File f(path, File::Mode::read);
  std::string out(size_t(f.size()), '\0');
  f.pread_all(out.data(), out.size(), 0);
  return out;
}

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace strata::io
