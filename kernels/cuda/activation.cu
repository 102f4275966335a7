// CUDA GELU (tanh approximation) and SwiGLU, forward and backward.
// Invariants: activation gradients are assigned; the functions are those of
// kernels/common/math.h (num::gelu, gelu_grad, silu, silu_grad). The CPU backend
// evaluates the same functions through its own vectorised exp, so the two agree to a
// few ulp in f32 (measured in kernels/cpu/activation.cpp), not bit for bit.
#include "../common/math.h"
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

template <class T>
static __global__ void gelu_forward_kernel(T* out, const T* inp, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_stride()) out[i] = store<T>(num::gelu(load(inp[i])));
}

template <class T>
static __global__ void gelu_backward_kernel(T* d_inp, const T* d_out, const T* inp, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_stride())
    d_inp[i] = store<T>(load(d_out[i]) * num::gelu_grad(load(inp[i])));
}

// inp (N, 2H) = [gate | up]; out (N, H).
template <class T>
static __global__ void swiglu_forward_kernel(T* out, const T* inp, int64_t n, int64_t h) {
  for (int64_t i = grid_first(); i < n * h; i += grid_stride()) {
    const int64_t r = i / h, j = i % h;
    const T* gate = inp + r * 2 * h;
    out[i] = store<T>(num::silu(load(gate[j])) * load(gate[h + j]));
  }
}

template <class T>
static __global__ void swiglu_backward_kernel(T* d_inp, const T* d_out, const T* inp, int64_t n, int64_t h) {
  for (int64_t i = grid_first(); i < n * h; i += grid_stride()) {
    const int64_t r = i / h, j = i % h;
    // Read everything first: d_inp may alias inp, element for element.
    const float g = load(inp[r * 2 * h + j]), u = load(inp[r * 2 * h + h + j]), d = load(d_out[i]);
    d_inp[r * 2 * h + j] = store<T>(d * u * num::silu_grad(g));
    d_inp[r * 2 * h + h + j] = store<T>(d * num::silu(g));
  }
}

void gelu_forward(const ops::GeluForwardArgs& a, const Context& c) {
  const int64_t n = a.inp.numel();
  dispatch_float(a.inp.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(gelu_forward_kernel<T>, blocks_for(n, kThreads), kThreads, 0, c.stream, a.out.ptr<T>(),
           static_cast<const T*>(a.inp.ptr<T>()), n);
  });
}

void gelu_backward(const ops::GeluBackwardArgs& a, const Context& c) {
  const int64_t n = a.inp.numel();
  dispatch_float(a.inp.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(gelu_backward_kernel<T>, blocks_for(n, kThreads), kThreads, 0, c.stream, a.d_inp.ptr<T>(),
           static_cast<const T*>(a.d_out.ptr<T>()), static_cast<const T*>(a.inp.ptr<T>()), n);
  });
}

void swiglu_forward(const ops::SwigluForwardArgs& a, const Context& c) {
  const int64_t h = a.out.shape[a.out.ndim - 1], n = a.out.numel() / h;
  dispatch_float(a.inp.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(swiglu_forward_kernel<T>, blocks_for(n * h, kThreads), kThreads, 0, c.stream, a.out.ptr<T>(),
           static_cast<const T*>(a.inp.ptr<T>()), n, h);
  });
}

void swiglu_backward(const ops::SwigluBackwardArgs& a, const Context& c) {
  const int64_t h = a.d_out.shape[a.d_out.ndim - 1], n = a.d_out.numel() / h;
  dispatch_float(a.inp.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(swiglu_backward_kernel<T>, blocks_for(n * h, kThreads), kThreads, 0, c.stream, a.d_inp.ptr<T>(),
           static_cast<const T*>(a.d_out.ptr<T>()), static_cast<const T*>(a.inp.ptr<T>()), n, h);
  });
}

}  // namespace strata::STRATA_CUDA_NS
