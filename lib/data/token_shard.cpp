// llm.c token shards: atomic writes, and memory-mapped reads validated on open.
// Invariant: a TokenShard that constructed is a well-formed shard — header size,
// magic, version and token count all agree with the file — so readers never re-check.
// POSIX calls return -errno inside this file; strata::Error (with the path) at its edge.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "strata/data.h"
#include "strata/error.h"

namespace strata {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian and read in place");

namespace {

const char* kRegenerate = "regenerate it (strata prepare) or restore it from its source";

std::string parent_dir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

// Writes all of [data, data + bytes), retrying short writes and EINTR; -errno on failure.
int write_all(int fd, const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += n;
    bytes -= size_t(n);
  }
  return 0;
}

// Creates tmp, writes header + tokens and fsyncs; -errno on failure (tmp may remain).
int write_file(const std::string& tmp, const int32_t* header, std::span<const std::byte> tokens) {
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -errno;
  int rc = write_all(fd, header, size_t(kShardHeaderBytes));
  if (rc == 0) rc = write_all(fd, tokens.data(), tokens.size_bytes());
  if (rc == 0 && ::fsync(fd) != 0) rc = -errno;
  if (::close(fd) != 0 && rc == 0) rc = -errno;
  return rc;
}

void write_shard(const std::string& path, std::span<const std::byte> tokens, size_t count,
                 bool wide) {
  STRATA_CHECK(count <= size_t(INT32_MAX),
               "write_token_shard: " << count << " tokens for '" << path
                                     << "', but a shard's header holds an int32 count (at most "
                                     << INT32_MAX << "); split the tokens over several shards");
  int32_t header[kShardHeaderBytes / 4] = {};
  header[0] = wide ? kShardMagic32 : kShardMagic;
  header[1] = wide ? kShardVersion32 : kShardVersion;
  header[2] = int32_t(count);

  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int rc = write_file(tmp, header, tokens);
  if (rc == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) rc = -errno;
  if (rc != 0) {
    ::unlink(tmp.c_str());
    STRATA_FAIL("write_token_shard: cannot write '" << path << "': " << std::strerror(-rc)
                                                    << "; check that the directory exists, is "
                                                       "writable and has space");
  }
  // The rename is durable only once the directory entry is on disk.
  int dir = ::open(parent_dir(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

}  // namespace

void write_token_shard(const std::string& path, std::span<const uint16_t> tokens) {
  write_shard(path, std::as_bytes(tokens), tokens.size(), false);
}

void write_token_shard(const std::string& path, std::span<const uint32_t> tokens) {
  write_shard(path, std::as_bytes(tokens), tokens.size(), true);
}

TokenShard::TokenShard(std::string path) : path_(std::move(path)) {
  int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  STRATA_CHECK(fd >= 0, "token shard '" << path_ << "': cannot open: " << detail::errno_string()
                                        << "; check the path");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    std::string why = detail::errno_string();
    ::close(fd);
    STRATA_FAIL("token shard '" << path_ << "': cannot stat: " << why);
  }
  const int64_t file_bytes = st.st_size;
  if (file_bytes < kShardHeaderBytes) {
    ::close(fd);
    if (file_bytes == 0)
      STRATA_FAIL("token shard '" << path_ << "' is empty (0 bytes); expected a "
                                  << kShardHeaderBytes << "-byte header followed by "
                                  << "tokens; " << kRegenerate);
    STRATA_FAIL("token shard '" << path_ << "' is too small for its header: " << file_bytes
                                << " bytes, expected at least " << kShardHeaderBytes
                                << "; the file is truncated, " << kRegenerate);
  }
  void* map = ::mmap(nullptr, size_t(file_bytes), PROT_READ, MAP_SHARED, fd, 0);
  std::string map_error = map == MAP_FAILED ? detail::errno_string() : "";
  ::close(fd);  // the mapping keeps the file open
  STRATA_CHECK(map != MAP_FAILED, "token shard '" << path_ << "': mmap of " << file_bytes
                                                  << " bytes failed: " << map_error);
  map_ = map;
  map_bytes_ = size_t(file_bytes);
  // Advice only: failure changes nothing but read-ahead.
  ::madvise(map_, map_bytes_, MADV_SEQUENTIAL);
  ::madvise(map_, map_bytes_, MADV_WILLNEED);

  // On a validation error the destructor does not run: unmap here before throwing.
  const int32_t* header = static_cast<const int32_t*>(map_);
  const int32_t magic = header[0], version = header[1], count = header[2];
  const bool wide = magic == kShardMagic32;
  const int width = wide ? 4 : 2;
  std::ostringstream s;
  if (magic != kShardMagic && magic != kShardMagic32) {
    s << "token shard '" << path_ << "' has magic number " << magic << ", expected "
      << kShardMagic << " or " << kShardMagic32
      << " (an llm.c token shard); this is not a token file, or it is corrupt";
  } else if (version != (wide ? kShardVersion32 : kShardVersion)) {
    s << "token shard '" << path_ << "' has version " << version << ", expected "
      << (wide ? kShardVersion32 : kShardVersion)
      << (wide ? " for magic 20240801 (uint32 tokens)" : " (uint16 tokens)")
      << "; write it with strata or llm.c (version 1: uint16, version 7: uint32 tokens)";
  } else if (count < 0) {
    s << "token shard '" << path_ << "' header gives a negative token count " << count
      << ", expected >= 0; the header is corrupt, " << kRegenerate;
  } else {
    const int64_t expected = kShardHeaderBytes + width * int64_t(count);
    if (file_bytes < expected)
      s << "token shard '" << path_ << "' is truncated: its header says " << count
        << " tokens, expected " << expected << " bytes but the file has " << file_bytes
        << " (" << (expected - file_bytes) << " bytes missing); " << kRegenerate;
    else if (file_bytes > expected)
      s << "token shard '" << path_ << "' has " << (file_bytes - expected)
        << " trailing bytes: its header says " << count << " tokens, expected " << expected
        << " bytes but the file has " << file_bytes
        << "; the file was appended to or its header is wrong, " << kRegenerate;
  }
  const std::string error = s.str();
  if (!error.empty()) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    detail::throw_error(error);
  }
  tokens_ = static_cast<const char*>(map_) + kShardHeaderBytes;
  token_bytes_ = width;
  num_tokens_ = count;
}

TokenShard::~TokenShard() {
  if (map_) STRATA_CHECK_PRINT(::munmap(map_, map_bytes_) == 0, path_);
}

TokenShard::TokenShard(TokenShard&& other) noexcept
    : path_(std::move(other.path_)),
      map_(std::exchange(other.map_, nullptr)),
      map_bytes_(std::exchange(other.map_bytes_, 0)),
      tokens_(std::exchange(other.tokens_, nullptr)),
      token_bytes_(other.token_bytes_),
      num_tokens_(std::exchange(other.num_tokens_, 0)) {}

TokenShard& TokenShard::operator=(TokenShard&& other) noexcept {
  if (this != &other) {
    if (map_) ::munmap(map_, map_bytes_);
    path_ = std::move(other.path_);
    map_ = std::exchange(other.map_, nullptr);
    map_bytes_ = std::exchange(other.map_bytes_, 0);
    tokens_ = std::exchange(other.tokens_, nullptr);
    token_bytes_ = other.token_bytes_;
    num_tokens_ = std::exchange(other.num_tokens_, 0);
  }
  return *this;
}

namespace {

// The largest token in [begin, end): branch-free, so the loop vectorises.
template <class T>
uint32_t chunk_max(const T* p, int64_t begin, int64_t end) {
  T hi = 0;
  for (int64_t i = begin; i < end; ++i) hi = std::max(hi, p[i]);
  return hi;
}

}  // namespace

void TokenShard::validate_tokens(int64_t vocab_size) const {
  STRATA_CHECK(vocab_size >= 1, "TokenShard::validate_tokens: vocab_size " << vocab_size
                                                                            << " must be >= 1");
  // Scan in chunks with a branch-free max (vectorises); locate only in a bad chunk.
  constexpr int64_t kChunk = 4096;
  const TokenView view = tokens();
  for (int64_t begin = 0; begin < num_tokens_; begin += kChunk) {
    const int64_t end = std::min(num_tokens_, begin + kChunk);
    const uint32_t hi = token_bytes_ == 2
                            ? chunk_max(static_cast<const uint16_t*>(tokens_), begin, end)
                            : chunk_max(static_cast<const uint32_t*>(tokens_), begin, end);
    if (hi < vocab_size) continue;
    for (int64_t i = begin; i < end; ++i)
      STRATA_CHECK(view[size_t(i)] < vocab_size,
                   "token shard '" << path_ << "' holds token " << view[size_t(i)] << " at index " << i
                                   << " (file offset " << kShardHeaderBytes + token_bytes_ * i
                                   << "), outside the vocabulary of " << vocab_size
                                   << " (expected ids 0.." << vocab_size - 1
                                   << "); it was made with another tokenizer, or is corrupt");
  }
}

}  // namespace strata
