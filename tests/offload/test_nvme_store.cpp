// NvmeStore: round trips across paths, queue depths and threads on io_uring and on
// the fallback; striping; argument errors; the plan check; swap-file cleanup.
#include <catch2/catch.hpp>

#include <sys/statvfs.h>

#include "nvme_round_trip.h"
#include "strata/error.h"
#include "support/skip.h"

using namespace strata::offload;
using namespace strata::test;
using Catch::Contains;

namespace {

// The O_DIRECT tests' precondition; false means the case is skipped (support/skip.h).
bool direct_io_available() {
  if (accepts_direct_io(nvme_test_root())) return true;
  skip_test(nvme_test_root() + " does not accept O_DIRECT; set STRATA_TEST_NVME_DIR to a "
                               "directory on a real disk to run the io_uring tests");
  return false;
}

}  // namespace

TEST_CASE("nvme store: io_uring round trips at queue depths 1 to 64, 3 paths, 4 threads", "[nvme]") {
  if (!direct_io_available()) return;
  for (int qd : {1, 4, 64}) {
    DYNAMIC_SECTION("queue depth " << qd) {
      ScratchDir dir(3);
      PinnedPool pool(48 << 20, "test pool");
      NvmeStore store(test_options(dir, qd, false, &pool));
      REQUIRE(store.direct());
      if (store.fallback()) WARN("io_uring was refused here: this ran on the fallback");
      round_trip_many(store, pool, 4, 1000 + uint64_t(qd));
      auto s = store.stats();
      REQUIRE(s.errors == 0);
      REQUIRE(s.bytes_written > 0);
    }
  }
}

TEST_CASE("nvme store: the pread/pwrite fallback passes the same round trips", "[nvme][cpu]") {
  for (int qd : {1, 4, 64}) {
    DYNAMIC_SECTION("queue depth " << qd) {
      ScratchDir dir(2);
      PinnedPool pool(48 << 20, "test pool");
      NvmeStore store(test_options(dir, qd, true, &pool));
      REQUIRE(store.fallback());
      REQUIRE(std::string(store.backend_name()) == "pread/pwrite threads");
      round_trip_many(store, pool, 4, 2000 + uint64_t(qd));
    }
  }
}

TEST_CASE("nvme store: a directory without O_DIRECT falls back on its own", "[nvme][cpu]") {
  const std::string shm = "/dev/shm";
  if (!std::filesystem::is_directory(shm)) {
    skip_test("no /dev/shm here");
    return;
  }
  ScratchDir dir(2, shm);
  PinnedPool pool(48 << 20);
  NvmeStore store(test_options(dir, 8, false, &pool));
  const bool direct = accepts_direct_io(dir.paths()[0]);
  REQUIRE(store.direct() == direct);
  if (!direct) REQUIRE(store.fallback());
  round_trip_many(store, pool, 2, 3000);
}

TEST_CASE("nvme store: extents go round-robin over the paths", "[nvme]") {
  ScratchDir dir(2);
  NvmeOptions o = test_options(dir, 4, !accepts_direct_io(nvme_test_root()));
  o.keep_files = true;
  NvmeStore store(o);
  const uint64_t extent = o.extent_bytes;
  auto id = store.reserve("striped", 4 * extent);
  PinnedPool pool(4 * extent);
  auto buf = pool.allocate(4 * extent);
  for (int k = 0; k < 4; ++k) std::memset(static_cast<char*>(buf.data()) + k * extent, 'A' + k, extent);
  store.write(id, 0, buf.data(), 4 * extent).get();
  // Object 0 starts on path 0: extents 0 and 2 on path 0, 1 and 3 on path 1, in order.
  auto first_byte = [&](int path, uint64_t offset) {
    FILE* f = std::fopen(store.files()[size_t(path)].c_str(), "rb");
    REQUIRE(f);
    std::fseek(f, long(offset), SEEK_SET);
    int c = std::fgetc(f);
    std::fclose(f);
    return c;
  };
  REQUIRE(first_byte(0, 0) == 'A');
  REQUIRE(first_byte(1, 0) == 'B');
  REQUIRE(first_byte(0, extent) == 'C');
  REQUIRE(first_byte(1, extent) == 'D');
  REQUIRE(store.stats().bytes_reserved == 4 * extent);
}

TEST_CASE("nvme store: bad arguments throw before anything is queued", "[nvme][cpu]") {
  ScratchDir dir(1);
  NvmeStore store(test_options(dir, 4, true));
  auto id = store.reserve("weights", 10000);
  PinnedPool pool(1 << 20);
  auto buf = pool.allocate(16384);
  char* p = static_cast<char*>(buf.data());
  REQUIRE_THROWS_WITH(store.read(id, 100, p, 10), Contains("'weights'") && Contains("offset 100") &&
                                                      Contains("4096-byte aligned"));
  REQUIRE_THROWS_WITH(store.write(id, 0, p + 8, 10), Contains("4096-byte aligned"));
  REQUIRE_THROWS_WITH(store.read(id, 8192, p, 4096), Contains("runs past its 10000 bytes"));
  REQUIRE_THROWS_WITH(store.read(id + 1, 0, p, 1), Contains("no object 1"));
  REQUIRE_THROWS_WITH(store.read(id, 0, nullptr, 1), Contains("null"));
  REQUIRE_THROWS_WITH(store.reserve("empty", 0), Contains("'empty'") && Contains("0 bytes"));
  NvmeOptions bad = test_options(dir, 4, true);
  bad.extent_bytes = 1000;
  REQUIRE_THROWS_WITH(NvmeStore(bad), Contains("extent_bytes 1000"));
  bad = test_options(dir, 0, true);
  REQUIRE_THROWS_WITH(NvmeStore(bad), Contains("queue_depth 0"));
  bad = test_options(dir, 4, true);
  bad.paths = {dir.path() + "/missing"};
  REQUIRE_THROWS_WITH(NvmeStore(bad), Contains("/missing") && Contains("not a directory"));
  store.read(id, 0, p, 0).get();  // zero bytes: done at once
  REQUIRE(store.stats().transfers == 0);
}

TEST_CASE("nvme store: a plan larger than the free space is refused before anything is written", "[nvme][cpu]") {
  ScratchDir dir(2);
  NvmeStore store(test_options(dir, 4, true));
  auto keep = store.reserve("kept", 8192);
  PinnedPool pool(1 << 20);
  auto buf = pool.allocate(8192);
  fill_random(buf.data(), 8192, 5);
  store.write(keep, 0, buf.data(), 8192).get();
  struct statvfs fs {};
  REQUIRE(statvfs(dir.path().c_str(), &fs) == 0);
  const uint64_t free_bytes = uint64_t(fs.f_bavail) * fs.f_frsize;
  const auto before = store.stats().bytes_reserved;
  // Each object alone fits; together they do not.
  REQUIRE_THROWS_WITH(store.reserve({{"big 1", free_bytes * 2 / 3}, {"big 2", free_bytes * 2 / 3}}),
                      Contains("the plan needs") && Contains(dir.paths()[0]) && Contains("free"));
  REQUIRE(store.stats().bytes_reserved == before);
  auto back = pool.allocate(8192);
  store.read(keep, 0, back.data(), 8192).get();
  REQUIRE(std::memcmp(back.data(), buf.data(), 8192) == 0);
}

TEST_CASE("nvme store: swap files are removed unless kept", "[nvme][cpu]") {
  ScratchDir dir(2);
  for (bool keep : {false, true}) {
    {
      NvmeOptions o = test_options(dir, 4, true);
      o.keep_files = keep;
      NvmeStore store(o);
      store.reserve("x", 1 << 20);
    }
    REQUIRE(dir.file_count() == (keep ? 2u : 0u));
  }
}
