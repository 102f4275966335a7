#include "../ops.h"

namespace strata::ops {

const std::vector<OpInfo>& op_registry() {
  // name, cpu, cuda
  static const std::vector<OpInfo> ops = {
      {"matmul_forward", true, false},        {"matmul_backward", true, false},
      {"embedding_forward", true, false},     {"embedding_backward", true, false},
      {"norm_forward", true, false},          {"norm_backward", true, false},
      {"gelu_forward", true, false},          {"gelu_backward", true, false},
      {"swiglu_forward", true, false},        {"swiglu_backward", true, false},
      {"rope_forward", true, false},          {"rope_backward", true, false},
      {"attention_forward", true, false},     {"attention_backward", true, false},
      {"dropout_forward", true, false},       {"dropout_backward", true, false},
      {"add", true, false},                   {"scale", true, false},
      {"cast", true, false},                  {"accumulate", true, false},
      {"fill_zero", true, false},             {"cross_entropy_forward", true, false},
      {"cross_entropy_backward", true, false}, {"adamw_step", true, false},
      {"global_norm", true, false},           {"count_nonfinite", true, false},
  };
  return ops;
}

}  // namespace strata::ops
