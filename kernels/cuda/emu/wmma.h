// The emulated `nvcuda::wmma` API (warp matrix multiply-accumulate on tensor cores),
// for kernels compiled by g++ with -DSTRATA_CUDA_EMULATION; under nvcc the same kernel
// source includes the real <mma.h>. Only the 16x16x16 shape, with bf16 or fp16
// operands (__nv_bfloat16, __half) and float accumulators.
//
// Every operation is warp-collective, as on the GPU: load_matrix_sync,
// store_matrix_sync and mma_sync start with a warp barrier (strata::emu::sync_warp), so
// a lane that skips one deadlocks the emulator instead of silently working.
// mma_sync publishes each lane's operand elements through a per-warp buffer between
// two warp barriers and every lane then computes its own elements of D: products of
// bf16/fp16 values are exact in f32 (as on the hardware), summed in f32 in k order.
//
// Invariant (the rule for kernel code): the fragment layout is the emulator's own —
// lane l holds element i of a fragment at the linear position ((32 i + l) * 37 + 11)
// mod 256 of the 16x16 tile, which is not the hardware's. Kernel code may therefore
// only treat x[] uniformly: the same elementwise operation on every x[i], possibly
// combining fragments of the same type (which share a layout). Anything that needs to
// know an element's row or column goes through shared memory with store/load.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "../../common/convert.h"
#include "emu.h"

// The CUDA 16-bit float types, as bit containers (conversions through strata::num).
struct __nv_bfloat16 {
  uint16_t bits;
};
struct __half {
  uint16_t bits;
};

namespace nvcuda::wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

namespace detail {

constexpr int kTile = 16, kElements = 8;  // 16x16 elements over 32 lanes

inline float to_float(float v) { return v; }
inline float to_float(__nv_bfloat16 v) { return strata::num::bf16_to_float(v.bits); }
inline float to_float(__half v) { return strata::num::f16_to_float(v.bits); }
template <class T>
T from_float(float v);
template <>
inline float from_float<float>(float v) {
  return v;
}
template <>
inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return {strata::num::float_to_bf16(v)};
}
template <>
inline __half from_float<__half>(float v) {
  return {strata::num::float_to_f16(v)};
}

inline int lane() { return strata::emu::lane_id(); }
inline int warp() {
  unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  return int(linear / 32u);
}
// The tile position (row * 16 + column) of element i of this lane's fragment.
inline int position(int l, int i) { return ((i * 32 + l) * 37 + 11) & 255; }

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "strata CUDA emulator (wmma): %s (block %u,%u,%u thread %u,%u,%u)\n", what, blockIdx.x,
               blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
  std::abort();
}

// The hardware's requirements on a fragment's memory: ldm a multiple of 16 bytes and
// the pointer aligned (256-bit on the GPU; the emulator's shared memory is only
// 16-byte aligned at its base, so 16 bytes are checked here).
template <class T>
void check_memory(const T* p, unsigned ldm) {
  if ((ldm * sizeof(T)) % 16 != 0) fail("ldm is not a multiple of 16 bytes");
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) fail("fragment pointer not 16-byte aligned");
}

// Operands of one warp's mma_sync in flight, per block (one OS thread runs a block).
struct MmaExchange {
  float a[256], b[256];
};
inline thread_local MmaExchange t_exchange[32];

}  // namespace detail

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulated wmma supports the 16x16x16 shape only");
  static constexpr int num_elements = detail::kElements;
  T x[detail::kElements];
};

template <class Use, class T, class Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float v) {
  for (T& e : f.x) e = detail::from_float<T>(v);
}

// matrix_a / matrix_b: the layout is the fragment's; element (r, c) of the tile is
// p[r * ldm + c] (row_major) or p[c * ldm + r] (col_major).
template <class Use, class T, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "an accumulator load takes a layout_t");
  detail::check_memory(p, ldm);
  strata::emu::sync_warp();
  const int l = detail::lane();
  for (int i = 0; i < detail::kElements; ++i) {
    const int pos = detail::position(l, i), r = pos / 16, c = pos % 16;
    f.x[i] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
  }
}

template <class T>
void load_matrix_sync(fragment<accumulator, 16, 16, 16, T, void>& f, const T* p, unsigned ldm, layout_t layout) {
  detail::check_memory(p, ldm);
  strata::emu::sync_warp();
  const int l = detail::lane();
  for (int i = 0; i < detail::kElements; ++i) {
    const int pos = detail::position(l, i), r = pos / 16, c = pos % 16;
    f.x[i] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
  }
}

template <class T>
void store_matrix_sync(T* p, const fragment<accumulator, 16, 16, 16, T, void>& f, unsigned ldm, layout_t layout) {
  detail::check_memory(p, ldm);
  strata::emu::sync_warp();
  const int l = detail::lane();
  for (int i = 0; i < detail::kElements; ++i) {
    const int pos = detail::position(l, i), r = pos / 16, c = pos % 16;
    (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[i];
  }
}

// d = a b + c. d may alias c.
template <class T, class LayoutA, class LayoutB>
void mma_sync(fragment<accumulator, 16, 16, 16, float, void>& d, const fragment<matrix_a, 16, 16, 16, T, LayoutA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LayoutB>& b,
              const fragment<accumulator, 16, 16, 16, float, void>& c) {
  detail::MmaExchange& x = detail::t_exchange[detail::warp()];
  const int l = detail::lane();
  strata::emu::sync_warp();  // every lane is done reading the previous mma's operands
  for (int i = 0; i < detail::kElements; ++i) {
    const int pos = detail::position(l, i);
    x.a[pos] = detail::to_float(a.x[i]);
    x.b[pos] = detail::to_float(b.x[i]);
  }
  strata::emu::sync_warp();  // every operand element is published
  for (int i = 0; i < detail::kElements; ++i) {
    const int pos = detail::position(l, i), r = pos / 16, col = pos % 16;
    float acc = c.x[i];
    for (int k = 0; k < 16; ++k) acc += x.a[r * 16 + k] * x.b[k * 16 + col];  // exact products
    d.x[i] = acc;
  }
}

}  // namespace nvcuda::wmma
