// TokenDataset: globbing shards in sorted order, global positions, and windows that
// must stay inside one shard.
#include <catch2/catch.hpp>

#include "strata/data.h"
#include "strata/error.h"
#include "temp_dir.h"

using namespace strata;
using strata::test::TempDir;
using Catch::Contains;

namespace {

// Shard `tag` holds tokens tag*1000 + i, so any token says where it came from.
std::vector<uint16_t> tagged(int tag, int n) {
  std::vector<uint16_t> t(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) t[size_t(i)] = uint16_t(tag * 1000 + i);
  return t;
}

}  // namespace

TEST_CASE("token dataset: a glob opens every shard in sorted order", "[data]") {
  TempDir dir;
  // Written out of order, with a non-matching file beside them.
  write_token_shard(dir.file("d_train_002.bin"), tagged(3, 40));
  write_token_shard(dir.file("d_train_000.bin"), tagged(1, 100));
  write_token_shard(dir.file("d_train_001.bin"), tagged(2, 17));
  write_token_shard(dir.file("d_val_000.bin"), tagged(9, 5));

  const TokenDataset ds(dir.file("d_train_*.bin"));
  REQUIRE(ds.num_shards() == 3);
  CHECK(ds.shard(0).path() == dir.file("d_train_000.bin"));
  CHECK(ds.shard(1).path() == dir.file("d_train_001.bin"));
  CHECK(ds.shard(2).path() == dir.file("d_train_002.bin"));
  CHECK(ds.num_tokens() == 157);
  CHECK(ds.shard_begin(0) == 0);
  CHECK(ds.shard_begin(1) == 100);
  CHECK(ds.shard_begin(2) == 117);

  // Windows address the concatenation.
  auto w = ds.window(98, 2);
  CHECK(w[0] == 1098);
  CHECK(w[1] == 1099);
  w = ds.window(100, 17);
  CHECK(w[0] == 2000);
  CHECK(w[16] == 2016);
  w = ds.window(117 + 39, 1);
  CHECK(w[0] == 3039);

  // The same files listed explicitly, in any order, give the same dataset.
  const TokenDataset listed({dir.file("d_train_001.bin"), dir.file("d_train_002.bin"),
                             dir.file("d_train_000.bin")});
  CHECK(listed.shard(0).path() == ds.shard(0).path());
  CHECK(listed.num_tokens() == 157);
  // One plain path is a one-shard dataset.
  CHECK(TokenDataset(dir.file("d_val_000.bin")).num_tokens() == 5);
}

TEST_CASE("token dataset: windows may not cross shards or run past the end", "[data]") {
  TempDir dir;
  write_token_shard(dir.file("a.bin"), tagged(1, 10));
  write_token_shard(dir.file("b.bin"), tagged(2, 0));  // empty shards are skipped over
  write_token_shard(dir.file("c.bin"), tagged(3, 10));
  const TokenDataset ds(dir.file("*.bin"));
  CHECK(ds.num_tokens() == 20);
  CHECK(ds.window(10, 10)[0] == 3000);
  REQUIRE_THROWS_WITH(ds.window(5, 6), Contains("[5, 11)") && Contains(dir.file("a.bin")) &&
                                           Contains("inside one shard"));
  REQUIRE_THROWS_WITH(ds.window(15, 6), Contains("[15, 21)") && Contains("20 tokens"));
  REQUIRE_THROWS_WITH(ds.window(-1, 2), Contains("outside"));
  REQUIRE_THROWS_WITH(ds.window(0, 0), Contains("outside"));
}

TEST_CASE("token dataset: bad patterns and bad shards are reported", "[data]") {
  TempDir dir;
  const std::string pattern = dir.file("nothing_*.bin");
  REQUIRE_THROWS_WITH(TokenDataset(pattern), Contains(pattern) && Contains("matches no file"));
  REQUIRE_THROWS_WITH(TokenDataset(std::string()), Contains("empty path"));

  write_token_shard(dir.file("a.bin"), tagged(1, 10));
  const char junk[] = "not a shard";
  strata::test::write_bytes(dir.file("b.bin"), junk, sizeof(junk));
  REQUIRE_THROWS_WITH(TokenDataset(dir.file("*.bin")), Contains(dir.file("b.bin")));
  REQUIRE_THROWS_WITH(TokenDataset(std::vector<std::string>{dir.file("a.bin"), dir.file("a.bin")}),
                      Contains("listed twice"));
}

TEST_CASE("token dataset: validate_tokens checks every shard", "[data]") {
  TempDir dir;
  write_token_shard(dir.file("a.bin"), std::vector<uint16_t>(10, 1));
  std::vector<uint16_t> bad(10, 2);
  bad[4] = 256;
  write_token_shard(dir.file("b.bin"), bad);
  const TokenDataset ds(dir.file("*.bin"));
  REQUIRE_THROWS_WITH(ds.validate_tokens(256), Contains(dir.file("b.bin")) &&
                                                   Contains("token 256") && Contains("index 4"));
  CHECK_NOTHROW(ds.validate_tokens(257));
}
