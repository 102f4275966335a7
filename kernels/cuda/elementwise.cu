// CUDA elementwise ops: add, scale, cast, accumulate, fill_zero. Memory bound: one
// grid-stride pass each, f32 arithmetic, one rounding per element by num::store.
// Invariant: out may alias an input exactly (each element is read before it is
// written, by the same thread); results match the CPU backend bit for bit, since
// each element sees exactly one f32 operation and one rounding.
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

template <class T>
static __global__ void add_kernel(T* out, const T* x, const T* y, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_stride()) out[i] = store<T>(load(x[i]) + load(y[i]));
}

template <class T>
static __global__ void scale_kernel(T* out, const T* x, float alpha, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_stride()) out[i] = store<T>(load(x[i]) * alpha);
}

template <class O, class I>
static __global__ void cast_kernel(O* out, const I* x, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_stride()) out[i] = store<O>(load(x[i]));
}

// Same dtype: a copy of the bits (NaN payloads included), as words of the element size.
template <class W>
static __global__ void copy_kernel(W* out, const W* x, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_stride()) out[i] = x[i];
}

template <class O, class I>
static __global__ void accumulate_kernel(O* out, const I* x, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_stride()) out[i] = store<O>(load(out[i]) + load(x[i]));
}

template <class W>
static __global__ void zero_kernel(W* out, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_stride()) out[i] = W(0);
}

void add(const ops::AddArgs& a, const Context& c) {
  const int64_t n = a.out.numel();
  dispatch_float(a.out.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(add_kernel<T>, blocks_for(n, kThreads), kThreads, 0, c.stream, a.out.ptr<T>(),
           static_cast<const T*>(a.a.ptr<T>()), static_cast<const T*>(a.b.ptr<T>()), n);
  });
}

void scale(const ops::ScaleArgs& a, const Context& c) {
  const int64_t n = a.out.numel();
  dispatch_float(a.out.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(scale_kernel<T>, blocks_for(n, kThreads), kThreads, 0, c.stream, a.out.ptr<T>(),
           static_cast<const T*>(a.inp.ptr<T>()), a.alpha, n);
  });
}

void cast(const ops::CastArgs& a, const Context& c) {
  const int64_t n = a.out.numel();
  const unsigned grid = blocks_for(n, kThreads);
  if (a.out.dtype == a.inp.dtype) {
    if (dtype_size(a.out.dtype) == 4)
      launch(copy_kernel<uint32_t>, grid, kThreads, 0, c.stream, a.out.ptr<uint32_t>(),
             static_cast<const uint32_t*>(a.inp.ptr<uint32_t>()), n);
    else
      launch(copy_kernel<uint16_t>, grid, kThreads, 0, c.stream, a.out.ptr<uint16_t>(),
             static_cast<const uint16_t*>(a.inp.ptr<uint16_t>()), n);
    return;
  }
  dispatch_float(a.inp.dtype, [&](auto in_tag) {
    using I = decltype(in_tag);
    dispatch_float(a.out.dtype, [&](auto out_tag) {
      using O = decltype(out_tag);
      launch(cast_kernel<O, I>, grid, kThreads, 0, c.stream, a.out.ptr<O>(), static_cast<const I*>(a.inp.ptr<I>()),
             n);
    });
  });
}

void accumulate(const ops::AccumulateArgs& a, const Context& c) {
  const int64_t n = a.out.numel();
  const unsigned grid = blocks_for(n, kThreads);
  dispatch_float(a.inp.dtype, [&](auto in_tag) {
    using I = decltype(in_tag);
    const I* x = a.inp.ptr<I>();
    // The entry point allows exactly two output dtypes: f32, or inp's own.
    if (a.out.dtype == DType::f32)
      launch(accumulate_kernel<float, I>, grid, kThreads, 0, c.stream, a.out.ptr<float>(), x, n);
    else
      launch(accumulate_kernel<I, I>, grid, kThreads, 0, c.stream, a.out.ptr<I>(), x, n);
  });
}

void fill_zero(const TensorView& out, const Context& c) {
  const int64_t n = out.numel();
  const unsigned grid = blocks_for(n, kThreads);
  if (dtype_size(out.dtype) == 4)
    launch(zero_kernel<uint32_t>, grid, kThreads, 0, c.stream, out.ptr<uint32_t>(), n);
  else
    launch(zero_kernel<uint16_t>, grid, kThreads, 0, c.stream, out.ptr<uint16_t>(), n);
}

}  // namespace strata::STRATA_CUDA_NS
