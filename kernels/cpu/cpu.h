// The CPU backend: one implementation per op of kernels/ops.h, called by the op's
// entry point after its arguments are checked. Kernels run on the calling thread
// and parallelise inside with oneTBB; GEMMs go to OpenBLAS (single-threaded per
// call, so oneTBB owns every core and nothing oversubscribes).
#pragma once
#include "../ops.h"

namespace strata::ops {
struct Backend;
}

namespace strata::cpu {

// This backend's op table (backend.cpp): every op below.
const ops::Backend& backend();

void matmul_forward(const ops::MatmulForwardArgs& a);
void matmul_backward(const ops::MatmulBackwardArgs& a);
void embedding_forward(const ops::EmbeddingForwardArgs& a);
void embedding_backward(const ops::EmbeddingBackwardArgs& a);
void norm_forward(const ops::NormForwardArgs& a);
void norm_backward(const ops::NormBackwardArgs& a);
void residual_norm_forward(const ops::ResidualNormForwardArgs& a);
void residual_norm_backward(const ops::ResidualNormBackwardArgs& a);
void gelu_forward(const ops::GeluForwardArgs& a);
void gelu_backward(const ops::GeluBackwardArgs& a);
void swiglu_forward(const ops::SwigluForwardArgs& a);
void swiglu_backward(const ops::SwigluBackwardArgs& a);
void rope_forward(const ops::RopeArgs& a);
void rope_backward(const ops::RopeArgs& a);
void attention_forward(const ops::AttentionForwardArgs& a);
void attention_backward(const ops::AttentionBackwardArgs& a);
void attention_decode(const ops::AttentionDecodeArgs& a);
void dropout_forward(const ops::DropoutArgs& a);
void dropout_backward(const ops::DropoutArgs& a);
void add(const ops::AddArgs& a);
void scale(const ops::ScaleArgs& a);
void cast(const ops::CastArgs& a);
void accumulate(const ops::AccumulateArgs& a);
void fill_zero(const TensorView& out);
void cross_entropy_forward(const ops::CrossEntropyForwardArgs& a);
void cross_entropy_backward(const ops::CrossEntropyBackwardArgs& a);
void adamw_step(const ops::AdamWArgs& a);  // with adamw_body_best()
// adamw_step's loop bodies, by instruction set; each gives bitwise the same result.
enum class AdamWBody { scalar, avx2, avx512 };  // in order: a CPU that runs one runs those before it
AdamWBody adamw_body_best();  // the fastest this CPU runs
const char* adamw_body_name(AdamWBody body);
void adamw_step(const ops::AdamWArgs& a, AdamWBody body);  // throws if this CPU cannot run `body`
void global_norm(const ops::GlobalNormArgs& a);
void count_nonfinite(const ops::CountNonfiniteArgs& a);

}  // namespace strata::cpu
