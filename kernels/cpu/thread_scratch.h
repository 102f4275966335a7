// Per-thread scratch for CPU kernels: a buffer that grows and is reused across calls,
// so kernels do not allocate on every call.
// Invariant: a lease is exclusive. A thread that waits inside parallel_for may run
// another task that also asks for scratch of the same slot while the outer lease is
// live; that inner lease then gets its own heap buffer instead of the shared one,
// so neither clobbers the other.
#pragma once
#include <cstddef>
#include <vector>

namespace strata::cpu {

// ThreadScratch<T, Slot>: `Slot` separates independent users on one thread (e.g. a
// buffer held across a parallel_for, and one used inside each task).
template <class T, int Slot = 0>
class ThreadScratch {
 public:
  explicit ThreadScratch(size_t n) {
    if (!busy()) {
      busy() = true;
      owned_ = false;
      std::vector<T>& shared = buffer();
      if (shared.size() < n) shared.resize(n);
      data_ = shared.data();
    } else {
      owned_ = true;
      own_.resize(n);
      data_ = own_.data();
    }
  }
  ~ThreadScratch() {
    if (!owned_) busy() = false;
  }
  ThreadScratch(const ThreadScratch&) = delete;
  ThreadScratch& operator=(const ThreadScratch&) = delete;

  T* data() const { return data_; }

 private:
  static std::vector<T>& buffer() {
    static thread_local std::vector<T> b;
    return b;
  }
  static bool& busy() {
    static thread_local bool b = false;
    return b;
  }
  T* data_ = nullptr;
  bool owned_ = false;
  std::vector<T> own_;
};

}  // namespace strata::cpu
