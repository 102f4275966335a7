// CPU GELU (tanh approximation) and SwiGLU, forward and backward.
// Invariants: activation gradients are assigned, never accumulated; the functions
// are those of kernels/common/math.h (num::gelu, gelu_grad, silu, silu_grad), here
// rewritten through one vectorisable exp so the loops run 16 lanes wide (glibc's
// tanhf / expf are scalar calls that block vectorisation).
// The activation functions themselves, and their accuracy, are in activation_math.h
// (shared with the GELU epilogue of matmul_forward).
#include <cstdint>

#include "activation_math.h"
#include "cpu.h"
#include "util.h"
#include "op_profile.h"

namespace strata::cpu {

namespace {

// Elements per task: the transcendental in every element makes small chunks worth it.
constexpr int64_t kGrain = 4096;

template <class T>
void gelu_forward_impl(const ops::GeluForwardArgs& a) {
  const T* inp = a.inp.ptr<T>();
  T* out = a.out.ptr<T>();
  parallel_for(a.inp.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = store<T>(gelu(load(inp[i])));
  });
}

template <class T>
void gelu_backward_impl(const ops::GeluBackwardArgs& a) {
  const T* inp = a.inp.ptr<T>();
  const T* d_out = a.d_out.ptr<T>();
  T* d_inp = a.d_inp.ptr<T>();
  parallel_for(a.inp.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      d_inp[i] = store<T>(load(d_out[i]) * gelu_grad(load(inp[i])));
  });
}

template <class T>
void swiglu_forward_impl(const ops::SwigluForwardArgs& a) {
  const int64_t h = a.out.shape[a.out.ndim - 1];
  const int64_t n = a.out.numel() / h;
  const T* inp = a.inp.ptr<T>();  // (N, 2H): [gate | up]
  T* out = a.out.ptr<T>();        // (N, H)
  parallel_for(n, std::max<int64_t>(1, kGrain / h), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* gate = inp + r * 2 * h;
      const T* up = gate + h;
      T* o = out + r * h;
      for (int64_t i = 0; i < h; ++i) o[i] = store<T>(silu(load(gate[i])) * load(up[i]));
    }
  });
}

template <class T>
void swiglu_backward_impl(const ops::SwigluBackwardArgs& a) {
  const int64_t h = a.d_out.shape[a.d_out.ndim - 1];
  const int64_t n = a.d_out.numel() / h;
  const T* inp = a.inp.ptr<T>();      // (N, 2H)
  const T* d_out = a.d_out.ptr<T>();  // (N, H)
  T* d_inp = a.d_inp.ptr<T>();        // (N, 2H)
  parallel_for(n, std::max<int64_t>(1, kGrain / h), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* gate = inp + r * 2 * h;
      const T* up = gate + h;
      const T* dy = d_out + r * h;
      T* d_gate = d_inp + r * 2 * h;
      T* d_up = d_gate + h;
      for (int64_t i = 0; i < h; ++i) {
        // Read everything first: d_inp may alias inp.
        const float g = load(gate[i]), u = load(up[i]), d = load(dy[i]);
        d_gate[i] = store<T>(d * u * silu_grad(g));
        d_up[i] = store<T>(d * silu(g));
      }
    }
  });
}

}  // namespace

void gelu_forward(const ops::GeluForwardArgs& a) {
  OpTimer timer(OpCategory::activation);
  dispatch_float(a.inp.dtype, [&](auto t) { gelu_forward_impl<decltype(t)>(a); });
}

void gelu_backward(const ops::GeluBackwardArgs& a) {
  OpTimer timer(OpCategory::activation);
  dispatch_float(a.inp.dtype, [&](auto t) { gelu_backward_impl<decltype(t)>(a); });
}

void swiglu_forward(const ops::SwigluForwardArgs& a) {
  OpTimer timer(OpCategory::activation);
  dispatch_float(a.inp.dtype, [&](auto t) { swiglu_forward_impl<decltype(t)>(a); });
}

void swiglu_backward(const ops::SwigluBackwardArgs& a) {
  OpTimer timer(OpCategory::activation);
  dispatch_float(a.inp.dtype, [&](auto t) { swiglu_backward_impl<decltype(t)>(a); });
}

}  // namespace strata::cpu
