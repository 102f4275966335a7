// Where a CPU step's time goes: a per-category timer at the entry of every CPU op
// (GEMMs, attention, norms, activations, cross-entropy, AdamW, other ops), for
// `strata-bench train`. Off unless op_profile_enable(true): then each op entry reads
// a relaxed atomic flag and nothing else.
// Invariant: only the outermost op on a thread is timed (an op that calls another
// counts once, under its own category), so the categories of one thread never add
// up to more than that thread's wall time. Ops running on several threads at once
// (a background optimizer) each add their own time.
#pragma once
#include <array>
#include <atomic>
#include <cstdint>

namespace strata::cpu {

enum class OpCategory : int { gemm, attention, norm, activation, cross_entropy, adamw, other, count };
const char* op_category_name(OpCategory c);  // "GEMMs", "attention", ...

void op_profile_enable(bool on);
void op_profile_reset();
// Seconds spent in each category since the last reset.
std::array<double, size_t(OpCategory::count)> op_profile_seconds();

namespace detail {
extern std::atomic<bool> op_profile_on;
int64_t op_profile_now_ns();
void op_profile_add(OpCategory c, int64_t ns);
extern thread_local int op_profile_depth;
}  // namespace detail

// Times its scope under `c` when profiling is on and no op is already timed here.
class OpTimer {
 public:
  explicit OpTimer(OpCategory c) : category_(c) {
    if (!detail::op_profile_on.load(std::memory_order_relaxed)) return;
    counted_ = true;
    if (detail::op_profile_depth++ == 0) t0_ = detail::op_profile_now_ns();
  }
  ~OpTimer() {
    if (counted_ && --detail::op_profile_depth == 0 && t0_ >= 0)
      detail::op_profile_add(category_, detail::op_profile_now_ns() - t0_);
  }
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  OpCategory category_;
  bool counted_ = false;
  int64_t t0_ = -1;
};

}  // namespace strata::cpu
