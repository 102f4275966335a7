// The hyper-parameter half of ops::AdamWArgs, filled in one place for every caller
// (AdamW, ZeRO shards, offload tiles, LoRA adapters); callers set the tensors.
#pragma once
#include "ops.h"
#include "strata/optim.h"

namespace strata {

// Weight decay per adamw_decays() for parameter p; with p null, the options' decay.
inline ops::AdamWArgs adamw_args(const AdamWOptions& o, const ParamInfo* p, float lr, float grad_scale, int64_t t) {
  ops::AdamWArgs a;
  a.lr = lr;
  a.beta1 = o.beta1;
  a.beta2 = o.beta2;
  a.eps = o.eps;
  a.weight_decay = !p || adamw_decays(o, *p) ? o.weight_decay : 0.0f;
  a.grad_scale = grad_scale;
  a.step = t;
  return a;
}

}  // namespace strata
