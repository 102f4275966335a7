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
// Pointers are raw (global memory) or strata::emu::SharedPtr (shared memory). Shared
// accesses are recorded for the sanitizer (races, bounds, bank conflicts) in the
// pattern of the GPU's mma.sync m16n8k16 fragment registers (PTX ISA: lane l = 4g + t
// holds rows g and g + 8, column pairs 2t and 2t + 8), so the bank-conflict report
// describes the hardware, while the values follow the emulator's layout below.
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
#include <cstring>
#include <type_traits>

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

// Reads an element of a tile that kernel code may have written as another 16-bit
// type (strata's num::bf16): a copy, not an aliasing access.
template <class T>
T read(const T* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// The element address of a raw or shared pointer, and which one it is.
template <class T>
const T* address(const T* p) {
  return p;
}
template <class T, class U>
const T* address(const strata::emu::SharedPtr<U>& p) {
  static_assert(std::is_same_v<std::remove_const_t<U>, T>, "pointer and fragment element types differ");
  return p.get();
}
template <class P>
constexpr bool is_shared = !std::is_pointer_v<P>;

// Records this lane's shared accesses of a 16x16 tile at p as the GPU makes them: the
// four element pairs of its mma.sync fragment registers, each pair one access where
// it is contiguous in memory, else two. `rows`: tile rows are memory rows; `pairs_down`:
// a pair runs down a column (matrix_b: pairs along k).
template <class T>
void record(const T* p, unsigned ldm, bool rows, bool pairs_down, bool write) {
  const int l = lane(), g = l >> 2, t = l & 3;
  for (int i = 0; i < 4; ++i) {
    const int r0 = pairs_down ? 2 * t + 8 * (i & 1) : g + 8 * (i & 1);
    const int c0 = pairs_down ? g + 8 * (i >> 1) : 2 * t + 8 * (i >> 1);
    const int r1 = pairs_down ? r0 + 1 : r0, c1 = pairs_down ? c0 : c0 + 1;
    const T* a = p + (rows ? r0 * ldm + c0 : c0 * ldm + r0);
    const T* b = p + (rows ? r1 * ldm + c1 : c1 * ldm + r1);
    if (b == a + 1) {
      strata::emu::record_shared_access(a, 2 * sizeof(T), write);
    } else {
      strata::emu::record_shared_access(a, sizeof(T), write);
      strata::emu::record_shared_access(b, sizeof(T), write);
    }
  }
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
template <class Use, class T, class Layout, class P>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, P p, unsigned ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "an accumulator load takes a layout_t");
  const T* base = detail::address<T>(p);
  detail::check_memory(base, ldm);
  strata::emu::sync_warp();
  constexpr bool rows = std::is_same_v<Layout, row_major>;
  if constexpr (detail::is_shared<P>) detail::record<T>(base, ldm, rows, std::is_same_v<Use, matrix_b>, false);
  const int l = detail::lane();
  for (int i = 0; i < detail::kElements; ++i) {
    const int pos = detail::position(l, i), r = pos / 16, c = pos % 16;
    f.x[i] = detail::read(base + (rows ? r * ldm + c : c * ldm + r));
  }
}

template <class T, class P>
void load_matrix_sync(fragment<accumulator, 16, 16, 16, T, void>& f, P p, unsigned ldm, layout_t layout) {
  const T* base = detail::address<T>(p);
  detail::check_memory(base, ldm);
  strata::emu::sync_warp();
  if constexpr (detail::is_shared<P>) detail::record<T>(base, ldm, layout == mem_row_major, false, false);
  const int l = detail::lane();
  for (int i = 0; i < detail::kElements; ++i) {
    const int pos = detail::position(l, i), r = pos / 16, c = pos % 16;
    f.x[i] = layout == mem_row_major ? base[r * ldm + c] : base[c * ldm + r];
  }
}

template <class T, class P>
void store_matrix_sync(P p, const fragment<accumulator, 16, 16, 16, T, void>& f, unsigned ldm, layout_t layout) {
  T* base = const_cast<T*>(detail::address<T>(p));  // a const pointer fails under nvcc
  detail::check_memory(base, ldm);
  strata::emu::sync_warp();
  if constexpr (detail::is_shared<P>) detail::record<T>(base, ldm, layout == mem_row_major, false, true);
  const int l = detail::lane();
  for (int i = 0; i < detail::kElements; ++i) {
    const int pos = detail::position(l, i), r = pos / 16, c = pos % 16;
    (layout == mem_row_major ? base[r * ldm + c] : base[c * ldm + r]) = f.x[i];
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
