// Helpers for CPU kernels: dtype dispatch to templated code, and parallel loops.
#pragma once
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <cstdint>

#include "../common/convert.h"
#include "../common/dispatch.h"
#include "strata/dtype.h"
#include "strata/tensor.h"

namespace strata::cpu {

using num::bf16;
using num::f16;
using num::load;
using num::store;

using num::dispatch_float;

// Runs f(begin, end) over [0, n) in chunks of at least `grain`, on oneTBB.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  if (n <= 0) return;
  if (n <= grain) {
    f(int64_t(0), n);
    return;
  }
  // Isolated: a thread waiting for this loop runs only this loop's chunks, never
  // another op's task that could reuse its per-thread scratch (several ranks share
  // the oneTBB workers).
  tbb::this_task_arena::isolate([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, grain),
                      [&](const tbb::blocked_range<int64_t>& r) { f(r.begin(), r.end()); });
  });
}

}  // namespace strata::cpu
