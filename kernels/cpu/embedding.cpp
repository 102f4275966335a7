// CPU token + position embedding: out[b, t] = wte[tokens[b, t]] + wpe[t + pos_offset].
// Invariants: tokens are already checked to lie in [0, V) (the entry point does it
// before anything runs). The backward is deterministic: the rows of d_out that go
// to one table row are summed in f32 in row order by one task, then added to the
// gradient once, so the result never depends on thread scheduling and a 16-bit
// gradient is rounded once per call.
#include <algorithm>
#include <cstdint>

#include "cpu.h"
#include "thread_scratch.h"
#include "util.h"
#include "op_profile.h"

namespace strata::cpu {

namespace {

// Scratch slots: the row order and bucket starts live across a parallel_for; the
// f32 row sum is private to one task.
enum Slot { kOrder, kStarts, kRowSum, kPositionRows };

template <class T>
void forward(const ops::EmbeddingForwardArgs& a) {
  const int64_t T_ = a.tokens.shape[1], C = a.wte.shape[1];
  const int64_t N = a.tokens.numel();
  const int32_t* tokens = a.tokens.ptr<int32_t>();  // (B, T)
  const T* wte = a.wte.ptr<T>();                    // (V, C)
  const T* wpe = a.wpe.defined() ? a.wpe.ptr<T>() : nullptr;  // (maxT, C)
  T* out = a.out.ptr<T>();                          // (B, T, C)
  parallel_for(N, std::max<int64_t>(1, 8192 / C), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const T* __restrict tok_row = wte + int64_t(tokens[n]) * C;
      T* __restrict dst = out + n * C;
      if (wpe) {
        const T* __restrict pos_row = wpe + (n % T_ + a.pos_offset) * C;
        for (int64_t c = 0; c < C; ++c) dst[c] = store<T>(load(tok_row[c]) + load(pos_row[c]));
      } else {
        for (int64_t c = 0; c < C; ++c) dst[c] = tok_row[c];
      }
    }
  });
}

// grad_row (C) += sum over `count` rows of d_out listed in `rows`, summed in f32.
template <class G, class T>
void add_rows(G* __restrict grad_row, const T* d_out, const int32_t* rows, int64_t count,
              int64_t row_stride, int64_t C) {
  ThreadScratch<float, kRowSum> sum_s{size_t(C)};
  float* __restrict sum = sum_s.data();
  std::fill(sum, sum + C, 0.0f);
  for (int64_t k = 0; k < count; ++k) {
    const T* __restrict src = d_out + int64_t(rows[k]) * row_stride;
    for (int64_t c = 0; c < C; ++c) sum[c] += load(src[c]);
  }
  for (int64_t c = 0; c < C; ++c) grad_row[c] = store<G>(load(grad_row[c]) + sum[c]);
}

// d_wte: rows bucketed by token with a stable counting sort, one bucket per task.
template <class G, class T>
void backward_wte(const ops::EmbeddingBackwardArgs& a) {
  const int64_t V = a.d_wte.shape[0], C = a.d_wte.shape[1];
  const int64_t N = a.tokens.numel();
  const int32_t* tokens = a.tokens.ptr<int32_t>();
  ThreadScratch<int32_t, kOrder> order_s{size_t(N)};       // (N) rows grouped by token
  ThreadScratch<int64_t, kStarts> starts_s(size_t(V + 1));  // (V + 1) bucket starts
  int32_t* order = order_s.data();
  int64_t* starts = starts_s.data();
  std::fill(starts, starts + V + 1, int64_t(0));
  for (int64_t n = 0; n < N; ++n) ++starts[tokens[n]];
  for (int64_t v = 0, end = 0; v < V; ++v) starts[v] = end += starts[v];  // bucket ends
  starts[V] = N;
  // Filling from the back leaves each bucket in ascending row order and turns each
  // end into that bucket's start.
  for (int64_t n = N - 1; n >= 0; --n) order[--starts[tokens[n]]] = int32_t(n);

  const T* d_out = a.d_out.ptr<T>();
  G* d_wte = a.d_wte.ptr<G>();
  parallel_for(V, 64, [&](int64_t v0, int64_t v1) {
    for (int64_t v = v0; v < v1; ++v) {
      int64_t count = starts[v + 1] - starts[v];
      if (count) add_rows(d_wte + v * C, d_out, order + starts[v], count, C, C);
    }
  });
}

// d_wpe[t + pos_offset] += sum over b of d_out[b, t], one position per task.
template <class G, class T>
void backward_wpe(const ops::EmbeddingBackwardArgs& a) {
  const int64_t B = a.tokens.shape[0], T_ = a.tokens.shape[1], C = a.d_wpe.shape[1];
  const T* d_out = a.d_out.ptr<T>();
  G* d_wpe = a.d_wpe.ptr<G>();
  parallel_for(T_, 1, [&](int64_t t0, int64_t t1) {
    ThreadScratch<int32_t, kPositionRows> rows_s{size_t(B)};  // (B) rows b*T + t
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t b = 0; b < B; ++b) rows_s.data()[b] = int32_t(b * T_ + t);
      add_rows(d_wpe + (t + a.pos_offset) * C, d_out, rows_s.data(), B, C, C);
    }
  });
}

}  // namespace

void embedding_forward(const ops::EmbeddingForwardArgs& a) {
  OpTimer timer(OpCategory::other);
  dispatch_float(a.out.dtype, [&](auto tag) { forward<decltype(tag)>(a); });
}

void embedding_backward(const ops::EmbeddingBackwardArgs& a) {
  OpTimer timer(OpCategory::other);
  dispatch_float(a.d_out.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.d_wte.dtype == DType::f32)
      backward_wte<float, T>(a);
    else
      backward_wte<T, T>(a);
    if (a.d_wpe.defined()) {
      if (a.d_wpe.dtype == DType::f32)
        backward_wpe<float, T>(a);
      else
        backward_wpe<T, T>(a);
    }
  });
}

}  // namespace strata::cpu
