// CUDA matmul through cuBLASLt: out = inp @ weight^T (+ bias, fused as the cuBLASLt
// bias epilogue; with gelu_pre, the GELU_AUX(_BIAS) epilogue writes the pre-activation
// to gelu_pre and GELU of it to out), and its backward (d_inp assigned, d_weight accumulated with beta =
// 1, in weight's dtype or f32). Row-major tensors are handed to cuBLASLt as their
// column-major transposes. Compiled by nvcc only: GEMMs are checked on hardware, not
// in the emulator (the bias gradient is a custom kernel, reduce.cu, and is emulated).
// Where cuBLASLt cannot take the GELU epilogue (OC not a multiple of 8, or no
// algorithm for it), the GEMM writes gelu_pre and activation.cu's GELU kernel follows.
// Invariant: f32 runs in true f32 (CUBLAS_COMPUTE_32F, no TF32: fp32 is the reference
// mode); bf16 / f16 accumulate in f32.
#include <cublasLt.h>

#include <string>

#include "kernel_util.cuh"
#include "strata/error.h"

#define STRATA_CUBLAS_CHECK(expr)                                                                            \
  do {                                                                                                       \
    cublasStatus_t strata_status_ = (expr);                                                                  \
    if (strata_status_ != CUBLAS_STATUS_SUCCESS)                                                             \
      ::strata::detail::throw_call_error(#expr, "cuBLAS status " + std::to_string(int(strata_status_)),       \
                                         __FILE__, __LINE__);                                                \
  } while (0)

namespace strata::cuda {

namespace {

cudaDataType_t data_type(DType t) {
  switch (t) {
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

struct Operand {
  const void* data;
  DType dtype;
  int64_t ld;
  bool trans;
};

// What cuBLASLt fuses after the product: a bias per row of D, and GELU with the
// pre-activation written to gelu_aux (same layout and dtype as D).
struct Epilogue {
  const void* bias = nullptr;
  void* gelu_aux = nullptr;
};

// D (m, n, column-major, ld = ldd) = epilogue(op(A) op(B) + beta D). Returns false,
// having enqueued nothing, when cuBLASLt has no algorithm and `optional` is set.
bool gemm(const Context& c, int64_t m, int64_t n, int64_t k, Operand a, Operand b, void* d, DType d_type, int64_t ldd,
          float beta, Epilogue e, bool optional = false) {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  STRATA_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = a.trans ? CUBLAS_OP_T : CUBLAS_OP_N, tb = b.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
  STRATA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  STRATA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  if (e.bias || e.gelu_aux) {
    const cublasLtEpilogue_t epilogue = !e.gelu_aux ? CUBLASLT_EPILOGUE_BIAS
                                        : e.bias    ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                                                    : CUBLASLT_EPILOGUE_GELU_AUX;
    STRATA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  }
  if (e.bias)
    STRATA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &e.bias, sizeof e.bias));
  if (e.gelu_aux) {
    const int64_t aux_ld = ldd;  // in elements; the caller ensures a multiple of 8
    STRATA_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &e.gelu_aux, sizeof e.gelu_aux));
    STRATA_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld));
  }
  STRATA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&la, data_type(a.dtype), a.trans ? k : m, a.trans ? m : k, a.ld));
  STRATA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lb, data_type(b.dtype), b.trans ? n : k, b.trans ? k : n, b.ld));
  STRATA_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ld, data_type(d_type), m, n, ldd));
  STRATA_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  STRATA_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                           &c.blas_workspace_bytes, sizeof c.blas_workspace_bytes));
  auto handle = static_cast<cublasLtHandle_t>(c.blas);
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  // An epilogue the library does not offer for this shape is NOT_SUPPORTED here.
  const cublasStatus_t h = cublasLtMatmulAlgoGetHeuristic(handle, op, la, lb, ld, ld, pref, 1, &result, &found);
  if (h != CUBLAS_STATUS_NOT_SUPPORTED || !optional) STRATA_CUBLAS_CHECK(h);
  const bool run = h == CUBLAS_STATUS_SUCCESS && found > 0;
  STRATA_CHECK(run || optional, "matmul: cuBLASLt has no algorithm for m " << m << " n " << n << " k " << k);
  const float alpha = 1.0f;
  if (run)
    STRATA_CUBLAS_CHECK(cublasLtMatmul(handle, op, &alpha, a.data, la, b.data, lb, &beta, d, ld, d, ld, &result.algo,
                                       c.blas_workspace, c.blas_workspace_bytes, static_cast<cudaStream_t>(c.stream)));
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(ld);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatmulDescDestroy(op);
  return run;
}

}  // namespace

// Row-major out (N, OC) is column-major out' (OC, N) = W'^T (OC x IC) inp' (IC x N).
// With the GELU epilogue, D is out and the aux matrix gelu_pre.
void matmul_forward(const ops::MatmulForwardArgs& a, const Context& c) {
  const int64_t oc = a.weight.shape[0], ic = a.weight.shape[1], n = a.inp.numel() / ic;
  const Operand w{a.weight.data, a.weight.dtype, ic, true}, x{a.inp.data, a.inp.dtype, ic, false};
  const void* bias = a.bias.defined() ? a.bias.data : nullptr;
  if (a.gelu_pre.defined()) {
    if (oc % 8 == 0 && gemm(c, oc, n, ic, w, x, a.out.data, a.out.dtype, oc, 0.0f, {bias, a.gelu_pre.data}, true))
      return;
    gemm(c, oc, n, ic, w, x, a.gelu_pre.data, a.gelu_pre.dtype, oc, 0.0f, {bias, nullptr});
    gelu_forward({a.out, a.gelu_pre}, c);
    return;
  }
  gemm(c, oc, n, ic, w, x, a.out.data, a.out.dtype, oc, 0.0f, {bias, nullptr});
}

// d_inp' (IC, N) = W' (IC x OC) d_out' (OC x N);  d_weight' (IC, OC) += inp' (IC x N) d_out'^T (N x OC).
void matmul_backward(const ops::MatmulBackwardArgs& a, const Context& c) {
  const int64_t oc = a.weight.shape[0], ic = a.weight.shape[1], n = a.inp.numel() / ic;
  if (a.d_inp.defined())
    gemm(c, ic, n, oc, {a.weight.data, a.weight.dtype, ic, false}, {a.d_out.data, a.d_out.dtype, oc, false},
         a.d_inp.data, a.d_inp.dtype, ic, 0.0f, {});
  if (a.d_weight.defined())
    gemm(c, ic, oc, n, {a.inp.data, a.inp.dtype, ic, false}, {a.d_out.data, a.d_out.dtype, oc, true},
         a.d_weight.data, a.d_weight.dtype, ic, 1.0f, {});
  if (a.d_bias.defined()) bias_grad(a.d_bias, a.d_out, c);
}

}  // namespace strata::cuda
