// CUDA reductions: the global gradient norm, the count of non-finite elements, and
// the bias gradient of matmul (column sums).
// Invariant: deterministic and two-pass, never serial over a whole buffer. Buffers
// are cut into fixed chunks of kChunk elements (not tied to the grid), each block
// writes its chunk's partial to its own scratch slot, and one block adds the slots in
// a fixed order. The bias gradient cuts rows into chunks of kBiasChunkRows: one
// thread per (chunk, column) sums its rows in order, and add_partials adds the
// chunks in a fixed order. Same inputs, same bits, every run.
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

namespace {
constexpr int64_t kChunk = int64_t(1) << 14;
constexpr int64_t kBiasChunkRows = 64;
int64_t chunks_of(int64_t n) { return (n + kChunk - 1) / kChunk; }
}  // namespace

// partials[chunk] = sum of x^2 over the chunk, in double.
template <class T>
static __global__ void sum_squares_kernel(double* partials, const T* x, int64_t n) {
  __shared__ Shared<double[32]> buf;
  const int64_t begin = int64_t(blockIdx.x) * kChunk, end = begin + kChunk < n ? begin + kChunk : n;
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const double v = load(x[i]);
    acc += v * v;
  }
  acc = block_sum(acc, buf);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

static __global__ void norm_finish_kernel(float* out, const double* partials, int64_t count) {
  __shared__ Shared<double[32]> buf;
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc, buf);
  if (threadIdx.x == 0) *out = float(sqrt(acc));
}

// An element is NaN or Inf exactly when its exponent field is all ones.
template <class Bits>
static __global__ void count_nonfinite_kernel(unsigned long long* partials, const Bits* x, int64_t n, Bits exponent) {
  __shared__ Shared<double[32]> buf;
  const int64_t begin = int64_t(blockIdx.x) * kChunk, end = begin + kChunk < n ? begin + kChunk : n;
  double count = 0;  // exact below 2^53; a block reduction of doubles avoids a 64-bit int one
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) count += (x[i] & exponent) == exponent ? 1.0 : 0.0;
  count = block_sum(count, buf);
  if (threadIdx.x == 0) partials[blockIdx.x] = (unsigned long long)count;
}

// Integer partials below 2^53 each: their double sums are exact in any order.
static __global__ void count_finish_kernel(int32_t* out, const unsigned long long* partials, int64_t count) {
  __shared__ Shared<double[32]> buf;
  double total = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) total += double(partials[i]);
  total = block_sum(total, buf);
  if (threadIdx.x == 0) *out = total > double(0x7fffffff) ? 0x7fffffff : int32_t(total);  // saturate: still "skip the step"
}

// grid (row chunks, column tiles): partials[chunk, col] = sum over the chunk's rows
// (in order) of d_out[row, col]; a warp reads 32 neighbouring columns of a row.
template <class T>
static __global__ void bias_partials_kernel(float* partials, const T* d_out, int64_t rows, int64_t cols) {
  const int64_t col = int64_t(blockIdx.y) * blockDim.x + threadIdx.x, chunk = blockIdx.x;
  if (col >= cols) return;
  const int64_t r0 = chunk * kBiasChunkRows, r1 = r0 + kBiasChunkRows < rows ? r0 + kBiasChunkRows : rows;
  float sum = 0.0f;
  for (int64_t r = r0; r < r1; ++r) sum += load(d_out[r * cols + col]);
  partials[chunk * cols + col] = sum;
}

void global_norm(const ops::GlobalNormArgs& a, const Context& c) {
  int64_t count = 0;
  for (const TensorView& t : a.inputs) count += chunks_of(t.numel());
  double* partials = static_cast<double*>(c.scratch->get(size_t(count) * sizeof(double)));
  int64_t at = 0;
  for (const TensorView& t : a.inputs) {
    dispatch_float(t.dtype, [&](auto tag) {
      using T = decltype(tag);
      launch(sum_squares_kernel<T>, unsigned(chunks_of(t.numel())), kThreads, 0, c.stream, partials + at,
             static_cast<const T*>(t.ptr<T>()), t.numel());
    });
    at += chunks_of(t.numel());
  }
  launch(norm_finish_kernel, 1, kThreads, 0, c.stream, a.out.ptr<float>(), static_cast<const double*>(partials), count);
}

void count_nonfinite(const ops::CountNonfiniteArgs& a, const Context& c) {
  int64_t count = 0;
  for (const TensorView& t : a.inputs) count += chunks_of(t.numel());
  auto* partials = static_cast<unsigned long long*>(c.scratch->get(size_t(count) * sizeof(unsigned long long)));
  int64_t at = 0;
  for (const TensorView& t : a.inputs) {
    const unsigned grid = unsigned(chunks_of(t.numel()));
    if (t.dtype == DType::f32)
      launch(count_nonfinite_kernel<uint32_t>, grid, kThreads, 0, c.stream, partials + at,
             static_cast<const uint32_t*>(t.ptr<uint32_t>()), t.numel(), uint32_t(0x7f800000u));
    else
      launch(count_nonfinite_kernel<uint16_t>, grid, kThreads, 0, c.stream, partials + at,
             static_cast<const uint16_t*>(t.ptr<uint16_t>()), t.numel(),
             uint16_t(t.dtype == DType::bf16 ? 0x7f80u : 0x7c00u));
    at += grid;
  }
  launch(count_finish_kernel, 1, kThreads, 0, c.stream, a.out.ptr<int32_t>(),
         static_cast<const unsigned long long*>(partials), count);
}

void bias_grad(const TensorView& d_bias, const TensorView& d_out, const Context& c) {
  const int64_t cols = d_out.shape[d_out.ndim - 1], rows = d_out.numel() / cols;
  const int64_t chunks = (rows + kBiasChunkRows - 1) / kBiasChunkRows;
  float* partials = static_cast<float*>(c.scratch->get(size_t(chunks * cols) * sizeof(float)));  // (chunks, cols)
  dispatch_float(d_out.dtype, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(unsigned(chunks), unsigned((cols + kThreads - 1) / kThreads));
    launch(bias_partials_kernel<T>, grid, kThreads, 0, c.stream, partials, static_cast<const T*>(d_out.ptr<T>()), rows,
           cols);
    add_partials<T>(d_bias, static_cast<const float*>(partials), chunks, cols, c);
  });
}

}  // namespace strata::STRATA_CUDA_NS
