// Rendezvous files for multi-process NCCL bootstrap (see bootstrap_file.h).
// Invariant: readers see the whole file or no file (temp file + fsync + rename).
#include "bootstrap_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

#include "strata/error.h"

namespace strata::dist::detail {

namespace {

[[noreturn]] void fail_errno(const char* call, const std::string& path) {
  STRATA_FAIL(call << "(" << path << ") failed: " << ::strata::detail::errno_string());
}

}  // namespace

void write_file_atomically(const std::string& path, const void* data, size_t bytes) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_errno("open", tmp);
  const auto* p = static_cast<const unsigned char*>(data);
  size_t done = 0;
  while (done < bytes) {
    ssize_t n = ::write(fd, p + done, bytes - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int saved = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      errno = saved;
      fail_errno("write", tmp);
    }
    done += size_t(n);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    ::unlink(tmp.c_str());
    fail_errno("fsync", tmp);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int saved = errno;
    ::unlink(tmp.c_str());
    errno = saved;
    fail_errno("rename", path);
  }
}

std::vector<unsigned char> wait_for_file(const std::string& path, size_t bytes, double timeout_s) {
  using Clock = std::chrono::steady_clock;
  auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  // Bootstrap happens once per job; a short poll keeps start-up latency low without
  // needing inotify (which does not see writes from other NFS clients).
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      if (size_t(st.st_size) != bytes)
        STRATA_FAIL("rendezvous file " << path << " holds " << st.st_size << " bytes, expected "
                                       << bytes << "; is it left over from another job or "
                                          "another NCCL version? remove it and restart");
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) fail_errno("open", path);
      std::vector<unsigned char> out(bytes);
      size_t done = 0;
      while (done < bytes) {
        ssize_t n = ::read(fd, out.data() + done, bytes - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          ::close(fd);
          STRATA_FAIL("read(" << path << ") got " << done << " of " << bytes << " bytes");
        }
        done += size_t(n);
      }
      ::close(fd);
      return out;
    }
    if (errno != ENOENT) fail_errno("stat", path);
    if (Clock::now() >= deadline)
      STRATA_FAIL("timed out after " << timeout_s << " s waiting for the rendezvous file " << path
                                     << ": did the process that writes it "
                                        "(nccl_unique_id_to_file) start, and is the path on a "
                                        "filesystem every node shares?");
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(100));
  }
}

}  // namespace strata::dist::detail
