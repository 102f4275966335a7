// PinnedPool: alignment, the budget error, stats (reserved, in use, high-water),
// first-fit reuse after coalescing, and buffers moving between owners.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>

#include "strata/error.h"
#include "strata/offload.h"

using namespace strata::offload;
using Catch::Contains;

TEST_CASE("pinned pool: buffers are 4 KiB aligned, disjoint and counted", "[cpu]") {
  PinnedPool pool(1 << 20, "test pool");
  auto a = pool.allocate(1);
  auto b = pool.allocate(5000);
  REQUIRE(uintptr_t(a.data()) % 4096 == 0);
  REQUIRE(uintptr_t(b.data()) % 4096 == 0);
  REQUIRE(a.capacity() == 4096);
  REQUIRE(b.size() == 5000);
  REQUIRE(b.capacity() == 8192);
  REQUIRE(pool.contains(a.data(), a.capacity()));
  // Writing a whole capacity must not touch the other buffer.
  std::memset(b.data(), 0x22, b.capacity());
  std::memset(a.data(), 0x11, a.capacity());
  REQUIRE(static_cast<unsigned char*>(b.data())[0] == 0x22);

  auto s = pool.stats();
  REQUIRE(s.bytes_reserved == (1 << 20));
  REQUIRE(s.bytes_in_use == 4096 + 8192);
  REQUIRE(s.bytes_high_water == 4096 + 8192);
  a.reset();
  s = pool.stats();
  REQUIRE(s.bytes_in_use == 8192);
  REQUIRE(s.bytes_high_water == 4096 + 8192);
}

TEST_CASE("pinned pool: asking past the budget names the request and the budget", "[cpu]") {
  PinnedPool pool(64 << 10, "budget pool");
  auto a = pool.allocate(40 << 10);
  REQUIRE_THROWS_WITH(pool.allocate(32 << 10), Contains("budget pool") && Contains("32.0 KiB") &&
                                                   Contains("budget of 64.0 KiB") && Contains("40.0 KiB in use"));
  REQUIRE_THROWS_AS(pool.allocate(0), strata::Error);
  // The failed request changed nothing.
  REQUIRE(pool.stats().bytes_in_use == (40 << 10));
  auto b = pool.allocate(24 << 10);  // exactly the rest
  REQUIRE(pool.stats().bytes_in_use == (64 << 10));
}

TEST_CASE("pinned pool: freed ranges coalesce so the whole budget is reusable", "[cpu]") {
  PinnedPool pool(16 * 4096);
  std::vector<PinnedBuffer> buffers;
  for (int i = 0; i < 16; ++i) buffers.push_back(pool.allocate(4096));
  // Free in an interleaved order: odd ones, then even ones.
  for (int i = 1; i < 16; i += 2) buffers[size_t(i)].reset();
  REQUIRE_THROWS_WITH(pool.allocate(2 * 4096), Contains("fragmented"));
  for (int i = 0; i < 16; i += 2) buffers[size_t(i)].reset();
  REQUIRE(pool.stats().bytes_in_use == 0);
  auto all = pool.allocate(16 * 4096);
  REQUIRE(all.data() == pool.base());
  REQUIRE(pool.stats().bytes_high_water == 16 * 4096);
}

TEST_CASE("pinned pool: a moved buffer is released once, by its last owner", "[cpu]") {
  PinnedPool pool(8 * 4096);
  PinnedBuffer outer;
  {
    auto inner = pool.allocate(3 * 4096);
    outer = std::move(inner);
    REQUIRE(!inner);
  }
  REQUIRE(pool.stats().bytes_in_use == 3 * 4096);
  PinnedBuffer other(std::move(outer));
  other = pool.allocate(4096);  // releases the old 3 pages
  REQUIRE(pool.stats().bytes_in_use == 4096);
}
