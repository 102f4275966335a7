// CUDA dropout, forward and backward (the same masked scaling).
// Invariant: keep(i) = num::philox_uniform(key, i) >= p, the CPU backend's mask
// element for element; each thread draws one Philox block and uses its four words
// for elements 4j .. 4j+3, so no random number is computed twice.
#include "../common/philox.h"
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

template <class T>
static __global__ void dropout_kernel(T* out, const T* inp, int64_t n, float p, float scale, num::RandomKey key) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t j = grid_first(); j < blocks; j += grid_stride()) {
    const num::Philox4 r = num::philox_block(key, uint64_t(j));
    for (int w = 0; w < 4 && 4 * j + w < n; ++w) {
      const int64_t i = 4 * j + w;
      out[i] = store<T>(num::uniform_from_word(r.v[w]) >= p ? load(inp[i]) * scale : 0.0f);
    }
  }
}

template <class T>
static __global__ void copy_kernel(T* out, const T* inp, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_stride()) out[i] = inp[i];
}

namespace {
void dropout(const ops::DropoutArgs& a, const Context& c) {
  const int64_t n = a.inp.numel();
  dispatch_float(a.inp.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.p == 0.0f) {  // every element kept with scale 1: a copy, or nothing in place
      if (a.inp.data != a.out.data)
        launch(copy_kernel<T>, blocks_for(n, kThreads), kThreads, 0, c.stream, a.out.ptr<T>(),
               static_cast<const T*>(a.inp.ptr<T>()), n);
      return;
    }
    launch(dropout_kernel<T>, blocks_for((n + 3) / 4, kThreads), kThreads, 0, c.stream, a.out.ptr<T>(),
           static_cast<const T*>(a.inp.ptr<T>()), n, a.p, 1.0f / (1.0f - a.p), a.key);
  });
}
}  // namespace

void dropout_forward(const ops::DropoutArgs& a, const Context& c) { dropout(a, c); }

void dropout_backward(const ops::DropoutArgs& a, const Context& c) { dropout(a, c); }

}  // namespace strata::STRATA_CUDA_NS
