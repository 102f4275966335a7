// The unit interface is public (strata/unit.h); this adds what only the library's
// own units and the Model use: the kernels' op header and the head's inference path.
#pragma once
#include "ops.h"
#include "strata/unit.h"

namespace strata {

// Throws unless `head` is the built-in LM head: what logits and decoding need. Called
// before they run anything, so a refused call changes no state (no KV-cache step).
void require_lm_head(const Unit& head);
// The built-in head's inference path: logits (B, V) f32 of rows x (B, C).
void head_logits(Unit& head, const UnitContext& ctx, const UnitParams& p, const TensorView& x,
                 const TensorView& logits);

}  // namespace strata
