// What the transformer block's training path (block.cpp) and its inference path
// (decode.cpp) share: the slots of the block's parameters and the rope arguments.
// Invariant: the slot order is param_specs() order; absent parameters keep their slot.
#pragma once
#include "ops.h"
#include "strata/model.h"

namespace strata {

enum BlockParam : int { kLn1W, kLn1B, kQkvW, kQkvB, kProjW, kProjB, kLn2W, kLn2B, kFcW, kFcB, kFc2W, kFc2B };

// The public config's scaling as the rope op's arguments.
inline RopeScalingArgs rope_scaling_args(const RopeScaling& r) {
  const RopeScalingType type = r.kind == RopeScalingKind::linear   ? RopeScalingType::linear
                               : r.kind == RopeScalingKind::llama3 ? RopeScalingType::llama3
                                                                   : RopeScalingType::none;
  return {type, r.factor, r.low_freq_factor, r.high_freq_factor, float(r.original_max_seq)};
}

}  // namespace strata
