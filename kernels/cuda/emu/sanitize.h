// The sanitizer's hooks for the emulator's scheduler (emu.cpp -> sanitize.cpp);
// internal to kernels/cuda/emu. The scheduler tells it which thread runs and when a
// barrier completes; element accesses come in through record() (shared.h).
// Invariant: the state is per OS thread (one block in flight per OS thread), and
// `epoch` is unique to one barrier interval of one block on that thread, so shadow
// cells of an earlier interval, block or launch never match.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "emu.h"

namespace strata::emu::sanitize {

// Bank-conflict counters: per OS thread while blocks run, per launch, per kernel.
struct Counters {
  uint64_t accesses = 0, instructions = 0, degree_sum = 0, dropped = 0;
  int worst = 0;
  void add(const Counters& o);
};

// One run_grid: what its blocks found, merged as they finish.
struct Launch {
  const void* kernel = nullptr;
  bool checked = false;  // races and banks checked (within the kernel's budget)
  std::mutex mutex;
  Counters counters;
  std::vector<std::string> errors;  // the first few
  uint64_t error_count = 0;
};

void launch_begin(Launch& launch);  // decides whether it is checked
void range_begin(Launch* launch, void* dynamic_shared, size_t dynamic_bytes);  // a worker takes blocks
void range_end();
void block_begin(int threads);
void set_thread(int linear);  // the emulated thread now running
void block_barrier();         // __syncthreads completed: a new interval
void warp_barrier(int warp, bool fence);  // a warp barrier completed; fence: __syncwarp
void block_end();
// Merges the launch's counters into its kernel's; throws SanitizerError for findings.
void launch_end(Launch& launch);

// The kernel's name from the symbol table ("bias_grad_kernel<float, float>"), or its
// address when it has none (kernel_names.cpp).
std::string kernel_name(const void* kernel);

}  // namespace strata::emu::sanitize
