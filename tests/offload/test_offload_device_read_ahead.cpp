// Read-ahead to the device: when a unit is acquired, the host_to_device copies of the
// next units in the pass's direction are queued behind its own, so acquiring the next
// unit waits for nothing queued after that point. Checked as an ordering: an item that
// blocks the host_to_device stream is queued once unit u is acquired; acquiring u+1
// (u-1 in backward) must return before the item is released. Without read-ahead its
// copy would queue behind the item (the release after a second bounds that case).
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>

#include "offload/offload_store.h"
#include "strata/strata.h"
#include "../train/train_support.h"

using namespace strata;
using namespace strata::test;
using offload::Tier;

namespace {

// Blocks `s` until the returned guard goes; `released` says whether it went.
struct Blocker {
  std::promise<void> go;
  std::atomic<bool> released{false};
  std::thread releaser;
  explicit Blocker(Stream& s) {
    std::shared_future<void> gate = go.get_future().share();
    s.host_function([gate] { gate.wait(); });
    releaser = std::thread([this] {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      release();
    });
  }
  void release() {
    if (released.exchange(true)) return;
    go.set_value();
  }
  ~Blocker() { releaser.join(); }
};

// Whether acquiring the unit after `first` (in the pass's direction) returned while an
// item queued on host_to_device after `first` was acquired still blocked it.
bool next_copy_ran_ahead(int prefetch, bool backward) {
  ModelConfig c = tiny_config("gpt");
  c.n_layers = 4;
  Model m(c, cpu(), Precision::bf16, 5);
  offload::OffloadOptions o;
  o.params = o.grads = o.optimizer = Tier::host;
  o.prefetch = prefetch;
  offload::OffloadStore store(m, o, AdamWOptions{});
  Stream& in = m.device().stream(StreamRole::host_to_device);
  const int N = m.num_units();
  int first = 0, next = 1;
  if (backward) {  // the head acquired twice in a row starts a backward
    store.acquire_params(N - 1);
    store.release_params(N - 1);
    first = N - 1;
    next = N - 2;
  }
  store.acquire_params(first);
  bool ahead = false;
  {
    Blocker b(in);
    store.release_params(first);
    store.acquire_params(next);
    ahead = !b.released.load();
    b.release();
  }
  store.release_params(next);
  in.synchronize();
  return ahead;
}

}  // namespace

TEST_CASE("the next unit's device copy is queued before the unit in use computes", "[offload][stream]") {
  CHECK(next_copy_ran_ahead(2, /*backward=*/false));
  CHECK(next_copy_ran_ahead(1, /*backward=*/true));
  CHECK_FALSE(next_copy_ran_ahead(0, /*backward=*/false));  // no read-ahead: the copy queues behind
}
