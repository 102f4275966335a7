// The NVMe store on a filesystem that refuses O_DIRECT (ramfs, mounted here by the
// test): the swap files are opened again without the flag and the plain-I/O
// fallback moves every byte. Needs root to mount; skipped (with a warning) otherwise.
#include <catch2/catch.hpp>

#include <sys/mount.h>
#include <unistd.h>

#include "nvme_round_trip.h"

using namespace strata::offload;
using namespace strata::test;

namespace {

// A ramfs mounted on a fresh directory for the test's lifetime.
class RamfsMount {
 public:
  RamfsMount() {
    std::string pattern = std::filesystem::temp_directory_path().string() + "/strata_ramfs_XXXXXX";
    if (!::mkdtemp(pattern.data())) return;
    path_ = pattern;
    mounted_ = geteuid() == 0 && ::mount("ramfs", path_.c_str(), "ramfs", 0, "mode=0700") == 0;
  }
  ~RamfsMount() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
    if (!path_.empty()) ::rmdir(path_.c_str());
  }
  bool mounted() const { return mounted_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool mounted_ = false;
};

}  // namespace

TEST_CASE("nvme store: a filesystem without O_DIRECT falls back to plain I/O", "[nvme]") {
  RamfsMount ramfs;
  if (!ramfs.mounted()) {
    WARN("skipped: mounting a ramfs needs root (mount(2) failed or not root)");
    return;
  }
  REQUIRE_FALSE(accepts_direct_io(ramfs.path()));
  ScratchDir dir(2, ramfs.path());
  PinnedPool pool(48 << 20);
  NvmeOptions o = test_options(dir, 8, /*fallback=*/false, &pool);
  NvmeStore store(o);
  REQUIRE(store.fallback());
  round_trip_many(store, pool, 2, 6000);
  REQUIRE(store.stats().errors == 0);
}
