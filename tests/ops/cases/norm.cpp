// Reference cases for norm_forward / norm_backward (LayerNorm and RMSNorm) and the
// residual-fused residual_norm_forward / residual_norm_backward, for every backend:
// the double-precision reference of tests/ops/norm_reference.h, parameter gradients
// accumulated in the activation dtype and in f32. Shapes are {N, C}; every case runs
// LayerNorm (with bias) and RMSNorm. Finite differences, argument errors, the fused ops
// against add + norm and thread-count independence: tests/ops/test_norm.cpp.
#include "ops/norm_reference.h"

namespace strata::test {
namespace {

const std::vector<std::vector<int64_t>> kShapes = {{1, 1}, {3, 17}, {2, 1000}, {17, 3}, {130, 33}};

// The backward kernels sum a row's d xhat terms in another order than the CPU.
constexpr double kBackwardSlack = 4.0;

const char* norm_name(bool rms) { return rms ? "RMSNorm" : "LayerNorm"; }

// The parameter-gradient dtypes tried with activations of `dtype`: f32 params take one.
std::vector<DType> grad_dtypes(DType dtype) {
  return dtype == DType::f32 ? std::vector<DType>{dtype} : std::vector<DType>{dtype, DType::f32};
}

STRATA_OP_CASE(reference_case("norm_forward", kShapes, kAllFloat,
                              [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
                                for (bool rms : {false, true}) {
                                  const std::string what = norm_name(rms);
                                  NormCase k(dtype, dtype, shape[0], shape[1], rms);
                                  k.forward(e);
                                  NormReference ref(k);
                                  e.expect(what + " out", k.out, ref.out, tolerance_for(dtype));
                                  e.expect(what + " rstd", k.rstd, ref.rstd, tolerance_for(DType::f32));
                                  if (!rms) e.expect(what + " mean", k.mean, ref.mean, tolerance_for(DType::f32));
                                }
                              }));

STRATA_OP_CASE(reference_case("norm_backward", kShapes, kAllFloat,
                              [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
                                for (bool rms : {false, true})
                                  for (DType grad_dtype : grad_dtypes(dtype)) {
                                    const std::string what =
                                        std::string(norm_name(rms)) + ", grads " + dtype_name(grad_dtype) + ": ";
                                    NormCase k(dtype, grad_dtype, shape[0], shape[1], rms);
                                    NormReference ref(k);  // before the op accumulates into d_weight
                                    k.forward(e);
                                    k.backward(e);
                                    e.expect(what + "d_inp", k.d_inp, ref.d_inp, tolerance_for(dtype));
                                    e.expect(what + "d_weight", k.d_weight, ref.d_weight, tolerance_for(grad_dtype));
                                    if (!rms)
                                      e.expect(what + "d_bias", k.d_bias, ref.d_bias, tolerance_for(grad_dtype));
                                  }
                              },
                              kBackwardSlack));

// Forward (and backward): out of place, and in place (res_out = y, d_res = d_resid).
// The norm's reference is taken of res_out as stored, so on another backend it reads
// the device's res_out (expect copies each output back).
void residual_norm_case(OpEnv& e, DType dtype, const std::vector<int64_t>& shape, bool backward) {
  for (bool rms : {false, true})
    for (DType grad_dtype : backward ? grad_dtypes(dtype) : std::vector<DType>{dtype})
      for (bool in_place : {false, true}) {
        const std::string what = std::string(norm_name(rms)) + ", grads " + dtype_name(grad_dtype) +
                                 (in_place ? ", in place: " : ": ");
        ResidualNormCase r(dtype, grad_dtype, shape[0], shape[1], rms);
        const std::vector<double> want_res = elementwise_sum(r.x, r.y.values());
        ops::ResidualNormForwardArgs f = r.forward_args(env_view(e));
        if (in_place) f.res_out = f.y;
        ops::residual_norm_forward(f, e.stream());
        HostTensor& res = in_place ? r.y : r.k.inp;
        e.expect(what + "res_out", res, want_res, tolerance_for(dtype));
        if (in_place) r.k.inp.set_values(r.y.values());  // the reference's input
        NormReference ref(r.k);
        if (!backward) {
          e.expect(what + "out", r.k.out, ref.out, tolerance_for(dtype));
          e.expect(what + "rstd", r.k.rstd, ref.rstd, tolerance_for(DType::f32));
          if (!rms) e.expect(what + "mean", r.k.mean, ref.mean, tolerance_for(DType::f32));
          continue;
        }
        const std::vector<double> want_d_res = elementwise_sum(r.d_resid, ref.d_inp);
        ops::ResidualNormBackwardArgs b = r.backward_args(env_view(e));
        if (in_place) b.inp = e.at(r.y), b.d_res = b.d_resid;
        ops::residual_norm_backward(b, e.stream());
        e.expect(what + "d_res", in_place ? r.d_resid : r.d_res, want_d_res, tolerance_for(dtype));
        e.expect(what + "d_weight", r.k.d_weight, ref.d_weight, tolerance_for(grad_dtype));
        if (!rms) e.expect(what + "d_bias", r.k.d_bias, ref.d_bias, tolerance_for(grad_dtype));
      }
}

STRATA_OP_CASE(reference_case("residual_norm_forward", kShapes, kAllFloat,
                              [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) {
                                residual_norm_case(e, dtype, shape, false);
                              }));

STRATA_OP_CASE(reference_case(
    "residual_norm_backward", kShapes, kAllFloat,
    [](OpEnv& e, DType dtype, const std::vector<int64_t>& shape) { residual_norm_case(e, dtype, shape, true); },
    kBackwardSlack));

}  // namespace
}  // namespace strata::test
