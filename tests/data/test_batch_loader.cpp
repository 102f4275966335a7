// BatchLoader: determinism, resume, disjoint ranks, epochs without repeats, the
// input/target shift, the validation order, and errors crossing the worker thread.
#include <catch2/catch.hpp>

#include <set>

#include "lib/data/permutation.h"
#include "strata/data.h"
#include "strata/error.h"
#include "temp_dir.h"

using namespace strata;
using strata::test::TempDir;
using Catch::Contains;

namespace {

// Three shards of uneven sizes whose tokens are unique (token = global position).
std::shared_ptr<const TokenDataset> make_dataset(const TempDir& dir) {
  const int sizes[] = {1000, 333, 2001};
  int next = 0;
  for (int s = 0; s < 3; ++s) {
    std::vector<uint16_t> t(size_t(sizes[s]));
    for (auto& x : t) x = uint16_t(next++);
    write_token_shard(dir.file("shard_" + std::to_string(s) + ".bin"), t);
  }
  return std::make_shared<const TokenDataset>(dir.file("shard_*.bin"));
}

LoaderOptions options(int64_t B, int64_t T, uint64_t seed, int rank = 0, int world = 1) {
  LoaderOptions o;
  o.batch_size = B;
  o.seq_len = T;
  o.seed = seed;
  o.rank = rank;
  o.world_size = world;
  return o;
}

std::vector<TokenBatch> take(BatchLoader& loader, int n) {
  std::vector<TokenBatch> out;
  for (int i = 0; i < n; ++i) out.push_back(loader.next());
  return out;
}

bool same(const TokenBatch& a, const TokenBatch& b) {
  return a.number == b.number && a.tokens == b.tokens && a.positions == b.positions;
}

}  // namespace

TEST_CASE("feistel permutation: a bijection of 0..n-1 that depends on its key", "[data]") {
  for (uint64_t n : {1u, 2u, 3u, 17u, 1000u, 4097u}) {
    const detail::FeistelPermutation p(n, num::RandomKey{42, 7, 0});
    std::vector<int> hit(n, 0);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t j = p(i);
      REQUIRE(j < n);
      ++hit[j];
    }
    for (int h : hit) REQUIRE(h == 1);
    if (n >= 17) {
      const detail::FeistelPermutation q(n, num::RandomKey{42, 8, 0});
      int moved = 0, differ = 0;
      for (uint64_t i = 0; i < n; ++i) {
        moved += p(i) != i;
        differ += p(i) != q(i);
      }
      CHECK(moved > int(n) / 2);
      CHECK(differ > int(n) / 2);
    }
  }
}

TEST_CASE("batch loader: windows hold the data, targets are inputs shifted by one", "[data]") {
  TempDir dir;
  auto ds = make_dataset(dir);
  const int64_t B = 3, T = 16;
  BatchLoader loader(ds, options(B, T, 5));
  CHECK(loader.num_slots() == 999 / T + 332 / T + 2000 / T);
  for (int k = 0; k < 5; ++k) {
    TokenBatch b = loader.next();
    CHECK(b.number == k);
    REQUIRE(b.tokens.size() == size_t(B * (T + 1)));
    REQUIRE(b.inputs_view().numel() == B * T);
    for (int64_t i = 0; i < B; ++i) {
      const auto w = ds->window(b.positions[size_t(i)], T + 1);
      for (int64_t t = 0; t <= T; ++t) REQUIRE(b.tokens[size_t(i * (T + 1) + t)] == w[size_t(t)]);
      for (int64_t t = 0; t < T; ++t) {
        REQUIRE(b.inputs[size_t(i * T + t)] == b.tokens[size_t(i * (T + 1) + t)]);
        REQUIRE(b.targets[size_t(i * T + t)] == b.tokens[size_t(i * (T + 1) + t + 1)]);
      }
    }
  }
}

TEST_CASE("batch loader: the same seed gives the same batches, another seed others", "[data]") {
  TempDir dir;
  auto ds = make_dataset(dir);
  BatchLoader a(ds, options(4, 8, 123)), b(ds, options(4, 8, 123)), c(ds, options(4, 8, 124));
  // 3 epochs and a bit: the order must also be reproducible across epochs.
  const int n = int(3 * a.num_batches() + 2);
  const auto xa = take(a, n), xb = take(b, n), xc = take(c, n);
  int differ = 0;
  for (int i = 0; i < n; ++i) {
    REQUIRE(same(xa[size_t(i)], xb[size_t(i)]));
    differ += !same(xa[size_t(i)], xc[size_t(i)]);
  }
  CHECK(differ > n / 2);
  // Consecutive epochs are shuffled differently.
  const int64_t e = a.num_batches();
  CHECK(xa[0].positions != xa[size_t(e)].positions);
}

TEST_CASE("batch loader: seek resumes exactly where an uninterrupted run would be", "[data]") {
  TempDir dir;
  auto ds = make_dataset(dir);
  BatchLoader straight(ds, options(2, 32, 9));
  const int n = int(straight.num_batches() + 10);  // across an epoch boundary
  const auto all = take(straight, n);
  CHECK(straight.position() == n);

  BatchLoader resumed(ds, options(2, 32, 9));
  CHECK(resumed.position() == 0);
  const int saved = n - 15;
  resumed.seek(saved);
  CHECK(resumed.position() == saved);
  for (int k = saved; k < n; ++k) REQUIRE(same(resumed.next(), all[size_t(k)]));
  // And backwards, on a loader that has already run ahead.
  resumed.seek(3);
  for (int k = 3; k < 8; ++k) REQUIRE(same(resumed.next(), all[size_t(k)]));
  CHECK(resumed.position() == 8);
  for (int k = 0; k < n; ++k) REQUIRE(straight.window_positions(k) == all[size_t(k)].positions);
}

TEST_CASE("batch loader: ranks draw disjoint windows and an epoch repeats no slot", "[data]") {
  TempDir dir;
  auto ds = make_dataset(dir);
  const int W = 4;
  const int64_t B = 3, T = 10;
  std::vector<std::unique_ptr<BatchLoader>> ranks;
  for (int r = 0; r < W; ++r)
    ranks.push_back(std::make_unique<BatchLoader>(ds, options(B, T, 77, r, W)));
  const int64_t per_epoch = ranks[0]->num_batches();
  REQUIRE(per_epoch == ranks[0]->num_slots() / (W * B));

  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<int64_t> seen;
    for (int64_t k = 0; k < per_epoch; ++k) {
      std::set<int64_t> in_batch;
      for (int r = 0; r < W; ++r) {
        const TokenBatch b = ranks[size_t(r)]->next();
        REQUIRE(b.number == epoch * per_epoch + k);
        for (int64_t p : b.positions) {
          // Every window starts on a slot: a multiple of T into its shard.
          const int64_t begin = p >= 1333 ? 1333 : p >= 1000 ? 1000 : 0;
          REQUIRE((p - begin) % T == 0);
          REQUIRE(in_batch.insert(p).second);
          REQUIRE(seen.insert(p).second);
        }
      }
    }
    // The epoch used all but fewer than one batch's worth of slots.
    CHECK(int64_t(seen.size()) == per_epoch * W * B);
    CHECK(ranks[0]->num_slots() - int64_t(seen.size()) < W * B);
  }
}

TEST_CASE("batch loader: sequential mode covers the set in order, then needs reset()",
          "[data]") {
  TempDir dir;
  auto ds = make_dataset(dir);
  const int64_t B = 4, T = 50;
  LoaderOptions o = options(B, T, 0);
  o.shuffle = false;
  BatchLoader loader(ds, o);
  const int64_t slots = 999 / T + 332 / T + 2000 / T;
  REQUIRE(loader.num_slots() == slots);
  REQUIRE(loader.num_batches() == slots / B);

  std::vector<int64_t> order;
  for (int64_t k = 0; k < loader.num_batches(); ++k) {
    const TokenBatch b = loader.next();
    order.insert(order.end(), b.positions.begin(), b.positions.end());
  }
  // Slot j of a shard starts at shard_begin + j*T; the slots come shard after shard.
  std::vector<int64_t> expected;
  for (size_t s = 0; s < ds->num_shards(); ++s)
    for (int64_t p = 0; p + T + 1 <= ds->shard(s).size(); p += T)
      expected.push_back(ds->shard_begin(s) + p);
  expected.resize(size_t(loader.num_batches() * B));
  CHECK(order == expected);

  REQUIRE_THROWS_WITH(loader.next(), Contains("pass is over") && Contains("reset()"));
  loader.reset();
  CHECK(loader.position() == 0);
  CHECK(loader.next().positions == std::vector<int64_t>(expected.begin(), expected.begin() + B));

  // Two ranks split each step's consecutive windows between them.
  o.world_size = 2;
  o.rank = 1;
  BatchLoader second(ds, o);
  CHECK(second.next().positions ==
        std::vector<int64_t>(expected.begin() + B, expected.begin() + 2 * B));
}

TEST_CASE("batch loader: an error in the worker reaches next() at its batch", "[data]") {
  TempDir dir;
  // 40 windows of T+1 = 11 tokens; a bad token sits inside window 25 (batch 12 at B=2).
  std::vector<uint16_t> t(401, 1);
  t[25 * 10 + 4] = 999;
  write_token_shard(dir.file("v.bin"), t);
  LoaderOptions o = options(2, 10, 0);
  o.shuffle = false;
  o.vocab_size = 256;
  BatchLoader loader(TokenDataset(dir.file("v.bin")), o);
  for (int k = 0; k < 12; ++k) REQUIRE(loader.next().number == k);
  REQUIRE_THROWS_WITH(loader.next(), Contains("batch 12") && Contains("token 999") &&
                                         Contains("global position 254") &&
                                         Contains("vocabulary of 256"));
  // The failure stays put until the caller moves on.
  REQUIRE_THROWS_WITH(loader.next(), Contains("token 999"));
  CHECK(loader.position() == 12);
  loader.seek(13);
  CHECK(loader.next().number == 13);
}

TEST_CASE("batch loader: bad options and too little data are refused clearly", "[data]") {
  TempDir dir;
  write_token_shard(dir.file("small.bin"), std::vector<uint16_t>(100, 1));
  auto ds = std::make_shared<const TokenDataset>(dir.file("small.bin"));
  REQUIRE_THROWS_WITH(BatchLoader(ds, options(0, 8, 0)), Contains("batch_size 0"));
  REQUIRE_THROWS_WITH(BatchLoader(ds, options(1, 0, 0)), Contains("seq_len 0"));
  REQUIRE_THROWS_WITH(BatchLoader(ds, options(1, 8, 0, 2, 2)), Contains("rank 2"));
  REQUIRE_THROWS_WITH(BatchLoader(ds, options(1, 8, 0, 0, 0)), Contains("world_size 0"));
  REQUIRE_THROWS_WITH(BatchLoader(nullptr, options(1, 8, 0)), Contains("null"));
  // 100 tokens hold 3 windows of 33 (one every 32); 4 are needed.
  REQUIRE_THROWS_WITH(BatchLoader(ds, options(4, 32, 0)),
                      Contains("has 100 tokens") && Contains("3 windows") &&
                          Contains("needs 4 windows") && Contains("at least 129 tokens"));
  REQUIRE_THROWS_WITH(BatchLoader(ds, options(2, 32, 0, 0, 2)), Contains("needs 4 windows"));
  CHECK_NOTHROW(BatchLoader(ds, options(3, 32, 0)));

  BatchLoader loader(ds, options(1, 8, 0));
  REQUIRE_THROWS_WITH(loader.seek(-1), Contains("-1"));
}

TEST_CASE("batch loader: destroying a loader with a full queue joins its thread", "[data]") {
  TempDir dir;
  auto ds = make_dataset(dir);
  for (int i = 0; i < 50; ++i) {
    LoaderOptions o = options(2, 8, uint64_t(i));
    o.prefetch = 1 + i % 3;
    BatchLoader loader(ds, o);
    if (i % 2) loader.next();
  }
  SUCCEED();
}
