// The stream timeline (lib/core/stream_timeline.h) of an offloaded run on a CPU device
// whose NVMe reads the fault hook slows: unit u+1's read-ahead is still in flight when
// the copy of unit u into its device buffer completes, which is when unit u's compute
// starts (compute waits on that copy's event and nothing else). An ordering property
// of the recorded intervals, not a speed assertion; without read-ahead (prefetch 0)
// no read is in flight then, so the check can tell the two apart.
#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "lib/core/clock.h"
#include "lib/core/stream_timeline.h"
#include "nvme_test_dirs.h"
#include "strata/offload.h"
#include "strata/strata.h"
#include "../train/train_support.h"

using namespace strata;
using namespace strata::test;
using offload::Tier;

namespace {

struct Interval {
  double begin = 0, end = 0;
};

struct Timeline {
  std::vector<Interval> reads;             // each parameter read, first call to last
  std::vector<StreamInterval> copies;      // host_to_device items that moved bytes
  int copies_with_read_in_flight = 0;      // copies whose end fell inside a read
};

Timeline offloaded_step(int prefetch, const ScratchDir& dir) {
  ModelConfig c = tiny_config("gpt");
  c.n_layers = 4;
  c.d_model = 64;  // a block's params span many 4 KiB blocks: reads take many calls
  c.n_heads = 4;
  c.d_mlp = 256;
  Model m(c, cpu(), Precision::bf16, 5);
  Timeline tl;
  std::mutex reads_mutex;
  offload::OffloadOptions o;
  o.params = Tier::nvme;
  o.grads = o.optimizer = Tier::host;  // only the params' reads go through the hook
  o.nvme_paths = dir.paths();
  o.pinned_bytes = size_t(16) << 20;
  o.prefetch = prefetch;
  o.require_direct = accepts_direct_io(dir.paths()[0]);
  // Each read moves one 4 KiB block a call, after a pause: the hook runs on the I/O
  // thread, so a read stays in flight (resubmitted block by block) across the
  // completions of the reads before it instead of pausing only its submission.
  // A read spans its first call to its last: a call at an offset not past the object's
  // previous one starts the object's next read.
  std::map<uint32_t, std::pair<size_t, uint64_t>> open_reads;  // object -> (index in reads, last offset)
  o.nvme_fault_hook = [&](const offload::NvmeFaultSite& site) -> int64_t {
    if (site.write) return 0;
    const double begin = now_seconds();
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::lock_guard lock(reads_mutex);
    auto it = open_reads.find(site.object);
    if (it == open_reads.end() || site.file_offset <= it->second.second) {
      tl.reads.push_back({begin, 0});
      it = open_reads.insert_or_assign(site.object, std::make_pair(tl.reads.size() - 1, site.file_offset)).first;
    }
    it->second.second = site.file_offset;
    tl.reads[it->second.first].end = now_seconds();
    return site.bytes > 4096 ? 4096 : 0;
  };
  TrainOptions to;
  to.adamw.lr = 1e-2f;
  Trainer t(m, to, o);
  RandomBatch b(2, 8, c.vocab_size, 1000);
  t.train_step({b.batch()});  // warm-up: the first pass has nothing read ahead of it
  {
    std::lock_guard lock(reads_mutex);
    tl.reads.clear();
    open_reads.clear();
  }
  take_stream_timeline();
  set_stream_timeline(true);
  t.train_step({b.batch()});
  set_stream_timeline(false);
  for (const StreamInterval& s : take_stream_timeline())
    if (s.device == m.device().index() && s.role == StreamRole::host_to_device && !s.marker) tl.copies.push_back(s);
  std::lock_guard lock(reads_mutex);
  for (const StreamInterval& s : tl.copies) {
    bool in_flight = false;
    for (const Interval& r : tl.reads) in_flight = in_flight || (r.begin < s.end && s.end < r.end);
    tl.copies_with_read_in_flight += in_flight;
  }
  return tl;
}

}  // namespace

TEST_CASE("offload timeline: unit u+1's NVMe read-ahead runs while unit u computes", "[offload][stream]") {
  ScratchDir dir(1);
  const Timeline ahead = offloaded_step(/*prefetch=*/1, dir);
  INFO(ahead.reads.size() << " reads, " << ahead.copies.size() << " copies, "
                          << ahead.copies_with_read_in_flight << " ended with a read in flight");
  REQUIRE(ahead.reads.size() >= 6);  // every unit's params, forward and backward
  REQUIRE(ahead.copies.size() >= 5);
  // One stream's items run one at a time, in order.
  for (size_t i = 1; i < ahead.copies.size(); ++i) {
    CHECK(ahead.copies[i - 1].item < ahead.copies[i].item);
    CHECK(ahead.copies[i - 1].end <= ahead.copies[i].begin);
  }
  CHECK(ahead.copies_with_read_in_flight >= 3);

  const Timeline none = offloaded_step(/*prefetch=*/0, dir);
  INFO("prefetch 0: " << none.reads.size() << " reads, " << none.copies.size() << " copies, "
                      << none.copies_with_read_in_flight << " ended with a read in flight");
  REQUIRE(none.reads.size() >= 6);
  CHECK(none.copies_with_read_in_flight == 0);
}
