// Helpers for the data tests: a scratch directory under /tmp removed on scope exit,
// and a writer of raw shard bytes for building corrupt files on purpose.
// Invariant: every file a test creates lives inside a TempDir, so nothing outlives it.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

namespace strata::test {

class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/strata_data_test_XXXXXX";
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Writes bytes verbatim (no validation), for corrupt-shard cases.
inline void write_bytes(const std::string& path, const void* data, size_t bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(static_cast<const char*>(data), std::streamsize(bytes));
  if (!out) throw std::runtime_error("cannot write " + path);
}

// A shard image: 256 int32 header (magic, version, count as given) + tokens + extra bytes.
inline std::vector<char> shard_bytes(int32_t magic, int32_t version, int32_t count,
                                     const std::vector<uint16_t>& tokens, size_t extra = 0) {
  std::vector<int32_t> header(256, 0);
  header[0] = magic;
  header[1] = version;
  header[2] = count;
  std::vector<char> bytes(1024 + 2 * tokens.size() + extra, '\x5a');
  std::memcpy(bytes.data(), header.data(), 1024);
  if (!tokens.empty()) std::memcpy(bytes.data() + 1024, tokens.data(), 2 * tokens.size());
  return bytes;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace strata::test
