// CPU reductions over lists of buffers: the global gradient norm and the count of
// non-finite elements, both inputs to the step's skip / clip decision.
// Invariant: deterministic. Each buffer is cut into fixed chunks of kChunk elements
// whatever the thread count; each chunk's partial is written to its own slot, and
// the slots are summed in index order. Same inputs, same bits, on any machine size.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "convert_block.h"
#include "cpu.h"
#include "util.h"
#include "op_profile.h"

namespace strata::cpu {

namespace {

constexpr int64_t kChunk = int64_t(1) << 16;
constexpr int kLanes = 8;  // independent double accumulators: one AVX-512 register

// Sum of x[i]^2 over f32 values, in double, lane by lane so it vectorises without
// reassociation (the lanes are fixed, so the result is too).
void add_squares(const float* __restrict x, int64_t n, double* __restrict acc) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += double(x[i + j]) * double(x[i + j]);
  for (int j = 0; i < n; ++i, ++j) acc[j] += double(x[i]) * double(x[i]);
}

template <class T>
double sum_squares(const T* x, int64_t n) {
  double acc[kLanes] = {};
  if constexpr (std::is_same_v<T, float>) {
    add_squares(x, n, acc);
  } else {
    alignas(64) float block[kBlock];
    for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
      int64_t len = std::min(kBlock, n - i0);
      load_block(x + i0, block, len);
      add_squares(block, len, acc);
    }
  }
  double s = 0;
  for (double a : acc) s += a;
  return s;
}

// An element is NaN or Inf exactly when its exponent field is all ones.
template <class Bits>
int64_t count_exponent_all_ones(const Bits* x, int64_t n, Bits exponent_mask) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += (x[i] & exponent_mask) == exponent_mask;
  return count;
}

int64_t count_nonfinite_in(const TensorView& t, int64_t begin, int64_t end) {
  switch (t.dtype) {
    case DType::f32:
      return count_exponent_all_ones(t.ptr<uint32_t>() + begin, end - begin, uint32_t(0x7f800000u));
    case DType::bf16:
      return count_exponent_all_ones(t.ptr<uint16_t>() + begin, end - begin, uint16_t(0x7f80u));
    case DType::f16:
      return count_exponent_all_ones(t.ptr<uint16_t>() + begin, end - begin, uint16_t(0x7c00u));
    case DType::i32: break;
  }
  return 0;
}

// Runs chunk(begin, end) -> partial over t's fixed chunks in parallel and returns the
// partials summed in chunk order. `partials` is the caller's reusable scratch.
template <class Acc, class F>
Acc reduce_chunks(int64_t n, std::vector<Acc>& partials, F chunk) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  partials.assign(size_t(chunks), Acc{});
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) partials[size_t(c)] = chunk(c * kChunk, std::min(n, (c + 1) * kChunk));
  });
  Acc total{};
  for (Acc p : partials) total += p;
  return total;
}

}  // namespace

void global_norm(const ops::GlobalNormArgs& a) {
  OpTimer timer(OpCategory::adamw);
  thread_local std::vector<double> partials;
  double total = 0;
  for (const TensorView& t : a.inputs) {
    dispatch_float(t.dtype, [&](auto tag) {
      using T = decltype(tag);
      const T* x = t.ptr<T>();
      total += reduce_chunks(t.numel(), partials,
                             [&](int64_t begin, int64_t end) { return sum_squares(x + begin, end - begin); });
    });
  }
  *a.out.ptr<float>() = float(std::sqrt(total));
}

void count_nonfinite(const ops::CountNonfiniteArgs& a) {
  OpTimer timer(OpCategory::adamw);
  thread_local std::vector<int64_t> partials;
  int64_t total = 0;
  for (const TensorView& t : a.inputs)
    total += reduce_chunks(t.numel(), partials,
                           [&](int64_t begin, int64_t end) { return count_nonfinite_in(t, begin, end); });
  // More than 2^31 - 1 bad elements still means "skip the step"; saturate.
  *a.out.ptr<int32_t>() = int32_t(std::min<int64_t>(total, std::numeric_limits<int32_t>::max()));
}

}  // namespace strata::cpu
