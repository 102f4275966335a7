// CUDA LayerNorm and RMSNorm, forward and backward, optionally fused with the
// residual add around them (residual_norm_forward / _backward: the same kernels with
// the residual pointers set).
// Invariants: statistics (mean, rstd) are f32, from the row in f32, two passes (no
// E[x^2] - E[x]^2 cancellation); d_inp is assigned, d_weight / d_bias accumulate.
// The parameter-gradient sums are deterministic without float atomics: rows are cut
// into fixed chunks of kChunkRows, one block per chunk sums its rows in order into
// its own f32 partial row (scratch), and add_partials (kernel_util.cuh) adds the
// partials in a fixed order, so the result depends on neither the grid nor the timing. The fused forward
// normalises res_out as stored (rounded), exactly what norm_forward would read.
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

namespace {
constexpr int64_t kChunkRows = 32;

// Threads for a row of c elements: a multiple of 32, at most kThreads.
int row_threads(int64_t c) {
  int64_t t = (c + 31) / 32 * 32;
  return int(t < kThreads ? t : kThreads);
}
}  // namespace

// With add set, the row is inp + add: each thread writes its elements of the sum to
// `sum` first and reads them back from there (its own writes: no barrier needed).
template <class T>
static __global__ void norm_forward_kernel(T* out, float* mean, float* rstd, const T* inp, const T* weight,
                                           const T* bias, int64_t c, float eps, bool rms, const T* add, T* sum) {
  __shared__ Shared<float[32]> buf;
  const int64_t row = blockIdx.x;
  const T* x = inp + row * c;
  if (add) {
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x)
      sum[row * c + i] = store<T>(load(x[i]) + load(add[row * c + i]));
    x = sum + row * c;
  }
  float m = 0.0f, acc = 0.0f;
  if (!rms) {
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) acc += load(x[i]);
    m = block_sum(acc, buf) / float(c);
    acc = 0.0f;
  }
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
    const float d = load(x[i]) - m;
    acc += d * d;
  }
  const float s = 1.0f / sqrtf(block_sum(acc, buf) / float(c) + eps);
  // Every thread has read its whole row before any writes: out may alias inp.
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
    float y = (load(x[i]) - m) * s * load(weight[i]);
    if (bias) y += load(bias[i]);
    out[row * c + i] = store<T>(y);
  }
  if (threadIdx.x == 0) {
    if (!rms) mean[row] = m;
    rstd[row] = s;
  }
}

// One block per chunk of rows: d_inp rows, and the chunk's partial dw / db rows.
// With d_resid set, d_inp = d_resid + the norm's input gradient (rounded once; each
// element is read before it is written by the same thread, so they may alias).
template <class T>
static __global__ void norm_backward_rows_kernel(T* d_inp, float* dw_partials, float* db_partials,
                                                 const T* d_out, const T* inp, const T* weight,
                                                 const float* mean, const float* rstd, int64_t n, int64_t c,
                                                 const T* d_resid) {
  __shared__ Shared<float[32]> buf;
  const int64_t chunk = blockIdx.x;
  float* dw = dw_partials + chunk * c;                          // (C)
  float* db = db_partials ? db_partials + chunk * c : nullptr;  // (C)
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
    dw[i] = 0.0f;
    if (db) db[i] = 0.0f;
  }
  const int64_t r_end = (chunk + 1) * kChunkRows < n ? (chunk + 1) * kChunkRows : n;
  for (int64_t r = chunk * kChunkRows; r < r_end; ++r) {
    const float m = mean ? mean[r] : 0.0f, s = rstd[r];
    const T* x = inp + r * c;
    const T* dy = d_out + r * c;
    float proj = 0.0f, shift = 0.0f;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
      const float xhat = (load(x[i]) - m) * s, g = load(dy[i]) * load(weight[i]);
      proj += g * xhat;
      shift += g;
    }
    proj = block_sum(proj, buf) / float(c);
    shift = mean ? block_sum(shift, buf) / float(c) : 0.0f;  // RMSNorm has no centring
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
      const float xhat = (load(x[i]) - m) * s, d = load(dy[i]), g = d * load(weight[i]);
      const float dx = s * (g - shift - xhat * proj);
      d_inp[r * c + i] = store<T>(d_resid ? load(d_resid[r * c + i]) + dx : dx);
      dw[i] += d * xhat;  // column i is this thread's alone: rows add in order
      if (db) db[i] += d;
    }
  }
}

namespace {
// norm_forward, and with y / res_out defined the residual-fused forward.
void forward(const ops::NormForwardArgs& a, const TensorView& y, const TensorView& res_out, const Context& ctx) {
  const int64_t c = a.inp.shape[a.inp.ndim - 1], n = a.inp.numel() / c;
  dispatch_float(a.inp.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(norm_forward_kernel<T>, unsigned(n), row_threads(c), 0, ctx.stream, a.out.ptr<T>(),
           a.rms ? nullptr : a.mean.ptr<float>(), a.rstd.ptr<float>(), static_cast<const T*>(a.inp.ptr<T>()),
           static_cast<const T*>(a.weight.ptr<T>()),
           static_cast<const T*>(a.bias.defined() ? a.bias.ptr<T>() : nullptr), c, a.eps, a.rms,
           static_cast<const T*>(y.defined() ? y.ptr<T>() : nullptr), res_out.defined() ? res_out.ptr<T>() : nullptr);
  });
}

// norm_backward, and with d_resid defined the residual-fused backward.
void backward(const ops::NormBackwardArgs& a, const TensorView& d_resid, const Context& ctx) {
  const int64_t c = a.inp.shape[a.inp.ndim - 1], n = a.inp.numel() / c;
  const int64_t chunks = (n + kChunkRows - 1) / kChunkRows;
  const bool with_bias = a.d_bias.defined();
  // (chunks, C) d_weight partials, then (chunks, C) d_bias partials.
  float* partials = static_cast<float*>(ctx.scratch->get(size_t((with_bias ? 2 : 1) * chunks * c) * 4));
  float* db_partials = with_bias ? partials + chunks * c : nullptr;
  dispatch_float(a.inp.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(norm_backward_rows_kernel<T>, unsigned(chunks), row_threads(c), 0, ctx.stream, a.d_inp.ptr<T>(),
           partials, db_partials, static_cast<const T*>(a.d_out.ptr<T>()), static_cast<const T*>(a.inp.ptr<T>()),
           static_cast<const T*>(a.weight.ptr<T>()), static_cast<const float*>(a.rms ? nullptr : a.mean.ptr<float>()),
           static_cast<const float*>(a.rstd.ptr<float>()), n, c,
           static_cast<const T*>(d_resid.defined() ? d_resid.ptr<T>() : nullptr));
    add_partials<T>(a.d_weight, partials, chunks, c, ctx);
    if (with_bias) add_partials<T>(a.d_bias, db_partials, chunks, c, ctx);
  });
}

}  // namespace

void norm_forward(const ops::NormForwardArgs& a, const Context& ctx) { forward(a, {}, {}, ctx); }

void norm_backward(const ops::NormBackwardArgs& a, const Context& ctx) { backward(a, {}, ctx); }

void residual_norm_forward(const ops::ResidualNormForwardArgs& a, const Context& ctx) {
  forward({a.out, a.mean, a.rstd, a.x, a.weight, a.bias, a.eps, a.rms}, a.y, a.res_out, ctx);
}

void residual_norm_backward(const ops::ResidualNormBackwardArgs& a, const Context& ctx) {
  backward({a.d_res, a.d_weight, a.d_bias, a.d_out, a.inp, a.weight, a.mean, a.rstd, a.rms}, a.d_resid, ctx);
}

}  // namespace strata::STRATA_CUDA_NS
