// Token shards: the llm.c byte layout, round trips, atomic writes, and one test per
// way a shard can be broken, each asserting what its error message tells the user.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <random>

#include "strata/data.h"
#include "strata/error.h"
#include "temp_dir.h"

using namespace strata;
using strata::test::TempDir;
using Catch::Contains;

namespace {

std::vector<uint16_t> random_tokens(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(0, 65535);
  std::vector<uint16_t> t(n);
  for (auto& x : t) x = uint16_t(dist(gen));
  return t;
}

void write_raw(const std::string& path, const std::vector<char>& bytes) {
  strata::test::write_bytes(path, bytes.data(), bytes.size());
}

}  // namespace

TEST_CASE("token shard: write then read round-trips, in llm.c's layout", "[data]") {
  TempDir dir;
  for (size_t n : {size_t(0), size_t(1), size_t(17), size_t(100000)}) {
    const std::vector<uint16_t> tokens = random_tokens(n, uint32_t(n));
    const std::string path = dir.file("shard_" + std::to_string(n) + ".bin");
    write_token_shard(path, tokens);

    // The bytes are exactly header (magic, version, count, zeros) + little-endian tokens.
    const std::string raw = strata::test::read_file(path);
    REQUIRE(raw.size() == 1024 + 2 * n);
    int32_t header[256];
    std::memcpy(header, raw.data(), 1024);
    CHECK(header[0] == 20240520);
    CHECK(header[1] == 1);
    CHECK(header[2] == int32_t(n));
    for (int i = 3; i < 256; ++i) CHECK(header[i] == 0);

    const TokenShard shard(path);
    CHECK(shard.path() == path);
    REQUIRE(shard.size() == int64_t(n));
    CHECK(std::equal(tokens.begin(), tokens.end(), shard.tokens().begin()));
  }
  // Only the final files remain: no temporary is left beside them.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    CHECK(e.path().string().find(".tmp") == std::string::npos);
    ++files;
  }
  CHECK(files == 4);
}

TEST_CASE("token shard: uint32 tokens round-trip in llm.c's Llama-3 layout", "[data]") {
  TempDir dir;
  std::mt19937 gen(7);
  std::vector<uint32_t> tokens(1000);
  for (auto& t : tokens) t = gen() % 200000;
  const std::string path = dir.file("wide.bin");
  write_token_shard(path, std::span<const uint32_t>(tokens));
  const std::string raw = strata::test::read_file(path);
  REQUIRE(raw.size() == 1024 + 4 * tokens.size());
  int32_t header[3];
  std::memcpy(header, raw.data(), sizeof header);
  CHECK(header[0] == 20240801);
  CHECK(header[1] == 7);
  CHECK(header[2] == 1000);
  const TokenShard shard(path);
  CHECK(shard.tokens().width() == 4);
  CHECK(std::equal(tokens.begin(), tokens.end(), shard.tokens().begin()));
  const uint32_t top = *std::max_element(tokens.begin(), tokens.end());
  CHECK_NOTHROW(shard.validate_tokens(int64_t(top) + 1));
  CHECK_THROWS_WITH(shard.validate_tokens(top), Contains("holds token " + std::to_string(top)));
  // A dataset over it yields the same tokens through window().
  const TokenDataset data(path);
  const TokenView w = data.window(10, 5);
  CHECK(std::equal(w.begin(), w.end(), tokens.begin() + 10));
  // The wide magic with the narrow version is refused by name.
  std::string bad = raw;
  const int32_t one = 1;
  std::memcpy(bad.data() + 4, &one, 4);
  strata::test::write_bytes(path, bad.data(), bad.size());
  CHECK_THROWS_WITH(TokenShard(path), Contains("version 1, expected 7 for magic 20240801"));
}

TEST_CASE("token shard: rewriting replaces the file and a moved shard stays valid", "[data]") {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_token_shard(path, random_tokens(50, 1));
  const std::vector<uint16_t> second = random_tokens(30, 2);
  write_token_shard(path, second);
  TokenShard a(path);
  TokenShard b(std::move(a));
  REQUIRE(b.size() == 30);
  CHECK(std::equal(second.begin(), second.end(), b.tokens().begin()));
  TokenShard c(path);
  c = std::move(b);
  CHECK(c.size() == 30);
}

TEST_CASE("token shard: write to a missing directory names the path", "[data]") {
  TempDir dir;
  const std::string path = dir.file("no/such/dir/s.bin");
  const std::vector<uint16_t> t = {1, 2, 3};
  REQUIRE_THROWS_WITH(write_token_shard(path, t),
                      Contains(path) && Contains("No such file or directory"));
}

TEST_CASE("token shard: every corruption gets its own error", "[data]") {
  TempDir dir;
  const std::string path = dir.file("bad.bin");
  const std::vector<uint16_t> hundred = random_tokens(100, 3);

  SECTION("missing file") {
    REQUIRE_THROWS_WITH(TokenShard(dir.file("absent.bin")),
                        Contains(dir.file("absent.bin")) && Contains("cannot open"));
  }
  SECTION("empty file") {
    write_raw(path, {});
    REQUIRE_THROWS_WITH(TokenShard(path), Contains(path) && Contains("is empty (0 bytes)") &&
                                              Contains("1024-byte header"));
  }
  SECTION("truncated header") {
    std::vector<char> bytes = strata::test::shard_bytes(20240520, 1, 0, {});
    bytes.resize(500);
    write_raw(path, bytes);
    REQUIRE_THROWS_WITH(TokenShard(path), Contains(path) && Contains("too small") &&
                                              Contains("500 bytes") && Contains("1024"));
  }
  SECTION("wrong magic") {
    write_raw(path, strata::test::shard_bytes(12345, 1, 100, hundred));
    REQUIRE_THROWS_WITH(TokenShard(path), Contains(path) && Contains("magic number 12345") &&
                                              Contains("expected 20240520"));
  }
  SECTION("wrong version") {
    write_raw(path, strata::test::shard_bytes(20240520, 2, 100, hundred));
    REQUIRE_THROWS_WITH(TokenShard(path),
                        Contains(path) && Contains("version 2") && Contains("expected 1"));
  }
  SECTION("negative count") {
    write_raw(path, strata::test::shard_bytes(20240520, 1, -5, hundred));
    REQUIRE_THROWS_WITH(TokenShard(path), Contains(path) && Contains("negative token count -5"));
  }
  SECTION("truncated tokens") {
    // The header promises 100 tokens; only 60 are there.
    std::vector<char> bytes = strata::test::shard_bytes(20240520, 1, 100, hundred);
    bytes.resize(1024 + 120);
    write_raw(path, bytes);
    REQUIRE_THROWS_WITH(TokenShard(path),
                        Contains(path) && Contains("truncated") && Contains("100 tokens") &&
                            Contains("expected 1224 bytes") && Contains("has 1144") &&
                            Contains("80 bytes missing"));
  }
  SECTION("trailing bytes") {
    write_raw(path, strata::test::shard_bytes(20240520, 1, 100, hundred, 3));
    REQUIRE_THROWS_WITH(TokenShard(path),
                        Contains(path) && Contains("3 trailing bytes") &&
                            Contains("expected 1224 bytes") && Contains("has 1227"));
  }
  SECTION("a header-only file with count 0 is a valid empty shard") {
    write_raw(path, strata::test::shard_bytes(20240520, 1, 0, {}));
    CHECK(TokenShard(path).size() == 0);
  }
}

TEST_CASE("token shard: validate_tokens reports the first token outside the vocabulary",
          "[data]") {
  TempDir dir;
  const std::string path = dir.file("v.bin");
  std::vector<uint16_t> tokens(10000, 7);
  tokens[5000] = 300;  // second scan chunk
  tokens[9000] = 400;
  write_token_shard(path, tokens);
  const TokenShard shard(path);
  REQUIRE_THROWS_WITH(shard.validate_tokens(256),
                      Contains(path) && Contains("token 300") && Contains("index 5000") &&
                          Contains("file offset 11024") && Contains("vocabulary of 256"));
  REQUIRE_THROWS_WITH(shard.validate_tokens(301), Contains("token 400") && Contains("index 9000"));
  CHECK_NOTHROW(shard.validate_tokens(401));
  REQUIRE_THROWS_WITH(shard.validate_tokens(0), Contains("vocab_size 0"));
}
