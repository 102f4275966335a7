// Shared by the offload checkpoint tests: a run's state as bit patterns, so resumed
// and uninterrupted runs are compared bit for bit (-0 vs +0 and NaN payloads too),
// and whole files read for byte-for-byte comparison.
#pragma once
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "strata/train.h"

namespace strata::test {

// Losses, then per unit the working params and master, m, v, as bit patterns.
struct State {
  std::vector<uint32_t> losses, params, optimizer;
};

inline void append_bits(std::vector<uint32_t>& out, const std::vector<float>& v) {
  const size_t at = out.size();
  out.resize(at + v.size());
  std::memcpy(out.data() + at, v.data(), v.size() * 4);
}

// Appends every unit's params and optimizer state (under ZeRO every rank calls it:
// the state is gathered).
inline void append_state(const Trainer& t, int units, State& st) {
  std::vector<float> master, m, v;
  for (int u = 0; u < units; ++u) {
    append_bits(st.params, t.unit_parameters(u));
    t.optimizer_state(u, master, m, v);
    for (const std::vector<float>* x : {&master, &m, &v}) append_bits(st.optimizer, *x);
  }
}

inline std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace strata::test
