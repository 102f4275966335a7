// The CUDA backend: one launcher per op of kernels/ops.h, called by the op's entry
// point after its arguments are checked, mirroring kernels/cpu/cpu.h. Plain C++: no
// CUDA header, so the entry points (g++) can include it.
//
// Invariants: a launcher only enqueues work on ctx.stream and returns; it never
// synchronizes and never allocates device memory except through ctx.scratch, a
// stream-ordered region reused by the next op on the same stream. Sums that feed
// parameter gradients or norms are deterministic: fixed partitions, per-block
// partials, a second pass adding them in a fixed order — never float atomics.
//
// The same declarations are compiled a second time for the emulation build (tests
// only) in namespace strata::cuda_emu, so the emulated kernels and a real CUDA
// backend can link into one test program.
#pragma once
#include <cstddef>

#include "../ops.h"

#if defined(STRATA_CUDA_EMULATION)
#define STRATA_CUDA_NS cuda_emu
#else
#define STRATA_CUDA_NS cuda
#endif

namespace strata::ops {
struct Backend;
}

namespace strata::STRATA_CUDA_NS {

// This backend's op table (backend.cu): every op below, each run with context(s).
const ops::Backend& backend();

// Device memory for an op's intermediate results (partials, row statistics).
class Scratch {
 public:
  virtual ~Scratch() = default;
  // At least `bytes`, 256-byte aligned, valid for work enqueued on the stream until
  // the next get(). May grow (stream-ordered), never shrinks.
  virtual void* get(size_t bytes) = 0;
};

// The cuBLASLt plan cache of one device (matmul.cu; created and destroyed by runtime.cu).
class GemmPlans;
GemmPlans* gemm_plans_create();
void gemm_plans_destroy(GemmPlans* plans);  // never throws

// Where a launcher enqueues: a cudaStream_t and its scratch; GEMMs also need the
// cuBLASLt handle, plan cache and workspace of the stream's device (null in the emulator).
struct Context {
  void* stream = nullptr;  // cudaStream_t
  Scratch* scratch = nullptr;
  void* blas = nullptr;  // cublasLtHandle_t
  void* blas_workspace = nullptr;
  size_t blas_workspace_bytes = 0;
  GemmPlans* blas_plans = nullptr;
};

// The context of a CUDA stream (runtime.cu; in the emulation build, emu/emu_runtime.cpp).
Context context(Stream& s);

void matmul_forward(const ops::MatmulForwardArgs& a, const Context& c);
void matmul_backward(const ops::MatmulBackwardArgs& a, const Context& c);
// The same two ops through a plain tiled GEMM kernel (matmul_tiled.cu): what the
// emulator runs as matmul_forward / matmul_backward, and selftest's hardware check of it.
void matmul_tiled_forward(const ops::MatmulForwardArgs& a, const Context& c);
void matmul_tiled_backward(const ops::MatmulBackwardArgs& a, const Context& c);
// d_bias (OC) += column sums of d_out (N, OC): the bias gradient of matmul_backward.
void bias_grad(const TensorView& d_bias, const TensorView& d_out, const Context& c);
void embedding_forward(const ops::EmbeddingForwardArgs& a, const Context& c);
void embedding_backward(const ops::EmbeddingBackwardArgs& a, const Context& c);
void norm_forward(const ops::NormForwardArgs& a, const Context& c);
void norm_backward(const ops::NormBackwardArgs& a, const Context& c);
void residual_norm_forward(const ops::ResidualNormForwardArgs& a, const Context& c);
void residual_norm_backward(const ops::ResidualNormBackwardArgs& a, const Context& c);
void gelu_forward(const ops::GeluForwardArgs& a, const Context& c);
void gelu_backward(const ops::GeluBackwardArgs& a, const Context& c);
void swiglu_forward(const ops::SwigluForwardArgs& a, const Context& c);
void swiglu_backward(const ops::SwigluBackwardArgs& a, const Context& c);
void rope_forward(const ops::RopeArgs& a, const Context& c);
void rope_backward(const ops::RopeArgs& a, const Context& c);
void attention_forward(const ops::AttentionForwardArgs& a, const Context& c);
void attention_backward(const ops::AttentionBackwardArgs& a, const Context& c);
void attention_decode(const ops::AttentionDecodeArgs& a, const Context& c);
void dropout_forward(const ops::DropoutArgs& a, const Context& c);
void dropout_backward(const ops::DropoutArgs& a, const Context& c);
void add(const ops::AddArgs& a, const Context& c);
void scale(const ops::ScaleArgs& a, const Context& c);
void cast(const ops::CastArgs& a, const Context& c);
void accumulate(const ops::AccumulateArgs& a, const Context& c);
void fill_zero(const TensorView& out, const Context& c);
void cross_entropy_forward(const ops::CrossEntropyForwardArgs& a, const Context& c);
void cross_entropy_backward(const ops::CrossEntropyBackwardArgs& a, const Context& c);
void adamw_step(const ops::AdamWArgs& a, const Context& c);
void global_norm(const ops::GlobalNormArgs& a, const Context& c);
void count_nonfinite(const ops::CountNonfiniteArgs& a, const Context& c);

}  // namespace strata::STRATA_CUDA_NS
