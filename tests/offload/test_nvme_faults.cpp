// NvmeStore under injected faults, on io_uring and on the fallback: short transfers
// are resubmitted, EINTR/EAGAIN retried, and -EIO/-ENOSPC become a strata::Error with
// path, offset and size while other objects' data stays intact.
#include <catch2/catch.hpp>

#include <cerrno>
#include <set>

#include "nvme_round_trip.h"
#include "strata/error.h"

using namespace strata::offload;
using namespace strata::test;
using Catch::Contains;

namespace {

// Both backends where O_DIRECT works here, else just the fallback.
std::vector<bool> backends() {
  if (accepts_direct_io(nvme_test_root())) return {false, true};
  WARN("io_uring fault cases skipped: " << nvme_test_root() << " does not accept O_DIRECT");
  return {true};
}

const char* backend_label(bool fallback) { return fallback ? "fallback" : "io_uring"; }

}  // namespace

TEST_CASE("nvme faults: short transfers are resubmitted for the remainder", "[nvme]") {
  for (bool fallback : backends()) {
    DYNAMIC_SECTION(backend_label(fallback)) {
      ScratchDir dir(2);
      PinnedPool pool(48 << 20);
      NvmeOptions o = test_options(dir, 8, fallback, &pool);
      o.fault_hook = [](const NvmeFaultSite& site) -> int64_t { return site.bytes > 4096 ? 4096 : 0; };
      NvmeStore store(o);
      round_trip_many(store, pool, 2, 4000);
      REQUIRE(store.stats().short_transfers > 0);
      REQUIRE(store.stats().errors == 0);
    }
  }
}

TEST_CASE("nvme faults: EINTR and EAGAIN are retried", "[nvme]") {
  for (bool fallback : backends()) {
    DYNAMIC_SECTION(backend_label(fallback)) {
      ScratchDir dir(2);
      PinnedPool pool(48 << 20);
      NvmeOptions o = test_options(dir, 8, fallback, &pool);
      // Every transfer fails twice (EINTR, then EAGAIN) before it is let through.
      auto seen = std::make_shared<std::map<std::pair<const std::string*, uint64_t>, int>>();
      auto mutex = std::make_shared<std::mutex>();
      o.fault_hook = [seen, mutex](const NvmeFaultSite& site) -> int64_t {
        std::lock_guard lock(*mutex);
        int n = (*seen)[{site.path, site.file_offset}]++ % 3;
        return n == 0 ? -EINTR : n == 1 ? -EAGAIN : 0;
      };
      NvmeStore store(o);
      round_trip_many(store, pool, 2, 5000);
      REQUIRE(store.stats().retries > 0);
      REQUIRE(store.stats().errors == 0);
    }
  }
}

TEST_CASE("nvme faults: endless EAGAIN gives up with an error", "[nvme]") {
  for (bool fallback : backends()) {
    DYNAMIC_SECTION(backend_label(fallback)) {
      ScratchDir dir(1);
      NvmeOptions o = test_options(dir, 4, fallback);
      o.fault_hook = [](const NvmeFaultSite&) -> int64_t { return -EAGAIN; };
      NvmeStore store(o);
      auto id = store.reserve("stuck", 4096);
      PinnedPool pool(4096);
      auto buf = pool.allocate(4096);
      REQUIRE_THROWS_WITH(store.read(id, 0, buf.data(), 4096).get(),
                          Contains("EAGAIN") && Contains("retries") && Contains("'stuck'"));
    }
  }
}

TEST_CASE("nvme faults: EIO and ENOSPC name path, offset and size; other objects are untouched", "[nvme]") {
  for (bool fallback : backends()) {
    DYNAMIC_SECTION(backend_label(fallback)) {
      ScratchDir dir(2);
      PinnedPool pool(8 << 20);
      NvmeOptions o = test_options(dir, 16, fallback, &pool);
      const uint32_t bad_object = 1;
      auto fail_errno = std::make_shared<std::atomic<int>>(EIO);
      o.fault_hook = [fail_errno](const NvmeFaultSite& site) -> int64_t {
        // Object 1's writes fail from its second 64 KiB extent on.
        return site.object == 1 && site.write && site.file_offset >= (64 << 10) ? -fail_errno->load() : 0;
      };
      NvmeStore store(o);
      auto ids = store.reserve({{"layer 0", 300000}, {"layer 1", 300000}, {"layer 2", 300000}});
      REQUIRE(ids[bad_object] == bad_object);
      const size_t size = 300000;
      std::vector<PinnedBuffer> data;
      for (int i = 0; i < 3; ++i) {
        data.push_back(pool.allocate(size));
        fill_random(data.back().data(), size, 600 + uint64_t(i));
      }
      store.write(ids[0], 0, data[0].data(), size).get();
      try {
        store.write(ids[1], 0, data[1].data(), size).get();
        FAIL("the injected EIO was not reported");
      } catch (const strata::Error& e) {
        std::string m = e.what();
        CHECK_THAT(m, Contains("NVMe write failed") && Contains("Input/output error") &&
                          Contains("strata-swap-") && Contains("offset ") && Contains("size ") &&
                          Contains("'layer 1'"));
      }
      fail_errno->store(ENOSPC);
      REQUIRE_THROWS_WITH(store.write(ids[1], 0, data[1].data(), size).get(),
                          Contains("No space left on device") && Contains("free space"));
      store.write(ids[2], 0, data[2].data(), size).get();
      REQUIRE(store.stats().errors > 0);
      for (int i : {0, 2}) {
        auto back = pool.allocate(size);
        store.read(ids[size_t(i)], 0, back.data(), size).get();
        INFO("object " << i);
        REQUIRE(std::memcmp(back.data(), data[size_t(i)].data(), size) == 0);
      }
    }
  }
}
