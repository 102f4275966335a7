// CUDA token + position embedding: out[b, t] = wte[tokens[b, t]] + wpe[t + pos_offset].
// Invariants: the backward is deterministic without atomics and adds exactly what the
// CPU backend adds — for each table row, the d_out rows of its tokens summed in f32 in
// row order, then added to the gradient once. A block owns a range of vocabulary rows
// and columns, scans every token in order and accumulates in shared memory.
// Tokens live in device memory, so the entry point cannot range-check them: an id
// outside [0, V) gives a NaN output row in forward and is skipped in backward.
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

namespace {
constexpr int kVocabRows = 64;  // vocabulary rows per backward block
constexpr int kCols = 128;      // columns per backward block (its threads)
constexpr int kTokenChunk = 128;  // tokens staged in shared memory at a time
}  // namespace

template <class T>
static __global__ void embedding_forward_kernel(T* out, const int32_t* tokens, const T* wte, const T* wpe, int64_t n,
                                                int64_t t_size, int64_t c, int64_t vocab, int64_t pos_offset) {
  for (int64_t k = grid_first(); k < n * c; k += grid_stride()) {
    const int64_t row = k / c, col = k % c;
    const int32_t tok = tokens[row];
    if (tok < 0 || tok >= vocab) {
      out[k] = store<T>(NAN);
      continue;
    }
    const T w = wte[int64_t(tok) * c + col];
    out[k] = wpe ? store<T>(load(w) + load(wpe[(row % t_size + pos_offset) * c + col])) : w;
  }
}

// grid (vocab blocks, column blocks); d_wte rows [v0, v0 + kVocabRows), columns
// [c0, c0 + kCols).
template <class G, class T>
static __global__ void embedding_backward_wte_kernel(G* d_wte, const T* d_out, const int32_t* tokens, int64_t n,
                                                     int64_t c, int64_t vocab) {
  __shared__ float acc[kVocabRows][kCols];
  __shared__ int touched[kVocabRows];
  __shared__ int32_t staged[kTokenChunk];
  const int64_t v0 = int64_t(blockIdx.x) * kVocabRows, col = int64_t(blockIdx.y) * kCols + threadIdx.x;
  for (int v = 0; v < kVocabRows; ++v) acc[v][threadIdx.x] = 0.0f;
  for (int v = threadIdx.x; v < kVocabRows; v += blockDim.x) touched[v] = 0;
  for (int64_t n0 = 0; n0 < n; n0 += kTokenChunk) {
    __syncthreads();  // the previous chunk is consumed
    for (int k = threadIdx.x; k < kTokenChunk; k += blockDim.x) staged[k] = n0 + k < n ? tokens[n0 + k] : -1;
    __syncthreads();
    const int count = n - n0 < kTokenChunk ? int(n - n0) : kTokenChunk;
    for (int k = 0; k < count; ++k) {
      const int64_t v = int64_t(staged[k]) - v0;
      if (v < 0 || v >= kVocabRows) continue;
      if (col < c) acc[v][threadIdx.x] += load(d_out[(n0 + k) * c + col]);
      if (threadIdx.x == 0) touched[v] = 1;
    }
  }
  __syncthreads();
  if (col >= c) return;
  for (int v = 0; v < kVocabRows && v0 + v < vocab; ++v)
    if (touched[v]) d_wte[(v0 + v) * c + col] = store<G>(load(d_wte[(v0 + v) * c + col]) + acc[v][threadIdx.x]);
}

// d_wpe[t + pos_offset] += sum over b (in order) of d_out[b, t].
template <class G, class T>
static __global__ void embedding_backward_wpe_kernel(G* d_wpe, const T* d_out, int64_t b_size, int64_t t_size,
                                                     int64_t c, int64_t pos_offset) {
  for (int64_t k = grid_first(); k < t_size * c; k += grid_stride()) {
    const int64_t t = k / c, col = k % c;
    float sum = 0.0f;
    for (int64_t b = 0; b < b_size; ++b) sum += load(d_out[(b * t_size + t) * c + col]);
    G* g = d_wpe + (t + pos_offset) * c + col;
    *g = store<G>(load(*g) + sum);
  }
}

void embedding_forward(const ops::EmbeddingForwardArgs& a, const Context& ctx) {
  const int64_t t_size = a.tokens.shape[1], n = a.tokens.numel(), c = a.wte.shape[1];
  dispatch_float(a.out.dtype, [&](auto tag) {
    using T = decltype(tag);
    launch(embedding_forward_kernel<T>, blocks_for(n * c, kThreads), kThreads, 0, ctx.stream, a.out.ptr<T>(),
           static_cast<const int32_t*>(a.tokens.ptr<int32_t>()), static_cast<const T*>(a.wte.ptr<T>()),
           static_cast<const T*>(a.wpe.defined() ? a.wpe.ptr<T>() : nullptr), n, t_size, c, a.wte.shape[0],
           a.pos_offset);
  });
}

namespace {
template <class G, class T>
void backward_typed(const ops::EmbeddingBackwardArgs& a, const Context& ctx) {
  const int64_t n = a.tokens.numel(), vocab = a.d_wte.shape[0], c = a.d_wte.shape[1];
  const dim3 grid(unsigned((vocab + kVocabRows - 1) / kVocabRows), unsigned((c + kCols - 1) / kCols));
  launch(embedding_backward_wte_kernel<G, T>, grid, kCols, 0, ctx.stream, a.d_wte.ptr<G>(),
         static_cast<const T*>(a.d_out.ptr<T>()), static_cast<const int32_t*>(a.tokens.ptr<int32_t>()), n, c, vocab);
}

template <class G, class T>
void backward_wpe_typed(const ops::EmbeddingBackwardArgs& a, const Context& ctx) {
  const int64_t b_size = a.tokens.shape[0], t_size = a.tokens.shape[1], c = a.d_wpe.shape[1];
  launch(embedding_backward_wpe_kernel<G, T>, blocks_for(t_size * c, kThreads), kThreads, 0, ctx.stream,
         a.d_wpe.ptr<G>(), static_cast<const T*>(a.d_out.ptr<T>()), b_size, t_size, c, a.pos_offset);
}
}  // namespace

void embedding_backward(const ops::EmbeddingBackwardArgs& a, const Context& ctx) {
  dispatch_float(a.d_out.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.d_wte.dtype == DType::f32)
      backward_typed<float, T>(a, ctx);
    else
      backward_typed<T, T>(a, ctx);
    if (a.d_wpe.defined()) {
      if (a.d_wpe.dtype == DType::f32)
        backward_wpe_typed<float, T>(a, ctx);
      else
        backward_wpe_typed<T, T>(a, ctx);
    }
  });
}

}  // namespace strata::STRATA_CUDA_NS
