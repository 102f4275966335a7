// What the two CUDA attention paths share: the launch geometry, the dropout mask, the
// softmax-backward term D, and the tensor-core path's launchers (attention_flash.cu).
// Invariant: the dropout mask is num::philox_uniform(key, ((b*NH + h)*T + i)*T + j) >= p
// for query i and key j, the CPU backend's definition, so every path and backward
// replay the same mask; lse is the log-sum-exp of the un-dropped scaled scores.
// qkv rows are NH query heads, NKV key heads, NKV value heads; query head h reads kv
// head h / group(). A dK/dV block owns one kv head and walks its group's query heads
// in order, so the group sum needs no atomics and is deterministic. A sliding window
// masks like the causal mask, and whole tiles outside it are never visited.
#pragma once
#include "../common/philox.h"
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

struct AttentionGeometry {
  int64_t B, T, NH, HD;
  bool causal;
  float scale;       // 1 / sqrt(HD)
  float p;           // dropout probability
  float keep_scale;  // 1 / (1 - p)
  num::RandomKey key;
  int64_t NKV;  // kv heads, dividing NH
  int64_t window;  // sliding window W (causal): query i sees keys (i - W, i]; 0 = none
  STRATA_HD int64_t C() const { return NH * HD; }                 // row stride of out, d_out
  STRATA_HD int64_t stride() const { return (NH + 2 * NKV) * HD; }  // row stride of qkv
  STRATA_HD int64_t group() const { return NH / NKV; }
  // Offsets in a qkv row of query head h's q, and of the k and v it reads.
  STRATA_HD int64_t q_at(int64_t h) const { return h * HD; }
  STRATA_HD int64_t k_at(int64_t h) const { return (NH + h / group()) * HD; }
  STRATA_HD int64_t v_at(int64_t h) const { return (NH + NKV + h / group()) * HD; }
  // Whether query i sees key j (both < T): the causal and window masks.
  STRATA_HD bool sees(int64_t i, int64_t j) const { return !(causal && j > i) && !(window > 0 && j <= i - window); }
  // The first key tile (of `tile` rows) any of query rows [i0, ...) sees.
  STRATA_HD int64_t first_key_tile(int64_t i0, int64_t tile) const {
    return window > 0 && i0 - window + 1 > 0 ? (i0 - window + 1) / tile * tile : 0;
  }
  // The end of the queries that see any of keys [.., j_last]: T, or under a window j_last + W.
  STRATA_HD int64_t query_end(int64_t j_last) const {
    return window > 0 && j_last + window < T ? j_last + window : T;
  }
};

inline AttentionGeometry attention_geometry(const TensorView& qkv, int64_t n_heads, int64_t n_kv_heads, bool causal,
                                            float p, const num::RandomKey& key, int64_t window) {
  const int64_t nkv = n_kv_heads == 0 ? n_heads : n_kv_heads;
  AttentionGeometry g{qkv.shape[0], qkv.shape[1], n_heads, qkv.shape[2] / (n_heads + 2 * nkv), causal, 0, p, 0, key,
                      nkv, window};
  g.scale = 1.0f / sqrtf(float(g.HD));
  g.keep_scale = 1.0f / (1.0f - p);
  return g;
}

// The dropout factor of score (i, j) of head bh: 0 or 1 / (1 - p).
static __device__ __forceinline__ float attention_dropout(const AttentionGeometry& g, int64_t bh, int64_t i,
                                                          int64_t j) {
  if (g.p == 0.0f) return 1.0f;
  const uint64_t index = uint64_t((bh * g.T + i) * g.T + j);
  return num::philox_uniform(g.key, index) >= g.p ? g.keep_scale : 0.0f;
}

// D (B*NH, T) = rowwise dO . O, the softmax-backward correction term.
template <class T>
static __global__ void attention_delta_kernel(float* delta, const T* d_out, const T* out, AttentionGeometry g) {
  for (int64_t k = grid_first(); k < g.B * g.NH * g.T; k += grid_stride()) {
    const int64_t bh = k / g.T, i = k % g.T, b = bh / g.NH, h = bh % g.NH;
    const int64_t at = (b * g.T + i) * g.C() + h * g.HD;
    float s = 0.0f;
    for (int64_t d = 0; d < g.HD; ++d) s += load(d_out[at + d]) * load(out[at + d]);
    delta[k] = s;
  }
}

// The tensor-core path (bf16 / fp16 storage, head_dim <= kFlashMaxHeadDim).
constexpr int64_t kFlashMaxHeadDim = 128;
inline bool attention_flash_supports(DType dt, int64_t head_dim) {
  return (dt == DType::bf16 || dt == DType::f16) && head_dim <= kFlashMaxHeadDim;
}
void attention_flash_forward(const ops::AttentionForwardArgs& a, const AttentionGeometry& g, const Context& c);
// delta: D from attention_delta_kernel.
void attention_flash_backward(const ops::AttentionBackwardArgs& a, const AttentionGeometry& g, const float* delta,
                              const Context& c);

}  // namespace strata::STRATA_CUDA_NS
