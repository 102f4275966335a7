// The per-category op timer (op_profile.h): one atomic nanosecond counter per category.
#include "op_profile.h"

#include <chrono>

namespace strata::cpu {

namespace detail {
std::atomic<bool> op_profile_on{false};
thread_local int op_profile_depth = 0;
namespace {
std::array<std::atomic<int64_t>, size_t(OpCategory::count)> totals{};
}
int64_t op_profile_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
void op_profile_add(OpCategory c, int64_t ns) { totals[size_t(c)].fetch_add(ns, std::memory_order_relaxed); }
}  // namespace detail

const char* op_category_name(OpCategory c) {
  static const char* names[] = {"GEMMs", "attention", "norms", "activations", "cross-entropy", "AdamW", "other ops"};
  return names[int(c)];
}

void op_profile_enable(bool on) { detail::op_profile_on.store(on); }

void op_profile_reset() {
  for (auto& t : detail::totals) t.store(0);
}

std::array<double, size_t(OpCategory::count)> op_profile_seconds() {
  std::array<double, size_t(OpCategory::count)> s{};
  for (size_t i = 0; i < s.size(); ++i) s[i] = double(detail::totals[i].load()) * 1e-9;
  return s;
}

}  // namespace strata::cpu
