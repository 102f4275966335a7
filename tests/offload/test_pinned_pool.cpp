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

namespace {
// A stand-in device runtime: records what the pool registers, and may refuse.
struct FakeRuntime {
  static inline void* registered = nullptr;
  static inline size_t registered_bytes = 0;
  static inline int unregistered = 0;
  static inline bool refuse = false;
  static bool register_memory(void* base, size_t bytes) {
    if (refuse) return false;
    registered = base;
    registered_bytes = bytes;
    return true;
  }
  static void unregister_memory(void* base) {
    if (base == registered) ++unregistered;
  }
};
}  // namespace

TEST_CASE("pinned pool: a device registration covers the whole reservation, once, until the pool goes", "[cpu]") {
  const PinnedRegistration fake{FakeRuntime::register_memory, FakeRuntime::unregister_memory, "fake runtime"};
  FakeRuntime::unregistered = 0;
  FakeRuntime::refuse = false;
  {
    PinnedPool pool(10000, "registered pool", true, fake);
    REQUIRE(FakeRuntime::registered == pool.base());
    REQUIRE(FakeRuntime::registered_bytes == 3 * 4096);  // the budget, rounded to 4 KiB
    REQUIRE(pool.stats().registered);
    auto b = pool.allocate(4096);  // buffers come from the registered range
    REQUIRE(pool.contains(b.data(), b.capacity()));
    REQUIRE(FakeRuntime::unregistered == 0);
  }
  REQUIRE(FakeRuntime::unregistered == 1);
  FakeRuntime::refuse = true;  // refused: the pool works on, unregistered, and is not unregistered later
  {
    PinnedPool pool(4096, "refused pool", true, fake);
    REQUIRE(!pool.stats().registered);
    REQUIRE(pool.allocate(4096));
  }
  REQUIRE(FakeRuntime::unregistered == 1);
  PinnedPool plain(4096);  // no registration asked
  REQUIRE(!plain.stats().registered);
}

TEST_CASE("pinned pool: resetting the high-water starts it again from what is in use", "[cpu]") {
  PinnedPool pool(8 * 4096);
  auto a = pool.allocate(4096);
  { auto b = pool.allocate(3 * 4096); }
  REQUIRE(pool.stats().bytes_high_water == 4 * 4096);
  pool.reset_high_water();
  REQUIRE(pool.stats().bytes_high_water == 4096);
  auto c = pool.allocate(2 * 4096);
  REQUIRE(pool.stats().bytes_high_water == 3 * 4096);
}
