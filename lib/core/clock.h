// Monotonic wall time in seconds, for the step report's time split, stall and
// bandwidth figures. One definition, so every figure uses the same clock.
#pragma once
#include <chrono>

namespace strata {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace strata
