// CUDA matmul through cuBLASLt: out = inp @ weight^T (+ bias, fused as the cuBLASLt
// bias epilogue; with gelu_pre, the GELU_AUX(_BIAS) epilogue writes the pre-activation
// to gelu_pre and GELU of it to out), and its backward (d_inp assigned, d_weight accumulated with beta =
// 1, in weight's dtype or f32). Row-major tensors are handed to cuBLASLt as their
// column-major transposes. Compiled by nvcc only: GEMMs are checked on hardware, not
// in the emulator (the bias gradient is a custom kernel, reduce.cu, and is emulated).
// Where cuBLASLt cannot take the GELU epilogue (OC not a multiple of 8, or no
// algorithm for it), the GEMM writes gelu_pre and activation.cu's GELU kernel follows.
// Each distinct GEMM (gemm_plan.h's key: shape, dtypes, transposes, epilogue, operand
// alignments) gets its descriptor, layouts and heuristic algorithm once, cached per
// device (GemmPlans, owned by runtime.cu's DeviceState); the workspace is one arena
// allocation per device. A failing cuBLAS status names the GEMM (gemm::describe).
// Invariant: f32 runs in true f32 (CUBLAS_COMPUTE_32F, no TF32: fp32 is the reference
// mode); bf16 / f16 accumulate in f32.
#include <cublasLt.h>

#include <string>
#include <utility>

#include "gemm_plan.h"
#include "kernel_util.cuh"
#include "strata/error.h"

// A cuBLAS call of one GEMM: a failure names its status and the GEMM (shape, dtypes,
// alignments, epilogue).
#define STRATA_CUBLAS_CHECK_GEMM(expr, key)                                                                 \
  do {                                                                                                      \
    cublasStatus_t strata_status_ = (expr);                                                                 \
    if (strata_status_ != CUBLAS_STATUS_SUCCESS)                                                            \
      ::strata::detail::throw_call_error(#expr, ::strata::cuda::status_text(strata_status_) + " in " +     \
                                                    ::strata::gemm::describe(key),                          \
                                         __FILE__, __LINE__);                                               \
  } while (0)

namespace strata::cuda {

namespace {

std::string status_text(cublasStatus_t s) {
  return std::string("cuBLAS status ") + cublasLtGetStatusName(s) + " (" + cublasLtGetStatusString(s) + ")";
}

cudaDataType_t data_type(DType t) {
  switch (t) {
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

cublasLtEpilogue_t epilogue_value(gemm::Epilogue e) {
  switch (e) {
    case gemm::Epilogue::bias: return CUBLASLT_EPILOGUE_BIAS;
    case gemm::Epilogue::gelu_aux: return CUBLASLT_EPILOGUE_GELU_AUX;
    case gemm::Epilogue::gelu_aux_bias: return CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    default: return CUBLASLT_EPILOGUE_DEFAULT;
  }
}

}  // namespace

// One GEMM's cuBLASLt objects and algorithm (found false: cuBLASLt has none).
struct GemmPlan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool found = false;

  GemmPlan() = default;
  GemmPlan(GemmPlan&& o) noexcept { swap(o); }
  GemmPlan& operator=(GemmPlan&& o) noexcept {
    swap(o);
    return *this;
  }
  ~GemmPlan() {
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (op) cublasLtMatmulDescDestroy(op);
  }
  void swap(GemmPlan& o) noexcept {
    std::swap(op, o.op), std::swap(la, o.la), std::swap(lb, o.lb), std::swap(ld, o.ld);
    std::swap(algo, o.algo), std::swap(found, o.found);
  }
};

class GemmPlans : public gemm::PlanCache<GemmPlan> {};

GemmPlans* gemm_plans_create() { return new GemmPlans; }
void gemm_plans_destroy(GemmPlans* plans) { delete plans; }

namespace {

// What cuBLASLt fuses after the product: a bias per row of D, and GELU with the
// pre-activation written to gelu_aux (same layout and dtype as D).
struct Epilogue {
  const void* bias = nullptr;
  void* gelu_aux = nullptr;
};

void set_epilogue_pointers(GemmPlan& p, const gemm::GemmKey& key, const Epilogue& e) {
  if (e.bias)
    STRATA_CUBLAS_CHECK_GEMM(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &e.bias, sizeof e.bias), key);
  if (e.gelu_aux)
    STRATA_CUBLAS_CHECK_GEMM(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &e.gelu_aux, sizeof e.gelu_aux),
        key);
}

// The descriptor, layouts and heuristic's first algorithm for `key`, with alignment
// preferences saying how aligned the operands really are (strata's views are only
// 2- to 64-byte aligned; cuBLASLt otherwise assumes 256). The heuristic reads the
// bias and aux pointers' alignment from their values, so this call's are set first.
GemmPlan make_plan(const gemm::GemmKey& key, const Context& c, bool optional, const Epilogue& e) {
  GemmPlan p;
  STRATA_CUBLAS_CHECK_GEMM(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F), key);
  const cublasOperation_t ta = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, tb = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  STRATA_CUBLAS_CHECK_GEMM(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), key);
  STRATA_CUBLAS_CHECK_GEMM(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), key);
  const cublasLtEpilogue_t epilogue = epilogue_value(key.epilogue);
  STRATA_CUBLAS_CHECK_GEMM(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue), key);
  set_epilogue_pointers(p, key, e);
  if (e.gelu_aux) {
    const int64_t aux_ld = key.ldd;  // in elements; the caller ensures a multiple of 8
    STRATA_CUBLAS_CHECK_GEMM(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld), key);
  }
  const int64_t m = key.m, n = key.n, k = key.k;
  STRATA_CUBLAS_CHECK_GEMM(
      cublasLtMatrixLayoutCreate(&p.la, data_type(key.a), key.trans_a ? k : m, key.trans_a ? m : k, key.lda), key);
  STRATA_CUBLAS_CHECK_GEMM(
      cublasLtMatrixLayoutCreate(&p.lb, data_type(key.b), key.trans_b ? n : k, key.trans_b ? k : n, key.ldb), key);
  STRATA_CUBLAS_CHECK_GEMM(cublasLtMatrixLayoutCreate(&p.ld, data_type(key.d), m, n, key.ldd), key);

  cublasLtMatmulPreference_t pref = nullptr;
  STRATA_CUBLAS_CHECK_GEMM(cublasLtMatmulPreferenceCreate(&pref), key);
  struct PrefGuard {
    cublasLtMatmulPreference_t p;
    ~PrefGuard() { cublasLtMatmulPreferenceDestroy(p); }
  } guard{pref};
  STRATA_CUBLAS_CHECK_GEMM(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                                &c.blas_workspace_bytes, sizeof c.blas_workspace_bytes),
                           key);
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_d},  // C is D (in place, beta)
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d}};
  for (const auto& [attribute, bytes] : alignments)
    STRATA_CUBLAS_CHECK_GEMM(cublasLtMatmulPreferenceSetAttribute(pref, attribute, &bytes, sizeof bytes), key);

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  // An epilogue the library does not offer for this shape is NOT_SUPPORTED here.
  const cublasStatus_t h = cublasLtMatmulAlgoGetHeuristic(static_cast<cublasLtHandle_t>(c.blas), p.op, p.la, p.lb,
                                                          p.ld, p.ld, pref, 1, &result, &found);
  if (h != CUBLAS_STATUS_NOT_SUPPORTED || !optional) STRATA_CUBLAS_CHECK_GEMM(h, key);
  p.found = h == CUBLAS_STATUS_SUCCESS && found > 0;
  p.algo = result.algo;
  return p;
}

// D = epilogue(op(A) op(B) + beta D) for one call of gemm_plan.h. Returns false,
// having enqueued nothing, when cuBLASLt has no algorithm and `optional` is set.
bool gemm(const Context& c, const gemm::GemmCall& g, Epilogue e, bool optional = false) {
  const gemm::GemmKey key = gemm::key_of(g, e.bias, e.gelu_aux);
  const void* a_data = g.a.data;
  const void* b_data = g.b.data;
  void* d = g.d;
  const float beta = g.beta;
  STRATA_CHECK(c.blas_plans && c.blas_workspace, "matmul: the CUDA context has no cuBLASLt plans or workspace");
  return c.blas_plans->with(
      key, [&] { return make_plan(key, c, optional, e); },
      [&](GemmPlan& p) {
        STRATA_CHECK(p.found || optional, "matmul: cuBLASLt has no algorithm for this " << gemm::describe(key));
        if (!p.found) return false;
        // The pointers are per call: set on the shared descriptor, under the cache's lock.
        set_epilogue_pointers(p, key, e);
        const float alpha = 1.0f;
        STRATA_CUBLAS_CHECK_GEMM(cublasLtMatmul(static_cast<cublasLtHandle_t>(c.blas), p.op, &alpha, a_data, p.la,
                                                b_data, p.lb, &beta, d, p.ld, d, p.ld, &p.algo, c.blas_workspace,
                                                c.blas_workspace_bytes, static_cast<cudaStream_t>(c.stream)),
                                 key);
        if (sync_after_launch()) {  // STRATA_CUDA_SYNC=1: a fault here names this GEMM
          const cudaError_t status = cudaStreamSynchronize(static_cast<cudaStream_t>(c.stream));
          if (status != cudaSuccess)
            ::strata::detail::throw_call_error("cublasLtMatmul (STRATA_CUDA_SYNC=1: synchronized after it)",
                                               std::string(cudaGetErrorString(status)) + " in " + gemm::describe(key),
                                               __FILE__, __LINE__);
        }
        return true;
      });
}

}  // namespace

// The GEMMs' shapes and leading dimensions are gemm_plan.h's forward_call /
// input_grad_call / weight_grad_call. With the GELU epilogue, D is out and the aux
// matrix gelu_pre; a padded out (vocabulary) reaches cuBLASLt as ldd = Vp.
void matmul_forward(const ops::MatmulForwardArgs& a, const Context& c) {
  const int64_t oc = a.weight.shape[0];
  const void* bias = a.bias.defined() ? a.bias.data : nullptr;
  if (a.gelu_pre.defined()) {
    if (oc % 8 == 0 && gemm(c, gemm::forward_call(a, a.out), {bias, a.gelu_pre.data}, true)) return;
    gemm(c, gemm::forward_call(a, a.gelu_pre), {bias, nullptr});
    gelu_forward({a.out, a.gelu_pre}, c);
    return;
  }
  gemm(c, gemm::forward_call(a, a.out), {bias, nullptr});
}

void matmul_backward(const ops::MatmulBackwardArgs& a, const Context& c) {
  if (a.d_inp.defined()) gemm(c, gemm::input_grad_call(a), {});
  if (a.d_weight.defined()) gemm(c, gemm::weight_grad_call(a), {});
  if (a.d_bias.defined()) bias_grad(a.d_bias, a.d_out, c);
}

}  // namespace strata::cuda
