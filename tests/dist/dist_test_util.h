// Helpers for the communicator tests: per-rank host buffers of f32 or bf16 with
// deterministic contents, and a watchdog that kills a hung test instead of letting
// the suite wait forever.
#pragma once
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "strata/device.h"
#include "strata/dtype.h"
#include "strata/tensor.h"

namespace strata::test {

// A flat host buffer of n elements of f32 or bf16.
struct HostBuf {
  DType dtype = DType::f32;
  std::vector<unsigned char> bytes;

  HostBuf() = default;
  HostBuf(DType t, int64_t n) : dtype(t), bytes(size_t(n) * dtype_size(t)) {}
  int64_t numel() const { return int64_t(bytes.size() / dtype_size(dtype)); }

  float get(int64_t i) const {
    if (dtype == DType::f32) {
      float v;
      std::memcpy(&v, bytes.data() + size_t(i) * 4, 4);
      return v;
    }
    uint16_t h;
    std::memcpy(&h, bytes.data() + size_t(i) * 2, 2);
    return bf16_to_float(h);
  }
  // Stores v rounded to the buffer's dtype.
  void set(int64_t i, float v) {
    if (dtype == DType::f32) {
      std::memcpy(bytes.data() + size_t(i) * 4, &v, 4);
    } else {
      uint16_t h = float_to_bf16(v);
      std::memcpy(bytes.data() + size_t(i) * 2, &h, 2);
    }
  }
  TensorView view(Device* device) { return TensorView(bytes.data(), dtype, {numel()}, device); }
};

// Values spread over several binades, so that the order of a sum changes its bits.
inline HostBuf random_buf(DType t, int64_t n, uint32_t seed) {
  HostBuf b(t, n);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> mant(-1.f, 1.f);
  std::uniform_int_distribution<int> exp(-12, 12);
  for (int64_t i = 0; i < n; ++i) b.set(i, std::ldexp(mant(rng), exp(rng)));
  return b;
}

inline std::vector<std::unique_ptr<Device>> make_devices(int n) {
  std::vector<std::unique_ptr<Device>> d;
  for (int r = 0; r < n; ++r) d.push_back(Device::cpu(r));
  return d;
}

// Kills the process (a failed test) if the guarded scope does not finish in time: a
// hung collective must fail the suite, not stall it.
class Watchdog {
 public:
  Watchdog(double seconds, const char* what)
      : thread_([this, seconds, what] {
          std::unique_lock lock(mutex_);
          if (!cv_.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return done_; })) {
            std::fprintf(stderr, "watchdog: %s did not finish within %g s (hang)\n", what, seconds);
            std::fflush(stderr);
            std::_Exit(3);
          }
        }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace strata::test
