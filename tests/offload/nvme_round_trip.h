// The round-trip check the NVMe tests share: objects of odd sizes written in random
// 4 KiB-aligned pieces (all in flight at once), read back whole and in random
// odd-length subranges, from several threads at once, every byte compared.
// Invariant: expectations come from the data written, never from what was read.
#pragma once
#include <catch2/catch.hpp>

#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "nvme_test_dirs.h"
#include "strata/offload.h"

namespace strata::test {

inline const std::vector<uint64_t> kOddSizes = {1,      4095,   4096,          4097,
                                                65537,  200000, (1 << 20) + 123, (3 << 20) - 5};

// Small extents and blocks so a few MiB cross many stripes and transfers.
inline offload::NvmeOptions test_options(const ScratchDir& dir, int queue_depth, bool fallback,
                                         offload::PinnedPool* pool = nullptr) {
  offload::NvmeOptions o;
  o.paths = dir.paths();
  o.extent_bytes = 64 << 10;
  o.block_bytes = 16 << 10;
  o.queue_depth = queue_depth;
  o.force_fallback = fallback;
  o.pinned = pool;
  return o;
}

// Memory for one transfer: from the pinned pool (registered with io_uring) or a
// plain aligned heap block (the unregistered path).
class TestBuffer {
 public:
  TestBuffer(offload::PinnedPool* pool, size_t bytes) {
    if (pool) {
      pinned_ = pool->allocate(bytes);
      data_ = static_cast<char*>(pinned_.data());
    } else {
      heap_.reset(static_cast<char*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096)));
      data_ = heap_.get();
    }
  }
  char* data() const { return data_; }

 private:
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  offload::PinnedBuffer pinned_;
  std::unique_ptr<char, Free> heap_;
  char* data_ = nullptr;
};

// Counts callbacks down to zero and keeps the first error.
class Latch {
 public:
  explicit Latch(int count) : count_(count) {}
  offload::IoCallback callback() {
    return [this](std::exception_ptr e) {
      std::lock_guard lock(mutex_);
      if (e && !error_) error_ = e;
      if (--count_ == 0) done_.notify_all();
    };
  }
  void wait() {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return count_ == 0; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  std::mutex mutex_;
  std::condition_variable done_;
  int count_;
  std::exception_ptr error_;
};

// One object: write in pieces, read back whole and in 6 random subranges. Returns
// the number of mismatching checks (0 when the data round-tripped).
inline int round_trip_object(offload::NvmeStore& store, offload::PinnedPool* pool, uint32_t id,
                             uint64_t seed, bool callbacks) {
  const size_t size = size_t(store.object_bytes(id));
  std::mt19937_64 rng(seed);
  TestBuffer source(pool, size);
  fill_random(source.data(), size, seed * 7 + 1);
  std::vector<std::pair<size_t, size_t>> pieces;  // (offset, bytes)
  for (size_t pos = 0; pos < size;) {
    size_t len = std::min(size - pos, size_t(4096) * (1 + rng() % 40));
    pieces.push_back({pos, len});
    pos += len;
  }
  if (callbacks) {
    Latch latch(int(pieces.size()));
    for (auto [off, len] : pieces) store.write(id, off, source.data() + off, len, latch.callback());
    latch.wait();
  } else {
    std::vector<std::future<void>> writes;
    for (auto [off, len] : pieces) writes.push_back(store.write(id, off, source.data() + off, len));
    for (auto& f : writes) f.get();
  }
  int mismatches = 0;
  TestBuffer whole(pool, size);
  std::memset(whole.data(), 0, size);
  store.read(id, 0, whole.data(), size).get();
  mismatches += std::memcmp(whole.data(), source.data(), size) != 0;
  for (int r = 0; r < 6; ++r) {
    const size_t off = 4096 * (rng() % ((size + 4095) / 4096));
    if (off >= size) continue;
    const size_t len = 1 + rng() % (size - off);
    TestBuffer part(pool, len);
    store.read(id, off, part.data(), len).get();
    mismatches += std::memcmp(part.data(), source.data() + off, len) != 0;
  }
  return mismatches;
}

// kOddSizes objects (twice over), spread over `threads` threads; even threads use
// pinned buffers and futures, odd ones heap buffers and callbacks.
inline void round_trip_many(offload::NvmeStore& store, offload::PinnedPool& pool, int threads, uint64_t seed) {
  std::vector<offload::NvmeObjectSpec> plan;
  for (int copy = 0; copy < 2; ++copy)
    for (size_t i = 0; i < kOddSizes.size(); ++i)
      plan.push_back({"object " + std::to_string(copy) + "." + std::to_string(i), kOddSizes[i]});
  auto ids = store.reserve(plan);
  std::vector<int> mismatches(static_cast<size_t>(threads), 0);
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      try {
        for (size_t i = size_t(t); i < ids.size(); i += size_t(threads))
          mismatches[size_t(t)] +=
              round_trip_object(store, t % 2 ? nullptr : &pool, ids[i], seed + i, t % 2 == 1);
      } catch (...) {
        errors[size_t(t)] = std::current_exception();
      }
    });
  }
  for (auto& w : workers) w.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
  for (int t = 0; t < threads; ++t) {
    INFO("thread " << t);
    REQUIRE(mismatches[size_t(t)] == 0);
  }
}

}  // namespace strata::test
