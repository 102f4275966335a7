// Row helpers for CPU kernels that work on one row at a time in f32: per-thread
// scratch rows, dtype <-> f32 row conversion, and reductions written so that GCC
// vectorises them without -ffast-math.
// Invariant: every reduction here sums in a fixed order that depends only on the
// row length (16 interleaved lanes, then the lanes in order), never on threads, so
// results are bitwise reproducible run to run.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "util.h"

namespace strata::cpu::rows {

// A per-thread f32 buffer of at least n floats, reused across calls. `slot` picks
// one of a few independent buffers so a kernel can hold several rows at once; the
// calling thread also runs oneTBB tasks, so a buffer that must outlive a parallel
// loop uses its own slot.
inline float* scratch(int slot, int64_t n) {
  constexpr int kSlots = 8;
  thread_local std::vector<float> buffers[kSlots];
  std::vector<float>& b = buffers[slot];
  if (int64_t(b.size()) < n) b.resize(size_t(n));
  return b.data();
}

template <class T>
inline void load(const T* __restrict src, float* __restrict dst, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = num::load(src[i]);
  }
}

template <class T>
inline void store(const float* __restrict src, T* __restrict dst, int64_t n) {
  if constexpr (std::is_same_v<T, float>) {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = num::store<T>(src[i]);
  }
}

// dst += src, with dst stored as T.
template <class T>
inline void accumulate(const float* __restrict src, T* __restrict dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = num::store<T>(num::load(dst[i]) + src[i]);
}

// A row as f32: the row itself when T is float, else its conversion into scratch.
template <class T>
inline const float* as_f32(const T* src, int64_t n, int slot) {
  if constexpr (std::is_same_v<T, float>) {
    return src;
  } else {
    float* dst = scratch(slot, n);
    load(src, dst, n);
    return dst;
  }
}

constexpr int kLanes = 16;

inline float sum_lanes(const float* lanes) {
  float s = 0.0f;
  for (int j = 0; j < kLanes; ++j) s += lanes[j];
  return s;
}

inline float sum(const float* __restrict x, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lanes[j] += x[i + j];
  for (int j = 0; i + j < n; ++j) lanes[j] += x[i + j];
  return sum_lanes(lanes);
}

inline float dot(const float* __restrict x, const float* __restrict y, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lanes[j] += x[i + j] * y[i + j];
  for (int j = 0; i + j < n; ++j) lanes[j] += x[i + j] * y[i + j];
  return sum_lanes(lanes);
}

// sum((x - c)^2): the second pass of a two-pass variance.
inline float centered_square_sum(const float* __restrict x, float c, int64_t n) {
  float lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      float d = x[i + j] - c;
      lanes[j] += d * d;
    }
  for (int j = 0; i + j < n; ++j) {
    float d = x[i + j] - c;
    lanes[j] += d * d;
  }
  return sum_lanes(lanes);
}

}  // namespace strata::cpu::rows
