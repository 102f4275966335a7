// CUDA token + position embedding: out[b, t] = wte[tokens[b, t]] + wpe[t + pos_offset].
// Invariants: the backward is deterministic without atomics and adds exactly what the
// CPU backend adds — for each table row, the d_out rows of its tokens summed in f32 in
// row order, then added to the gradient once. No block scans all tokens: a stable
// counting sort buckets the token positions by their range of kVocabRows table rows
// (count per fixed chunk of tokens, scan, scatter in token order), and a block owns
// one bucket and a range of columns, accumulating its tokens in shared memory.
// Tokens live in device memory, so the entry point cannot range-check them: an id
// outside [0, V) gives a NaN output row in forward and is skipped in backward.
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

namespace {
constexpr int kVocabRows = 64;    // vocabulary rows per bucket (per backward block)
constexpr int kCols = 128;        // columns per backward block (its threads)
constexpr int kTokenChunk = 128;  // token positions staged in shared memory at a time
constexpr int kScanThreads = 256;
constexpr int64_t kMaxCountChunks = 1024;

// The counting sort's chunks of tokens: of at least 64 tokens, at most 1024 of them (a
// function of n alone, so the buckets' order never depends on the launch).
int64_t count_chunk_tokens(int64_t n) {
  const int64_t per = (n + kMaxCountChunks - 1) / kMaxCountChunks;
  return per < 64 ? 64 : per;
}
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

static __global__ void zero_kernel(int32_t* p, int64_t n) {
  for (int64_t i = grid_first(); i < n; i += grid_stride()) p[i] = 0;
}

// One thread per chunk of `per` tokens: counts[bucket, chunk] (buckets, chunks) = how
// many of the chunk's tokens fall in the bucket.
static __global__ void bucket_count_kernel(int32_t* counts, const int32_t* tokens, int64_t n, int64_t vocab,
                                           int64_t per, int64_t chunks) {
  for (int64_t ch = grid_first(); ch < chunks; ch += grid_stride())
    for (int64_t i = ch * per; i < n && i < (ch + 1) * per; ++i) {
      const int32_t tok = tokens[i];
      if (tok >= 0 && tok < vocab) ++counts[(tok / kVocabRows) * chunks + ch];
    }
}

// One block: counts (m = buckets * chunks) becomes its exclusive prefix sum, the
// first slot of each (bucket, chunk) in bucket order, then chunk order; starts[b] is
// bucket b's first slot and starts[buckets] the number of bucketed tokens.
static __global__ void bucket_scan_kernel(int32_t* counts, int32_t* starts, int64_t m, int64_t chunks) {
  __shared__ Shared<int32_t[32]> warp_sums;
  const int t = threadIdx.x, lane = t % 32, warp = t / 32, warps = blockDim.x / 32;
  const int64_t per = (m + blockDim.x - 1) / blockDim.x, begin = t * per, end = begin + per < m ? begin + per : m;
  int32_t local = 0;
  for (int64_t e = begin; e < end; ++e) local += counts[e];
  int32_t x = local;  // inclusive scan over the warp
  for (int o = 1; o < 32; o <<= 1) {
    const int32_t y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int32_t w = lane < warps ? int32_t(warp_sums[lane]) : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const int32_t y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    if (lane < warps) warp_sums[lane] = w;
  }
  __syncthreads();
  int32_t running = (warp > 0 ? int32_t(warp_sums[warp - 1]) : 0) + x - local;
  for (int64_t e = begin; e < end; ++e) {
    const int32_t v = counts[e];
    counts[e] = running;
    if (e % chunks == 0) starts[e / chunks] = running;
    running += v;
  }
  if (t == int(blockDim.x) - 1) starts[m / chunks] = running;
}

// One thread per chunk: each token position goes to the next slot of its (bucket,
// chunk), in token order, so every bucket lists its positions in order.
static __global__ void bucket_scatter_kernel(int32_t* sorted, int32_t* cursors, const int32_t* tokens, int64_t n,
                                             int64_t vocab, int64_t per, int64_t chunks) {
  for (int64_t ch = grid_first(); ch < chunks; ch += grid_stride())
    for (int64_t i = ch * per; i < n && i < (ch + 1) * per; ++i) {
      const int32_t tok = tokens[i];
      if (tok >= 0 && tok < vocab) sorted[cursors[(tok / kVocabRows) * chunks + ch]++] = int32_t(i);
    }
}

// grid (buckets, column blocks): d_wte rows [v0, v0 + kVocabRows), columns
// [c0, c0 + kCols), from the bucket's token positions sorted[starts[b] .. starts[b+1]).
template <class G, class T>
static __global__ void embedding_backward_wte_kernel(G* d_wte, const T* d_out, const int32_t* tokens,
                                                     const int32_t* sorted, const int32_t* starts, int64_t c,
                                                     int64_t vocab) {
  __shared__ Shared<float[kVocabRows][kCols]> acc;
  __shared__ Shared<int[kVocabRows]> touched;
  __shared__ Shared<int32_t[kTokenChunk]> staged_pos, staged_row;
  const int64_t v0 = int64_t(blockIdx.x) * kVocabRows, col = int64_t(blockIdx.y) * kCols + threadIdx.x;
  const int64_t begin = starts[blockIdx.x], end = starts[blockIdx.x + 1];
  if (begin == end) return;  // no token in the bucket: the whole block leaves
  for (int v = 0; v < kVocabRows; ++v) acc[v][threadIdx.x] = 0.0f;
  for (int v = threadIdx.x; v < kVocabRows; v += blockDim.x) touched[v] = 0;
  for (int64_t n0 = begin; n0 < end; n0 += kTokenChunk) {
    __syncthreads();  // the previous chunk is consumed
    const int count = end - n0 < kTokenChunk ? int(end - n0) : kTokenChunk;
    for (int k = threadIdx.x; k < count; k += blockDim.x) {
      const int32_t pos = sorted[n0 + k];
      staged_pos[k] = pos;
      staged_row[k] = int32_t(tokens[pos] - v0);
    }
    __syncthreads();
    for (int k = 0; k < count; ++k) {
      const int v = staged_row[k];
      if (col < c) acc[v][threadIdx.x] += load(d_out[int64_t(staged_pos[k]) * c + col]);
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
  if (n == 0) return;
  const int64_t buckets = (vocab + kVocabRows - 1) / kVocabRows, per = count_chunk_tokens(n);
  const int64_t chunks = (n + per - 1) / per, m = buckets * chunks;
  // Scratch (i32): counts / cursors (buckets, chunks), starts (buckets + 1), sorted (n).
  auto* counts = static_cast<int32_t*>(ctx.scratch->get(size_t(m + buckets + 1 + n) * sizeof(int32_t)));
  int32_t* starts = counts + m;
  int32_t* sorted = starts + buckets + 1;
  const auto* tokens = static_cast<const int32_t*>(a.tokens.ptr<int32_t>());
  launch(zero_kernel, blocks_for(m, kThreads), kThreads, 0, ctx.stream, counts, m);
  launch(bucket_count_kernel, blocks_for(chunks, kThreads), kThreads, 0, ctx.stream, counts, tokens, n, vocab, per,
         chunks);
  launch(bucket_scan_kernel, 1, kScanThreads, 0, ctx.stream, counts, starts, m, chunks);
  launch(bucket_scatter_kernel, blocks_for(chunks, kThreads), kThreads, 0, ctx.stream, sorted, counts, tokens, n,
         vocab, per, chunks);
  const dim3 grid(unsigned(buckets), unsigned((c + kCols - 1) / kCols));
  launch(embedding_backward_wte_kernel<G, T>, grid, kCols, 0, ctx.stream, a.d_wte.ptr<G>(),
         static_cast<const T*>(a.d_out.ptr<T>()), tokens, static_cast<const int32_t*>(sorted),
         static_cast<const int32_t*>(starts), c, vocab);
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
