// The op contract, public: every numeric op strata runs, declared once. A program
// that writes its own unit (strata/unit.h) computes with these ops; the library's
// kernels implement them (kernels/cpu, kernels/cuda). No CUDA header is included:
// pointers are device memory behind TensorView, work is ordered by Stream.
//
// An op is `void name(const NameArgs&, Stream&)`. Pointers in the args are memory
// of the stream's device; the op enqueues its work on that stream and returns. It
// never allocates device memory (CPU kernels keep small per-thread scratch that is
// reused), never synchronizes, and never throws after enqueueing: shapes, dtypes
// and pointers are checked at entry, with errors that name the op and argument.
//
// Shapes: the first dimensions of an activation are flattened into rows, so a
// (B, T, C) tensor is an (N = B*T, C) matrix to matmul and the norms.
// Dtypes: activations and parameters are f32, bf16 or f16 (one dtype per call);
// arithmetic is f32; saved statistics (mean, rstd, lse) and losses are f32.
// Gradients: parameter gradients ACCUMULATE (+=) and may be f32 whatever the
// parameter dtype (f32 accumulation across micro-batches); activation gradients
// are ASSIGNED (=).
// Determinism: the same args on the same device give the same bits, so a replayed
// forward (recompute) equals the original bitwise.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "strata/device.h"
#include "strata/tensor.h"

namespace strata {

namespace num {
// The counter-based stream a (seed, key1, key2) triple names (Philox4x32-10; the
// generator itself is kernels/common/philox.h). Element i of a dropout mask or an
// initialisation is a pure function of (key, i), so a replay needs only the key.
struct RandomKey {
  uint64_t seed = 0;
  uint32_t key1 = 0;
  uint32_t key2 = 0;
};
}  // namespace num

// RoPE frequency rescaling as the rope op takes it (kernels/common/rope_math.h).
enum class RopeScalingType : uint8_t { none = 0, linear = 1, llama3 = 2 };

struct RopeScalingArgs {
  RopeScalingType type = RopeScalingType::none;
  float factor = 1.0f;            // linear and llama3
  float low_freq_factor = 1.0f;   // llama3
  float high_freq_factor = 4.0f;  // llama3
  float original_max_seq = 8192;  // llama3: original_max_position_embeddings
};

}  // namespace strata

namespace strata::ops {

// ---------------------------------------------------------------- matmul
// out (N, OC) = inp (N, IC) @ weight(OC, IC)^T + bias (OC)      [PyTorch Linear]
// With gelu_pre defined, a GELU epilogue: gelu_pre = inp @ weight^T + bias (the
// pre-activation, kept for gelu_backward) and out = GELU(gelu_pre), in one pass.
// On CPU out is bitwise gelu_forward of the rounded gelu_pre; cuBLASLt applies GELU
// before rounding, so on CUDA the two agree within one rounding of gelu_pre.
struct MatmulForwardArgs {
  TensorView out;       // (..., OC)
  TensorView inp;       // (..., IC)
  TensorView weight;    // (OC, IC)
  TensorView bias;      // (OC) or undefined
  // (..., OC) like out, or undefined: no epilogue. The initializer keeps the
  // four-field {out, inp, weight, bias} form free of missing-initializer warnings.
  TensorView gelu_pre = {};
  // out is (..., OCp), OCp >= OC: a padded row stride (the vocabulary padded to a
  // multiple of 64, so GEMM leading dimensions stay 16-byte aligned). The GEMM writes
  // columns [0, OC) of each row and leaves the rest untouched. No GELU epilogue.
  bool out_padded = false;
};
void matmul_forward(const MatmulForwardArgs& a, Stream& s);

// d_inp = d_out @ weight (assigned); d_weight += d_out^T @ inp; d_bias += sum(d_out).
// Any of d_inp / d_weight / d_bias may be undefined to skip it.
struct MatmulBackwardArgs {
  TensorView d_inp;     // (..., IC)
  TensorView d_weight;  // (OC, IC), dtype of weight or f32
  TensorView d_bias;    // (OC), dtype of weight or f32
  TensorView d_out;     // (..., OC)
  TensorView inp;       // (..., IC)
  TensorView weight;    // (OC, IC)
  // d_out is (..., OCp), OCp >= OC, as out_padded: columns [OC, OCp) are not read.
  // No d_bias.
  bool d_out_padded = false;
};
void matmul_backward(const MatmulBackwardArgs& a, Stream& s);

// ---------------------------------------------------------------- embedding
// out[b, t] = wte[tokens[b, t]] + wpe[t + pos_offset]  (wpe optional: RoPE models)
struct EmbeddingForwardArgs {
  TensorView out;     // (B, T, C)
  TensorView tokens;  // (B, T) i32, each in [0, V)
  TensorView wte;     // (V, C)
  TensorView wpe;     // (maxT, C) or undefined
  int64_t pos_offset = 0;
};
void embedding_forward(const EmbeddingForwardArgs& a, Stream& s);

// d_wte[v] += sum of d_out rows whose token is v; d_wpe[t] += sum over b.
// Deterministic: the summation order does not depend on thread scheduling.
struct EmbeddingBackwardArgs {
  TensorView d_wte;   // (V, C)
  TensorView d_wpe;   // (maxT, C) or undefined
  TensorView d_out;   // (B, T, C)
  TensorView tokens;  // (B, T) i32
  int64_t pos_offset = 0;
};
void embedding_backward(const EmbeddingBackwardArgs& a, Stream& s);

// ---------------------------------------------------------------- norms
// LayerNorm: out = (x - mean) * rstd * weight + bias, rstd = 1/sqrt(var + eps).
// RMSNorm (rms = true): out = x * rstd * weight, rstd = 1/sqrt(mean(x^2) + eps);
// mean is then undefined and bias must be undefined.
struct NormForwardArgs {
  TensorView out;     // (N, C)
  TensorView mean;    // (N) f32, saved for backward (LayerNorm only)
  TensorView rstd;    // (N) f32, saved for backward
  TensorView inp;     // (N, C)
  TensorView weight;  // (C)
  TensorView bias;    // (C) or undefined
  float eps = 1e-5f;
  bool rms = false;
};
void norm_forward(const NormForwardArgs& a, Stream& s);

struct NormBackwardArgs {
  TensorView d_inp;     // (N, C), assigned
  TensorView d_weight;  // (C), accumulated
  TensorView d_bias;    // (C), accumulated, or undefined
  TensorView d_out;     // (N, C)
  TensorView inp;       // (N, C)
  TensorView weight;    // (C)
  TensorView mean;      // (N) f32 (LayerNorm only)
  TensorView rstd;      // (N) f32
  bool rms = false;
};
void norm_backward(const NormBackwardArgs& a, Stream& s);

// Residual add fused with the norm that follows it (pre-norm blocks):
//   res_out = x + y (rounded to the dtype);  out = norm(res_out)
// out, mean and rstd are bitwise those of norm_forward on res_out, so a norm replayed
// from the saved res_out (recompute) matches. res_out may alias x or y (not out).
struct ResidualNormForwardArgs {
  TensorView res_out;  // (N, C)
  TensorView out;      // (N, C)
  TensorView mean;     // (N) f32 (LayerNorm only)
  TensorView rstd;     // (N) f32
  TensorView x;        // (N, C)
  TensorView y;        // (N, C)
  TensorView weight;   // (C)
  TensorView bias;     // (C) or undefined
  float eps = 1e-5f;
  bool rms = false;
};
void residual_norm_forward(const ResidualNormForwardArgs& a, Stream& s);

// The gradient of a residual stream that also feeds a norm, in one pass:
//   d_res = d_resid + d_inp of norm_backward (one f32 sum, rounded once; assigned);
//   d_weight / d_bias accumulate as in norm_backward. d_res may alias d_resid.
struct ResidualNormBackwardArgs {
  TensorView d_res;     // (N, C), assigned
  TensorView d_weight;  // (C), accumulated
  TensorView d_bias;    // (C), accumulated, or undefined
  TensorView d_resid;   // (N, C): the gradient reaching the stream past the norm
  TensorView d_out;     // (N, C): the gradient of the norm's output
  TensorView inp;       // (N, C): the norm's input (res_out of the forward)
  TensorView weight;    // (C)
  TensorView mean;      // (N) f32 (LayerNorm only)
  TensorView rstd;      // (N) f32
  bool rms = false;
};
void residual_norm_backward(const ResidualNormBackwardArgs& a, Stream& s);

// ---------------------------------------------------------------- activations
// GELU, tanh approximation. out and inp have the same shape.
struct GeluForwardArgs {
  TensorView out;
  TensorView inp;
};
void gelu_forward(const GeluForwardArgs& a, Stream& s);

struct GeluBackwardArgs {
  TensorView d_inp;  // assigned
  TensorView d_out;
  TensorView inp;
};
void gelu_backward(const GeluBackwardArgs& a, Stream& s);

// SwiGLU: inp (N, 2H) holds [gate | up]; out (N, H) = silu(gate) * up.
struct SwigluForwardArgs {
  TensorView out;  // (N, H)
  TensorView inp;  // (N, 2H)
};
void swiglu_forward(const SwigluForwardArgs& a, Stream& s);

struct SwigluBackwardArgs {
  TensorView d_inp;  // (N, 2H), assigned
  TensorView d_out;  // (N, H)
  TensorView inp;    // (N, 2H)
};
void swiglu_backward(const SwigluBackwardArgs& a, Stream& s);

// ---------------------------------------------------------------- RoPE
// Rotary position embedding, "rotate half" pairing (element i with i + D/2, as in
// Hugging Face LLaMA): for head h < rotated_heads at position p = t + pos_offset,
//   out[i]       = x[i] cos(p w_i) - x[i + D/2] sin(p w_i)
//   out[i + D/2] = x[i + D/2] cos(p w_i) + x[i] sin(p w_i),  w_i = theta^(-2i/D),
// rescaled by `scaling` (kernels/common/rope_math.h: linear or llama3).
// Heads >= rotated_heads are copied, so the packed qkv buffer viewed as
// (B, T, 3*NH, D) with rotated_heads = 2*NH rotates q and k and passes v through.
struct RopeArgs {
  TensorView out;  // (B, T, H, D), D even
  TensorView inp;  // (B, T, H, D); may alias out
  int64_t rotated_heads = 0;
  float theta = 10000.0f;
  int64_t pos_offset = 0;
  RopeScalingArgs scaling{};
};
void rope_forward(const RopeArgs& a, Stream& s);
// d_inp from d_out: the inverse rotation (same args, out = d_inp, inp = d_out).
void rope_backward(const RopeArgs& a, Stream& s);

// ---------------------------------------------------------------- attention
// Multi-head scaled dot-product attention over a packed qkv (B, T, (NH + 2*NKV)*HD):
// each row is NH query heads, then NKV key heads, then NKV value heads (for NKV = NH
// this is (B, T, 3, NH, HD)). Query head h reads kv head h / (NH / NKV) (grouped-query
// attention; NKV = 1 is multi-query). Softmax in f32 with scale 1/sqrt(HD); causal
// masks j > i to -inf before the softmax; a sliding window W > 0 (causal only) also
// masks j <= i - W, so row i sees keys (i - W, i]. Optional dropout on the probabilities with mask element index
// ((b*NH + h)*T + i)*T + j under `dropout_key`. Never holds more than one (T x T)
// block of scores per thread.
struct AttentionForwardArgs {
  TensorView out;  // (B, T, NH, HD)
  TensorView lse;  // (B, NH, T) f32: log-sum-exp of each scaled score row, for backward
  TensorView qkv;  // (B, T, (NH + 2*NKV)*HD)
  int64_t n_heads = 0;
  bool causal = true;
  float dropout = 0.0f;
  num::RandomKey dropout_key;
  int64_t n_kv_heads = 0;  // NKV, dividing n_heads; 0 means n_heads (multi-head)
  int64_t window = 0;      // sliding window W (causal only): row i sees keys (i - W, i]; 0 = none
};
void attention_forward(const AttentionForwardArgs& a, Stream& s);

// d_qkv (assigned) from d_out, recomputing the probabilities from qkv and lse and
// replaying the dropout mask from the same key.
struct AttentionBackwardArgs {
  TensorView d_qkv;  // (B, T, (NH + 2*NKV)*HD); a kv head's rows sum over its query heads
  TensorView d_out;  // (B, T, NH, HD)
  TensorView qkv;    // (B, T, (NH + 2*NKV)*HD)
  TensorView out;    // (B, T, NH, HD), the forward output
  TensorView lse;    // (B, NH, T) f32
  int64_t n_heads = 0;
  bool causal = true;
  float dropout = 0.0f;
  num::RandomKey dropout_key;
  int64_t n_kv_heads = 0;  // as in AttentionForwardArgs
  int64_t window = 0;      // as in AttentionForwardArgs
};
void attention_backward(const AttentionBackwardArgs& a, Stream& s);

// Attention of T new rows against a KV cache (inference): the rows are at positions
// [pos, pos + T) of each of B sequences. First writes the rows' k and v into the
// caches at those positions, then row i attends causally over cached keys
// [0, pos + i] (with a sliding window W > 0, only (pos + i - W, pos + i]): softmax
// in f32 with scale 1/sqrt(HD). Query head h reads kv head
// h / (NH / NKV) (grouped-query attention; NKV = NH is plain multi-head).
struct AttentionDecodeArgs {
  TensorView out;      // (B, T, NH, HD)
  TensorView qkv;      // (B, T, (NH + 2*NKV) * HD): NH q heads, NKV k heads, NKV v heads
  TensorView k_cache;  // (B, NKV, S, HD), qkv's dtype
  TensorView v_cache;  // (B, NKV, S, HD)
  int64_t n_heads = 0;
  int64_t pos = 0;  // position of the first new row; pos + T <= S
  int64_t window = 0;  // sliding window W, as in AttentionForwardArgs; 0 = none
};
void attention_decode(const AttentionDecodeArgs& a, Stream& s);

// ---------------------------------------------------------------- dropout
// out[i] = keep(i) ? inp[i] / (1 - p) : 0, keep(i) = philox_uniform(key, i) >= p.
// The mask is never stored: backward regenerates it from the key.
struct DropoutArgs {
  TensorView out;
  TensorView inp;  // may alias out
  float p = 0.0f;
  num::RandomKey key;
};
void dropout_forward(const DropoutArgs& a, Stream& s);
// d_inp = d_out masked and scaled like forward (out = d_inp, inp = d_out).
void dropout_backward(const DropoutArgs& a, Stream& s);

// ---------------------------------------------------------------- elementwise
// out = a + b (same shape and dtype; out may alias a or b): residual connections
// and activation-gradient sums.
struct AddArgs {
  TensorView out;
  TensorView a;
  TensorView b;
};
void add(const AddArgs& a, Stream& s);

// out = inp * alpha (may alias).
struct ScaleArgs {
  TensorView out;
  TensorView inp;
  float alpha = 1.0f;
};
void scale(const ScaleArgs& a, Stream& s);

// out = inp converted to out's dtype, rounding to nearest even (same element count).
struct CastArgs {
  TensorView out;
  TensorView inp;
};
void cast(const CastArgs& a, Stream& s);

// out += inp (out f32 or inp's dtype): accumulating gradients of a micro-batch.
struct AccumulateArgs {
  TensorView out;
  TensorView inp;
};
void accumulate(const AccumulateArgs& a, Stream& s);

// out = 0.
void fill_zero(const TensorView& out, Stream& s);

// ---------------------------------------------------------------- loss
// Fused softmax + cross-entropy over the vocabulary, f32 inside. Rows whose target
// equals ignore_index get loss 0 (and zero gradient). No probability tensor is
// stored: forward saves the row log-sum-exp; backward recomputes softmax from it.
struct CrossEntropyForwardArgs {
  TensorView losses;   // (N) f32
  TensorView lse;      // (N) f32
  TensorView logits;   // (N, V), or (N, Vp) with vocab = V
  TensorView targets;  // (N) i32
  int32_t ignore_index = -100;
  // The real vocabulary when logits' rows are padded (logits (N, Vp), V <= Vp);
  // 0: every column is a token. Padding columns carry no probability mass.
  int64_t vocab = 0;
};
void cross_entropy_forward(const CrossEntropyForwardArgs& a, Stream& s);

// d_logits = (softmax(logits) - onehot(target)) * d_loss (assigned; may alias
// logits); with vocab set, the padding columns of d_logits are assigned 0. d_loss is
// the gradient of the total loss w.r.t. each row's loss, the same for every row
// (e.g. loss_scale / valid_rows).
struct CrossEntropyBackwardArgs {
  TensorView d_logits;  // (N, V), or (N, Vp) like logits
  TensorView logits;    // (N, V), or (N, Vp) with vocab = V
  TensorView lse;       // (N) f32
  TensorView targets;   // (N) i32
  float d_loss = 1.0f;
  int32_t ignore_index = -100;
  int64_t vocab = 0;  // as CrossEntropyForwardArgs::vocab
};
void cross_entropy_backward(const CrossEntropyBackwardArgs& a, Stream& s);

// ---------------------------------------------------------------- optimizer
// AdamW on one flat f32 shard, with bias correction and decoupled weight decay:
//   g = grad * grad_scale;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   master -= lr * (m / (1-b1^t) / (sqrt(v / (1-b2^t)) + eps) + weight_decay * master)
// and, when `working` is defined, writes the new master rounded to working's dtype.
struct AdamWArgs {
  TensorView master;   // (n) f32
  TensorView grad;     // (n) f32
  TensorView m;        // (n) f32
  TensorView v;        // (n) f32
  TensorView working;  // (n) f32 / bf16 / f16, or undefined
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
  float grad_scale = 1.0f;  // 1/loss_scale times the clipping coefficient
  int64_t step = 1;         // 1-based, for bias correction
};
void adamw_step(const AdamWArgs& a, Stream& s);

// ---------------------------------------------------------------- reductions
// out[0] = sqrt(sum over all buffers of x^2), accumulated in double; NaN or Inf
// anywhere makes the result non-finite.
struct GlobalNormArgs {
  TensorView out;  // (1) f32
  std::vector<TensorView> inputs;
};
void global_norm(const GlobalNormArgs& a, Stream& s);

// out[0] = number of NaN or Inf elements over all buffers.
struct CountNonfiniteArgs {
  TensorView out;  // (1) i32
  std::vector<TensorView> inputs;
};
void count_nonfinite(const CountNonfiniteArgs& a, Stream& s);

// ---------------------------------------------------------------- registry
// Which backend implements which op. The op test table walks this list, so an op
// missing from a backend is said here, never silently replaced by another backend.
struct OpInfo {
  const char* name;
  bool cpu;
  bool cuda;
};
const std::vector<OpInfo>& op_registry();

}  // namespace strata::ops
