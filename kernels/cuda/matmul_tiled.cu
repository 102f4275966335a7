// A plain tiled GEMM for matmul_forward / matmul_backward: the path the CUDA emulator
// runs (cuBLASLt cannot be emulated), also built by nvcc so strata-selftest checks the
// same kernel on hardware next to cuBLASLt. Register-blocked: few threads and few
// barriers per output, which is also what keeps the emulator (a fiber switch per
// thread per barrier) fast enough for whole training runs in CI.
// Invariant: each output sums its K products in ascending k, in f32, and is rounded
// once (after adding beta * D and the bias), so results do not depend on the grid;
// d_inp is assigned, d_weight accumulated (beta = 1), as matmul.cu does.
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

namespace {

// A block of 16 x 16 threads computes a 64 x 64 tile of D, each thread 4 x 4 outputs
// strided by 16 (so neighbouring threads touch neighbouring columns); K is staged
// through shared memory 32 at a time.
constexpr int kThreadsSide = 16, kPerThread = 4, kTile = kThreadsSide * kPerThread, kTileK = 32;

// A strided operand: element (i, k) is data[i * row + k * col].
template <class T>
struct Strided {
  const T* data;
  int64_t row, col;
};

// D (M, N, row-major, row stride ldd >= N) = beta * D + sum_k A(m, k) B(n, k) (+ bias[n]).
template <class TI, class TO>
static __global__ void gemm_tiled_kernel(TO* d, int64_t ldd, Strided<TI> a, Strided<TI> b, const TI* bias,
                                         int64_t M, int64_t N, int64_t K, float beta) {
  __shared__ Shared<float[kTile][kTileK + 1]> a_tile;  // (m, k); +1 staggers the banks
  __shared__ Shared<float[kTile][kTileK + 1]> b_tile;  // (n, k)
  const int tx = int(threadIdx.x), ty = int(threadIdx.y), t = ty * kThreadsSide + tx;
  const int64_t m0 = int64_t(blockIdx.y) * kTile, n0 = int64_t(blockIdx.x) * kTile;
  float acc[kPerThread][kPerThread] = {};
  for (int64_t k0 = 0; k0 < K; k0 += kTileK) {
    // 256 threads stage 64 x 32 elements of each operand, 8 each.
    for (int e = t; e < kTile * kTileK; e += kThreadsSide * kThreadsSide) {
      const int i = e / kTileK, kk = e % kTileK;
      const int64_t k = k0 + kk;
      a_tile[i][kk] = m0 + i < M && k < K ? load(a.data[(m0 + i) * a.row + k * a.col]) : 0.0f;
      b_tile[i][kk] = n0 + i < N && k < K ? load(b.data[(n0 + i) * b.row + k * b.col]) : 0.0f;
    }
    __syncthreads();
    const int kn = int(K - k0 < kTileK ? K - k0 : kTileK);
    for (int kk = 0; kk < kn; ++kk) {
      float av[kPerThread], bv[kPerThread];  // each shared element read once per kk
      for (int i = 0; i < kPerThread; ++i) av[i] = a_tile[ty + i * kThreadsSide][kk];
      for (int j = 0; j < kPerThread; ++j) bv[j] = b_tile[tx + j * kThreadsSide][kk];
      for (int i = 0; i < kPerThread; ++i)
        for (int j = 0; j < kPerThread; ++j) acc[i][j] += av[i] * bv[j];
    }
    __syncthreads();
  }
  for (int i = 0; i < kPerThread; ++i)
    for (int j = 0; j < kPerThread; ++j) {
      const int64_t m = m0 + ty + i * kThreadsSide, n = n0 + tx + j * kThreadsSide;
      if (m >= M || n >= N) continue;
      float v = acc[i][j];
      if (beta != 0.0f) v += beta * load(d[m * ldd + n]);
      if (bias) v += load(bias[n]);
      d[m * ldd + n] = store<TO>(v);
    }
}

template <class TI, class TO>
void gemm_tiled(TO* d, int64_t ldd, Strided<TI> a, Strided<TI> b, const TI* bias, int64_t M, int64_t N, int64_t K,
                float beta, const Context& c) {
  const dim3 grid(unsigned((N + kTile - 1) / kTile), unsigned((M + kTile - 1) / kTile));
  launch(gemm_tiled_kernel<TI, TO>, grid, dim3(kThreadsSide, kThreadsSide), 0, c.stream, d, ldd, a, b, bias, M, N,
         K, beta);
}

}  // namespace

// out (N, OC) = inp (N, IC) weight (OC, IC)^T + bias; with gelu_pre, the GEMM writes
// the pre-activation there and activation.cu's GELU kernel makes out from it, so out
// is bitwise gelu_forward of the rounded pre-activation, as on the CPU.
void matmul_tiled_forward(const ops::MatmulForwardArgs& a, const Context& c) {
  const int64_t oc = a.weight.shape[0], ic = a.weight.shape[1], n = a.inp.numel() / ic;
  const TensorView& d = a.gelu_pre.defined() ? a.gelu_pre : a.out;
  dispatch_float(a.weight.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* bias = a.bias.defined() ? a.bias.ptr<const T>() : nullptr;
    gemm_tiled<T, T>(d.ptr<T>(), d.size(-1), {a.inp.ptr<const T>(), ic, 1}, {a.weight.ptr<const T>(), ic, 1}, bias, n, oc, ic,
                     0.0f, c);
  });
  if (a.gelu_pre.defined()) gelu_forward({a.out, a.gelu_pre}, c);
}

// d_inp (N, IC) = d_out (N, OC) weight (OC, IC);  d_weight (OC, IC) += d_out^T inp.
void matmul_tiled_backward(const ops::MatmulBackwardArgs& a, const Context& c) {
  const int64_t oc = a.weight.shape[0], ic = a.weight.shape[1], n = a.inp.numel() / ic;
  const int64_t ld_out = a.d_out.size(-1);  // oc unless d_out_padded
  dispatch_float(a.weight.dtype, [&](auto tag) {
    using T = decltype(tag);
    if (a.d_inp.defined())
      gemm_tiled<T, T>(a.d_inp.ptr<T>(), ic, {a.d_out.ptr<const T>(), ld_out, 1}, {a.weight.ptr<const T>(), 1, ic},
                       nullptr, n, ic, oc, 0.0f, c);
    if (a.d_weight.defined()) {
      const Strided<T> d_out_t{a.d_out.ptr<const T>(), 1, ld_out}, inp_t{a.inp.ptr<const T>(), 1, ic};
      if (a.d_weight.dtype == DType::f32)
        gemm_tiled<T, float>(a.d_weight.ptr<float>(), ic, d_out_t, inp_t, nullptr, oc, ic, n, 1.0f, c);
      else
        gemm_tiled<T, T>(a.d_weight.ptr<T>(), ic, d_out_t, inp_t, nullptr, oc, ic, n, 1.0f, c);
    }
  });
  if (a.d_bias.defined()) bias_grad(a.d_bias, a.d_out, c);
}

#if defined(STRATA_CUDA_EMULATION)
// The emulator has no cuBLASLt (matmul.cu is left out): the matmul ops are the tiled kernel.
void matmul_forward(const ops::MatmulForwardArgs& a, const Context& c) { matmul_tiled_forward(a, c); }
void matmul_backward(const ops::MatmulBackwardArgs& a, const Context& c) { matmul_tiled_backward(a, c); }
#endif

}  // namespace strata::STRATA_CUDA_NS
