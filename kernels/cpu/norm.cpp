// CPU LayerNorm and RMSNorm, forward and backward, optionally fused with the
// residual add around them (residual_norm_forward / _backward).
// Invariants: statistics (mean, rstd) are f32 and computed in f32 from the row
// converted to f32; d_inp is assigned, d_weight / d_bias accumulate (+=). The
// parameter-gradient sums are deterministic: rows are cut into fixed chunks of
// kChunkRows (independent of the thread count), each chunk sums its rows in order
// into its own f32 partial row, and the partials are added in chunk order. The fused
// forward normalises the residual sum as stored (rounded), so it is bitwise
// norm_forward of res_out; the rest of the row math is shared, not duplicated.
#include <cmath>
#include <type_traits>

#include "cpu.h"
#include "row_math.h"
#include "op_profile.h"

namespace strata::cpu {

namespace {

constexpr int64_t kChunkRows = 64;

// Scratch slots (rows::scratch): the calling thread keeps weight / bias / partials
// in slots that the row loops, which also run on it, never touch.
enum Slot { kRowX = 0, kRowDy, kRowDx, kRowResid, kWeight, kBias, kPartials };

// Rows per task so a task has some tens of thousands of elements.
int64_t row_grain(int64_t c) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(c, 1)); }

// With add defined: the input row is inp + add, stored to sum first (the residual
// sum of residual_norm_forward).
template <class T>
void forward_impl(const ops::NormForwardArgs& a, const T* add = nullptr, T* sum = nullptr) {
  const int64_t c = a.inp.shape[a.inp.ndim - 1];
  const int64_t n = a.inp.numel() / c;
  const T* inp = a.inp.ptr<T>();  // (N, C)
  T* out = a.out.ptr<T>();        // (N, C)
  float* mean = a.rms ? nullptr : a.mean.ptr<float>();  // (N)
  float* rstd = a.rstd.ptr<float>();                      // (N)
  const float* weight = rows::as_f32(a.weight.ptr<T>(), c, kWeight);  // (C)
  const float* bias = a.bias.defined() ? rows::as_f32(a.bias.ptr<T>(), c, kBias) : nullptr;
  const float eps = a.eps;
  const bool rms = a.rms;

  parallel_for(n, row_grain(c), [&](int64_t begin, int64_t end) {
    float* x = rows::scratch(kRowX, c);   // (C) the input row
    float* y = rows::scratch(kRowDx, c);  // (C) the output row before rounding
    for (int64_t r = begin; r < end; ++r) {
      // Converting first also makes out aliasing inp harmless.
      rows::load(inp + r * c, x, c);
      if (add) {
        float* b = rows::scratch(kRowResid, c);
        rows::load(add + r * c, b, c);  // both rows read: sum may alias inp or add
        for (int64_t i = 0; i < c; ++i) x[i] += b[i];
        rows::store(x, sum + r * c, c);
        if constexpr (!std::is_same_v<T, float>) rows::load(sum + r * c, x, c);  // as rounded
      }
      float m = 0.0f, s;
      if (rms) {
        s = 1.0f / std::sqrt(rows::dot(x, x, c) / float(c) + eps);
        for (int64_t i = 0; i < c; ++i) y[i] = x[i] * s * weight[i];
      } else {
        m = rows::sum(x, c) / float(c);
        // Two passes over the cached row: no cancellation from E[x^2] - E[x]^2.
        s = 1.0f / std::sqrt(rows::centered_square_sum(x, m, c) / float(c) + eps);
        if (bias) {
          for (int64_t i = 0; i < c; ++i) y[i] = (x[i] - m) * s * weight[i] + bias[i];
        } else {
          for (int64_t i = 0; i < c; ++i) y[i] = (x[i] - m) * s * weight[i];
        }
        mean[r] = m;
      }
      rstd[r] = s;
      rows::store(y, out + r * c, c);
    }
  });
}

// Adds partials (chunks, C), summed over chunks in order, into grad (C) of dtype G.
template <class G>
void reduce_partials(const float* partials, int64_t chunks, int64_t c, G* grad) {
  constexpr int64_t kBlock = 256;
  parallel_for((c + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t c0 = blk * kBlock, width = std::min(kBlock, c - c0);
      float acc[kBlock] = {};
      for (int64_t k = 0; k < chunks; ++k) {
        const float* p = partials + k * c + c0;
        for (int64_t i = 0; i < width; ++i) acc[i] += p[i];
      }
      rows::accumulate(acc, grad + c0, width);
    }
  });
}

template <class T>
void add_partials(const float* partials, int64_t chunks, int64_t c, const TensorView& grad) {
  if (grad.dtype == DType::f32)
    reduce_partials(partials, chunks, c, grad.ptr<float>());
  else
    reduce_partials(partials, chunks, c, grad.ptr<T>());
}

// With d_resid defined: d_inp = d_resid + the norm's input gradient, rounded once.
template <class T>
void backward_impl(const ops::NormBackwardArgs& a, const T* d_resid = nullptr) {
  const int64_t c = a.inp.shape[a.inp.ndim - 1];
  const int64_t n = a.inp.numel() / c;
  const int64_t chunks = (n + kChunkRows - 1) / kChunkRows;
  const T* inp = a.inp.ptr<T>();      // (N, C)
  const T* d_out = a.d_out.ptr<T>();  // (N, C)
  T* d_inp = a.d_inp.ptr<T>();        // (N, C)
  const float* mean = a.rms ? nullptr : a.mean.ptr<float>();  // (N)
  const float* rstd = a.rstd.ptr<float>();                      // (N)
  const float* weight = rows::as_f32(a.weight.ptr<T>(), c, kWeight);  // (C)
  const bool with_bias = a.d_bias.defined();
  // (chunks, C) d_weight partials, then (chunks, C) d_bias partials.
  float* partials = rows::scratch(kPartials, (with_bias ? 2 : 1) * chunks * c);
  const bool rms = a.rms;

  parallel_for(chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    float* xhat = rows::scratch(kRowX, c);  // (C) normalised input
    float* dy = rows::scratch(kRowDy, c);   // (C) d_out row
    float* dx = rows::scratch(kRowDx, c);   // (C) dy * weight, then d_inp row
    float* res = d_resid ? rows::scratch(kRowResid, c) : nullptr;  // (C) d_resid row
    for (int64_t k = chunk_begin; k < chunk_end; ++k) {
      float* __restrict dw = partials + k * c;
      float* __restrict db = with_bias ? partials + (chunks + k) * c : nullptr;
      std::fill(dw, dw + c, 0.0f);
      if (db) std::fill(db, db + c, 0.0f);
      const int64_t r_end = std::min(n, (k + 1) * kChunkRows);
      for (int64_t r = k * kChunkRows; r < r_end; ++r) {
        rows::load(inp + r * c, xhat, c);
        rows::load(d_out + r * c, dy, c);
        const float m = rms ? 0.0f : mean[r], s = rstd[r];
        for (int64_t i = 0; i < c; ++i) {
          xhat[i] = (xhat[i] - m) * s;
          dx[i] = dy[i] * weight[i];
        }
        // d xhat = dy * w; dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),
        // without the mean(dxhat) term for RMSNorm (no centring in forward).
        const float proj = rows::dot(dx, xhat, c) / float(c);
        const float shift = rms ? 0.0f : rows::sum(dx, c) / float(c);
        for (int64_t i = 0; i < c; ++i) {
          dx[i] = s * (dx[i] - shift - xhat[i] * proj);
          dw[i] += dy[i] * xhat[i];
        }
        if (db)
          for (int64_t i = 0; i < c; ++i) db[i] += dy[i];
        if (res) {
          rows::load(d_resid + r * c, res, c);  // d_inp may alias d_resid: read first
          for (int64_t i = 0; i < c; ++i) dx[i] += res[i];
        }
        rows::store(dx, d_inp + r * c, c);
      }
    }
  });

  add_partials<T>(partials, chunks, c, a.d_weight);
  if (with_bias) add_partials<T>(partials + chunks * c, chunks, c, a.d_bias);
}

}  // namespace

void norm_forward(const ops::NormForwardArgs& a) {
  OpTimer timer(OpCategory::norm);
  dispatch_float(a.inp.dtype, [&](auto t) { forward_impl<decltype(t)>(a); });
}

void norm_backward(const ops::NormBackwardArgs& a) {
  OpTimer timer(OpCategory::norm);
  dispatch_float(a.inp.dtype, [&](auto t) { backward_impl<decltype(t)>(a); });
}

void residual_norm_forward(const ops::ResidualNormForwardArgs& a) {
  OpTimer timer(OpCategory::norm);
  const ops::NormForwardArgs n{a.out, a.mean, a.rstd, a.x, a.weight, a.bias, a.eps, a.rms};
  dispatch_float(a.x.dtype, [&](auto t) {
    using T = decltype(t);
    forward_impl<T>(n, a.y.ptr<T>(), a.res_out.ptr<T>());
  });
}

void residual_norm_backward(const ops::ResidualNormBackwardArgs& a) {
  OpTimer timer(OpCategory::norm);
  const ops::NormBackwardArgs n{a.d_res, a.d_weight, a.d_bias, a.d_out, a.inp, a.weight, a.mean, a.rstd, a.rms};
  dispatch_float(a.inp.dtype, [&](auto t) {
    using T = decltype(t);
    backward_impl<T>(n, a.d_resid.ptr<T>());
  });
}

}  // namespace strata::cpu
