// Scratch directories for the NVMe store tests, and random test data.
// Where: $STRATA_TEST_NVME_DIR if set, else the working directory (the build tree,
// which CI keeps on a real disk). O_DIRECT tests need a directory that accepts
// O_DIRECT; when there is none they WARN and return (Catch2 v2 has no SKIP), while
// the fallback tests run anywhere.
// Invariant: every file a test creates lives in a ScratchDir, removed at scope exit.
#pragma once
#include <fcntl.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "strata/offload.h"

namespace strata::test {

inline std::string nvme_test_root() {
  const char* env = std::getenv("STRATA_TEST_NVME_DIR");
  return env && *env ? env : std::filesystem::current_path().string();
}

// True when a 4 KiB O_DIRECT write into dir succeeds.
inline bool accepts_direct_io(const std::string& dir) {
  std::string file = dir + "/.strata_direct_probe_" + std::to_string(getpid());
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_DIRECT, 0600);
  if (fd < 0) return false;
  void* block = std::aligned_alloc(4096, 4096);
  std::memset(block, 0, 4096);
  bool ok = ::pwrite(fd, block, 4096, 0) == 4096;
  std::free(block);
  ::close(fd);
  ::unlink(file.c_str());
  return ok;
}

class ScratchDir {
 public:
  // `drives` subdirectories a, b, c... stand in for one directory per drive.
  explicit ScratchDir(int drives, const std::string& root = nvme_test_root()) {
    std::string pattern = root + "/strata_nvme_test_XXXXXX";
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed under " + root);
    path_ = pattern;
    for (int i = 0; i < drives; ++i) {
      paths_.push_back(path_ + "/" + char('a' + i));
      std::filesystem::create_directory(paths_.back());
    }
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<std::string>& paths() const { return paths_; }
  size_t file_count() const {
    size_t n = 0;
    for (const auto& p : paths_)
      for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(p)) ++n;
    return n;
  }

 private:
  std::string path_;
  std::vector<std::string> paths_;
};

inline void fill_random(void* dst, size_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto* p = static_cast<unsigned char*>(dst);
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t v = rng();
    std::memcpy(p + i, &v, 8);
  }
  for (uint64_t v = rng(); i < bytes; ++i, v >>= 8) p[i] = static_cast<unsigned char>(v);
}

// Offload options for the placement tests: the three tiers, NVMe in `dir`'s paths,
// a small pinned pool and several AdamW tiles per unit (the streamed pipeline runs).
inline offload::OffloadOptions placement(offload::Tier params, offload::Tier grads, offload::Tier opt,
                                         const ScratchDir& dir) {
  offload::OffloadOptions o;
  o.params = params;
  o.grads = grads;
  o.optimizer = opt;
  o.nvme_paths = dir.paths();
  o.pinned_bytes = size_t(1) << 20;
  o.tile_elements = 2048;
  o.require_direct = accepts_direct_io(dir.paths()[0]);
  return o;
}

}  // namespace strata::test
