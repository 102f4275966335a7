// Small helpers shared by the offload sources: rounding, human-readable sizes,
// errno names for error messages, and the host's wait for one stream's results.
// Invariant: header-only and free of state, so every offload file may include it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "strata/device.h"

namespace strata::offload {

inline constexpr uint64_t round_up(uint64_t x, uint64_t to) { return (x + to - 1) / to * to; }

// "4.0 KiB", "1.5 GiB": what a person reads in an error message.
inline std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[64];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%llu B", (unsigned long long)bytes);
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  return buf;
}

// "Input/output error (EIO)" for a positive errno.
inline std::string errno_text(int err) {
  const char* name = strerrorname_np(err);
  return std::string(std::strerror(err)) + " (" + (name ? name : std::to_string(err)) + ")";
}

// The host reads what `s` produced: it waits for one event recorded after it, not for
// the device or the other streams.
inline void host_waits(Stream& s) {
  Event done(s.device());
  done.record(s);
  done.synchronize();
}

}  // namespace strata::offload
