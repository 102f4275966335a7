// CPU attention of new rows against a KV cache (inference decoding). A task is one
// (b, h, new row); it forms the row's scores over the cached keys in f32 scratch.
// Invariants: the new rows' k and v are in the cache before any task reads it (two
// passes); softmax statistics and the weighted sum of values are f32, the output is
// rounded once; every task writes a disjoint row of out.
#include <cmath>

#include "cpu.h"
#include "fast_exp.h"
#include "row_math.h"
#include "thread_scratch.h"
#include "util.h"

namespace strata::cpu {

namespace {

// q (f32) . k (the cache's dtype) over n, in 16 partial sums (rows::dot's order) so
// that it vectorises with the conversion inline.
template <class T>
inline float dot(const float* __restrict q, const T* __restrict k, int64_t n) {
  float lanes[rows::kLanes] = {};
  int64_t i = 0;
  for (; i + rows::kLanes <= n; i += rows::kLanes)
    for (int j = 0; j < rows::kLanes; ++j) lanes[j] += q[i + j] * load(k[i + j]);
  for (int j = 0; i + j < n; ++j) lanes[j] += q[i + j] * load(k[i + j]);
  return rows::sum_lanes(lanes);
}

template <class T>
void decode(const ops::AttentionDecodeArgs& a) {
  const int64_t B = a.k_cache.shape[0], NKV = a.k_cache.shape[1], S = a.k_cache.shape[2], HD = a.k_cache.shape[3];
  const int64_t NH = a.n_heads, T_new = a.qkv.shape[1], width = (NH + 2 * NKV) * HD, group = NH / NKV;
  const T* qkv = a.qkv.ptr<T>();
  T* kc = a.k_cache.ptr<T>();
  T* vc = a.v_cache.ptr<T>();
  T* out = a.out.ptr<T>();
  // Pass 1: k, v of row (b, t) into cache position pos + t.  // cache (B, NKV, S, HD)
  parallel_for(B * T_new, 16, [&](int64_t begin, int64_t end) {
    for (int64_t bt = begin; bt < end; ++bt) {
      const int64_t b = bt / T_new, t = bt % T_new;
      const T* row = qkv + bt * width;
      for (int64_t g = 0; g < NKV; ++g) {
        const int64_t at = ((b * NKV + g) * S + a.pos + t) * HD;
        for (int64_t d = 0; d < HD; ++d) {
          kc[at + d] = row[(NH + g) * HD + d];
          vc[at + d] = row[(NH + NKV + g) * HD + d];
        }
      }
    }
  });
  // Pass 2: row t of (b, h) over keys [first, pos + t]: first = 0, or pos + t + 1 - window.
  // One task per (b, h, t), so a single decoded row still spreads its heads over
  // every thread; the scores, softmax and value sums are 16-lane vector loops, so a
  // key costs a few vector operations rather than HD dependent adds.
  const float scale = 1.0f / std::sqrt(float(HD));
  parallel_for(B * NH * T_new, 1, [&](int64_t begin, int64_t end) {
    ThreadScratch<float> scratch(size_t(S + 2 * HD));
    float* scores = scratch.data();
    float* q = scores + S;
    float* acc = q + HD;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task % T_new, h = (task / T_new) % NH, b = task / (T_new * NH);
      const int64_t g = h / group, keys = a.pos + t + 1;
      const int64_t first = a.window > 0 && keys > a.window ? keys - a.window : 0, n = keys - first;
      const T* q_row = qkv + (b * T_new + t) * width + h * HD;
      for (int64_t d = 0; d < HD; ++d) q[d] = load(q_row[d]) * scale;
      const T* k = kc + ((b * NKV + g) * S + first) * HD;
      const T* v = vc + ((b * NKV + g) * S + first) * HD;
      for (int64_t j = 0; j < n; ++j) scores[j] = dot(q, k + j * HD, HD);
      const float max = max_of(scores, n);
      const float sum = exp_sum(scores, scores, n, 1.0f, max);  // scores become exp(score - max)
      for (int64_t d = 0; d < HD; ++d) acc[d] = 0;
      for (int64_t j = 0; j < n; ++j) {
        const float p = scores[j];
        const T* __restrict v_row = v + j * HD;
        for (int64_t d = 0; d < HD; ++d) acc[d] += p * load(v_row[d]);
      }
      T* o = out + ((b * T_new + t) * NH + h) * HD;
      for (int64_t d = 0; d < HD; ++d) o[d] = store<T>(acc[d] / sum);
    }
  });
}

}  // namespace

void attention_decode(const ops::AttentionDecodeArgs& a) {
  dispatch_float(a.qkv.dtype, [&](auto tag) { decode<decltype(tag)>(a); });
}

}  // namespace strata::cpu
