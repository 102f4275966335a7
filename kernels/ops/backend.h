// Backends as op tables, in the spirit of ggml's ggml_backend_i: a backend is a
// struct with one function pointer per op of strata/ops.h, filled by the backend
// itself (kernels/cpu/backend.cpp, kernels/cuda/backend.cu; the emulated CUDA build
// registers the same table in namespace cuda_emu). What a backend supports is what it
// registered; ops::op_registry() is derived from these tables.
// Invariant: an entry point runs its backend entry only after every argument check,
// and a null entry is an error naming the op and the backend, never a fallback.
#pragma once
#include <string>
#include <vector>

#include "../ops.h"

namespace strata::ops {

// Every op with the type of its argument, in registry order. Adding an op: add it
// here, give it an entry point in kernels/ops, and an entry in each backend that has it.
#define STRATA_OPS(X)                               \
  X(matmul_forward, MatmulForwardArgs)              \
  X(matmul_backward, MatmulBackwardArgs)            \
  X(embedding_forward, EmbeddingForwardArgs)        \
  X(embedding_backward, EmbeddingBackwardArgs)      \
  X(norm_forward, NormForwardArgs)                  \
  X(norm_backward, NormBackwardArgs)                \
  X(residual_norm_forward, ResidualNormForwardArgs) \
  X(residual_norm_backward, ResidualNormBackwardArgs) \
  X(gelu_forward, GeluForwardArgs)                  \
  X(gelu_backward, GeluBackwardArgs)                \
  X(swiglu_forward, SwigluForwardArgs)              \
  X(swiglu_backward, SwigluBackwardArgs)            \
  X(rope_forward, RopeArgs)                         \
  X(rope_backward, RopeArgs)                        \
  X(attention_forward, AttentionForwardArgs)        \
  X(attention_backward, AttentionBackwardArgs)      \
  X(attention_decode, AttentionDecodeArgs)          \
  X(dropout_forward, DropoutArgs)                   \
  X(dropout_backward, DropoutArgs)                  \
  X(add, AddArgs)                                   \
  X(scale, ScaleArgs)                               \
  X(cast, CastArgs)                                 \
  X(accumulate, AccumulateArgs)                     \
  X(fill_zero, TensorView)                          \
  X(cross_entropy_forward, CrossEntropyForwardArgs) \
  X(cross_entropy_backward, CrossEntropyBackwardArgs) \
  X(adamw_step, AdamWArgs)                          \
  X(global_norm, GlobalNormArgs)                    \
  X(count_nonfinite, CountNonfiniteArgs)

// One backend's op table: null where the backend has no implementation.
struct Backend {
  const char* name = "";  // "cpu", "cuda": what errors and the registry call it
  DeviceKind kind = DeviceKind::cpu;  // the devices whose streams it runs
#define STRATA_OP_ENTRY(op, Args) void (*op)(const Args&, Stream&) = nullptr;
  STRATA_OPS(STRATA_OP_ENTRY)
#undef STRATA_OP_ENTRY
};

// Every op's name, in registry order.
const std::vector<std::string>& op_names();

// Whether b registered the op called `op` (false for a name that is no op).
bool has_op(const Backend& b, const std::string& op);

// The backends of this build, CPU first.
const std::vector<const Backend*>& backends();

// The backend running s's device; an error naming `op` when this build has none.
const Backend& backend_of(const char* op, const Stream& s);

// The error for an op that backend b did not register.
[[noreturn]] void missing_op(const char* op, const Backend& b);

template <class Args>
using OpEntry = void (*Backend::*)(const Args&, Stream&);

// Runs b's entry for op (an error naming both when b has none).
template <class Args>
void run(const Backend& b, OpEntry<Args> entry, const char* op, const Args& a, Stream& s) {
  auto fn = b.*entry;
  if (!fn) missing_op(op, b);
  fn(a, s);
}

// Runs op on the backend of s's device: the last line of every entry point.
template <class Args>
void run(OpEntry<Args> entry, const char* op, const Args& a, Stream& s) {
  run(backend_of(op, s), entry, op, a, s);
}

}  // namespace strata::ops
