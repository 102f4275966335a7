// CUDA emulation: the slice of the CUDA programming model strata's kernels use,
// implemented for g++ so the very sources in kernels/cuda/*.cu run on the CPU in CI
// (compiled as C++ with -DSTRATA_CUDA_EMULATION; never part of the library).
//
// Design (the approach HIP-CPU proved workable):
//  - A launch runs the grid's blocks in parallel on oneTBB, one OS thread per block
//    at a time, so `__shared__` is a `static thread_local`.
//  - Thread 0 of a block runs as a fiber (its own stack). If it finishes without reaching a
//    barrier, the block has none on this path and the other threads run as a plain
//    loop. Otherwise every thread becomes a fiber that yields at __syncthreads(),
//    __syncwarp() and every warp shuffle / vote; a small scheduler resumes a fiber
//    only when the barrier it waits on is complete (all live threads of the block,
//    or all live lanes of its warp), so barrier semantics are those of the GPU.
//  - Shuffles and votes exchange values through a per-block buffer indexed by the
//    thread, double-buffered by each lane's shuffle count, at an implicit warp barrier.
//  - Atomics are std::atomic_ref (blocks really run concurrently).
//  - The sanitizer (sanitize.cpp; shared.h for the checked types): every access to
//    shared memory through Shared / SharedPtr (launch.cuh) is checked for bounds and
//    for races within a barrier interval, and counted for a per-kernel bank-conflict
//    report; between barriers the threads run in a seeded random order (thread 0
//    first). A finding is thrown from the launch as SanitizerError once the grid
//    has run.
// Limits, each a rule for kernels (see also launch.cuh):
//  - No inline PTX, no tensor-core intrinsics, no cooperative groups, no dynamic
//    parallelism; no reliance on implicit warp lock-step (use __syncwarp / shuffles).
//  - Shuffle and vote masks are ignored: every live lane of the warp must take part.
//  - A barrier must be reached by all threads of the block or none (as on the GPU);
//    one reached by some thread but not by thread 0 aborts with a message.
//  - Shared memory is declared as Shared<T[N]> and passed as SharedPtr<T>, dynamic
//    shared memory with STRATA_DYNAMIC_SHARED (launch.cuh); a plain __shared__
//    array still works but is not checked.
// It is slow (a fiber switch per thread per barrier): test with small shapes.
#pragma once
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "shared.h"

#if !defined(STRATA_CUDA_EMULATION)
#error "emu.h is for the CUDA emulation build only (-DSTRATA_CUDA_EMULATION)"
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

struct uint3 {
  unsigned x, y, z;
};

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

using cudaStream_t = struct CUstream_st*;

// The builtins: set by the emulator before any thread of a block runs.
inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;
constexpr int warpSize = 32;

namespace strata::emu {

// Runs body() once per thread of every block, with the builtins set. `body` is a
// type-erased call of the kernel with its arguments; `kernel` (the kernel function,
// may be null) names it in reports. Throws SanitizerError after the grid has run if
// the sanitizer found anything.
void run_grid(const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes, void (*body)(void*),
              void* ctx);

template <class F>
void launch(const void* kernel, dim3 grid, dim3 block, size_t dynamic_shared_bytes, F&& body) {
  using Body = std::remove_reference_t<F>;
  run_grid(kernel, grid, block, dynamic_shared_bytes, [](void* f) { (*static_cast<Body*>(f))(); },
           const_cast<void*>(static_cast<const void*>(&body)));
}

// Records a launch on the device that owns `stream` and reports it when another device
// is current (emu_runtime.cpp; launch.cuh calls it before launch()).
void record_launch(const void* kernel, void* stream);

// The block's dynamic shared memory (filled with 0xff bytes, i.e. NaN, at block start
// so a read before a write shows up in the results). Unchecked: kernels use
// STRATA_DYNAMIC_SHARED, a SharedPtr.
void* dynamic_shared();

// ---------------------------------------------------------------- the sanitizer
// What it reports: a shared-memory race (a write by one thread and a read or write of
// the same byte by another in one barrier interval, unless both are lanes of one warp
// with a __syncwarp() between), or a shared access outside its array. The message
// names the kernel, the block, the array (where it is declared) and offset, and the
// two threads.
struct SanitizerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Race checking: on unless the environment sets STRATA_EMU_SANITIZE=0. Bounds are
// always checked.
void set_race_check(bool on);
bool race_check();

// What keeps the suite fast: a kernel's launches are checked in full (races, bank
// statistics) until it has made `accesses` checked shared accesses since the last
// reset_stats(); a launch that starts past that is checked for bounds only. 2^20 by
// default; STRATA_EMU_SANITIZE=full makes it unlimited, =0 zero.
void set_check_budget(uint64_t accesses);
uint64_t check_budget();

// The order threads of a block run in between barriers: a permutation drawn from
// (seed, block index), entered at a point drawn anew after every barrier (thread 0
// still runs first in a block: it decides whether the block needs fibers); thread
// order for seed 0. From STRATA_EMU_SEED (decimal), 1 when unset: the test suite
// always runs shuffled.
void set_thread_order_seed(uint64_t seed);
uint64_t thread_order_seed();

// Shared-memory bank conflicts, per kernel. The k-th shared access of each lane of a
// warp between two barriers (block or warp) is one instruction; its degree is the
// most distinct 4-byte words any of the 32 banks serves (lanes reading one word share
// it: a broadcast), accesses wider than 4 bytes taken in phases of 128 bytes as the
// hardware does. Deterministic: a property of the kernel's access pattern.
struct KernelStats {
  uint64_t launches = 0;
  uint64_t checked_launches = 0;  // those within the check budget: the statistics' source
  uint64_t shared_accesses = 0;   // element accesses of checked launches, all threads
  uint64_t instructions = 0;     // warp instructions formed from them
  int worst_degree = 0;          // 0 when the kernel made no shared access
  double mean_degree = 0.0;      // over instructions
};
// Forgets every kernel's statistics (and the budget they used).
void reset_stats();
// The statistics of the kernel called `name` since the last reset_stats(): its name
// without namespaces or parameters, e.g. "bias_grad_kernel<float, float>", or without
// template arguments ("bias_grad_kernel") for all its instances together. Kernels not
// launched read as zeros.
KernelStats kernel_stats(const std::string& name);
// One line per kernel launched since the last reset: launches, accesses,
// instructions, worst and mean degree. Printed at exit when STRATA_EMU_REPORT=1.
std::string conflict_report();

void sync_block();
void sync_warp();

// Exchanges one 64-bit word with the warp: returns the word lane `src_lane(lane)` of
// the same warp passed (its own word when that lane does not exist).
uint64_t warp_exchange(uint64_t word, int (*src_lane)(int lane, int arg, int width), int arg, int width);
// The words of all 32 lanes after an exchange; lanes that do not exist read as 0.
uint32_t warp_ballot(bool predicate);

inline int lane_id() {
  unsigned linear = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  return int(linear % 32u);
}

template <class T>
T shuffle(T v, int (*src_lane)(int, int, int), int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a type wider than 8 bytes");
  uint64_t word = 0;
  std::memcpy(&word, &v, sizeof(T));
  word = warp_exchange(word, src_lane, arg, width);
  T out;
  std::memcpy(&out, &word, sizeof(T));
  return out;
}

inline int lane_xor(int lane, int mask, int width) {
  int base = lane & ~(width - 1);
  return base + ((lane - base) ^ mask) % width;
}
inline int lane_down(int lane, int delta, int width) {
  int base = lane & ~(width - 1);
  return lane - base + delta < width ? lane + delta : lane;
}
inline int lane_up(int lane, int delta, int width) {
  int base = lane & ~(width - 1);
  return lane - base >= delta ? lane - delta : lane;
}
inline int lane_index(int lane, int src, int width) { return (lane & ~(width - 1)) + src % width; }

}  // namespace strata::emu

inline void __syncthreads() { strata::emu::sync_block(); }
inline void __syncwarp(unsigned = 0xffffffffu) { strata::emu::sync_warp(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <class T>
T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  return strata::emu::shuffle(v, strata::emu::lane_xor, mask, width);
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  return strata::emu::shuffle(v, strata::emu::lane_down, int(delta), width);
}
template <class T>
T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
  return strata::emu::shuffle(v, strata::emu::lane_up, int(delta), width);
}
template <class T>
T __shfl_sync(unsigned, T v, int src, int width = 32) {
  return strata::emu::shuffle(v, strata::emu::lane_index, src, width);
}
inline unsigned __ballot_sync(unsigned, int predicate) { return strata::emu::warp_ballot(predicate != 0); }
inline int __any_sync(unsigned m, int predicate) { return __ballot_sync(m, predicate) != 0; }
inline int __all_sync(unsigned m, int predicate) {
  // Every existing lane voted: compare with the ballot of a true predicate.
  unsigned votes = __ballot_sync(m, predicate);
  return votes == __ballot_sync(m, 1);
}
inline unsigned __activemask() { return __ballot_sync(0xffffffffu, 1); }

// ---------------------------------------------------------------- atomics
template <class T>
T atomicAdd(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}
template <class T>
T atomicSub(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_sub(value);
}
template <class T>
T atomicExch(T* address, T value) {
  return std::atomic_ref<T>(*address).exchange(value);
}
template <class T>
T atomicCAS(T* address, T compare, T value) {
  std::atomic_ref<T>(*address).compare_exchange_strong(compare, value);
  return compare;  // the old value, whether or not the exchange happened
}
template <class T>
T atomicMax(T* address, T value) {
  std::atomic_ref<T> a(*address);
  T old = a.load();
  while (old < value && !a.compare_exchange_weak(old, value)) {
  }
  return old;
}
template <class T>
T atomicMin(T* address, T value) {
  std::atomic_ref<T> a(*address);
  T old = a.load();
  while (value < old && !a.compare_exchange_weak(old, value)) {
  }
  return old;
}

// ---------------------------------------------------------------- bits and math
inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline int __float_as_int(float f) { return int(__float_as_uint(f)); }
inline float __int_as_float(int i) { return __uint_as_float(unsigned(i)); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
template <class T>
T __ldg(const T* p) {
  return *p;
}
