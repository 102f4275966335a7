#include "../ops.h"

namespace strata::ops {

namespace {
// Every op has a CUDA implementation (kernels/cuda), present when the build has CUDA.
#if defined(STRATA_WITH_CUDA)
constexpr bool kCuda = true;
#else
constexpr bool kCuda = false;
#endif
}  // namespace

const std::vector<OpInfo>& op_registry() {
  // name, cpu, cuda
  static const std::vector<OpInfo> ops = {
      {"matmul_forward", true, kCuda},        {"matmul_backward", true, kCuda},
      {"embedding_forward", true, kCuda},     {"embedding_backward", true, kCuda},
      {"norm_forward", true, kCuda},          {"norm_backward", true, kCuda},
      {"residual_norm_forward", true, kCuda}, {"residual_norm_backward", true, kCuda},
      {"gelu_forward", true, kCuda},          {"gelu_backward", true, kCuda},
      {"swiglu_forward", true, kCuda},        {"swiglu_backward", true, kCuda},
      {"rope_forward", true, kCuda},          {"rope_backward", true, kCuda},
      {"attention_forward", true, kCuda},     {"attention_backward", true, kCuda},
      {"attention_decode", true, kCuda},
      {"dropout_forward", true, kCuda},       {"dropout_backward", true, kCuda},
      {"add", true, kCuda},                   {"scale", true, kCuda},
      {"cast", true, kCuda},                  {"accumulate", true, kCuda},
      {"fill_zero", true, kCuda},             {"cross_entropy_forward", true, kCuda},
      {"cross_entropy_backward", true, kCuda}, {"adamw_step", true, kCuda},
      {"global_norm", true, kCuda},           {"count_nonfinite", true, kCuda},
  };
  return ops;
}

}  // namespace strata::ops
