// CPU attention of new rows against a KV cache (inference decoding). A task is one
// (b, kv head, new row, chunk of keys); it forms the scores of the group's query heads
// over the chunk in f32 scratch, reading each cached key and value row once.
// Invariants: the new rows' k and v are in the cache before any task reads it (pass 1
// before pass 2); softmax statistics and the weighted sum of values are f32, the output
// is rounded once; chunk bounds depend on positions only, and chunks combine in chunk
// order, so results never depend on the thread count; a row of one chunk sums exactly as
// a single pass over its keys would.
#include <algorithm>
#include <cmath>

#include "cpu.h"
#include "fast_exp.h"
#include "row_math.h"
#include "thread_scratch.h"
#include "transpose16.h"
#include "util.h"

namespace strata::cpu {

namespace {

// Keys per task (and per partial softmax result) of a long row.
constexpr int64_t kChunk = 256;

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

// scores[j] = q . k_j over the n keys of k (rows of HD), and acc += sum_j p_j v_j.
// Each score is dot()'s sum (16 lane sums over d, added in lane order); each acc[d]
// one multiply-add chain over ascending j. The AVX-512 forms below (f32, bf16) keep
// those orders, sixteen keys at a time.
template <class T>
void key_scores(const float* q, const T* k, int64_t n, int64_t HD, float* scores) {
  for (int64_t j = 0; j < n; ++j) scores[j] = dot(q, k + j * HD, HD);
}
template <class T>
void add_weighted_values(const float* p, const T* v, int64_t n, int64_t HD, float* __restrict acc) {
  for (int64_t j = 0; j < n; ++j) {
    const T* __restrict v_row = v + j * HD;
    for (int64_t d = 0; d < HD; ++d) acc[d] += p[j] * load(v_row[d]);
  }
}

#ifdef __AVX512F__
inline __mmask16 first_lanes(int64_t n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1); }
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
// bf16 -> f32: the bits shifted into the high half (zero-masked forms: GCC warns of the
// unmasked ones' undefined source).
inline __m512 load16(const bf16* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, _mm512_maskz_cvtepu16_epi32(0xffff, h), 16));
}

template <class T>
void key_scores_avx512(const float* q, const T* k, int64_t n, int64_t HD, float* scores) {
  for (int64_t j0 = 0; j0 < n; j0 += 16) {
    const int64_t keys = std::min<int64_t>(16, n - j0);
    __m512 lanes[16];
    for (int i = 0; i < 16; ++i) lanes[i] = _mm512_setzero_ps();
    for (int64_t d = 0; d < HD; d += 16) {
      const __mmask16 m = first_lanes(HD - d);
      const __m512 qv = _mm512_maskz_loadu_ps(m, q + d);
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i)  // keys past n: a zero mask loads nothing
        lanes[i] = _mm512_fmadd_ps(qv, load16(k + (j0 + i) * HD + d, i < keys ? m : __mmask16(0)), lanes[i]);
    }
    transpose16(lanes);  // lanes[l] = lane l of the sixteen keys
    __m512 sum = lanes[0];
    for (int l = 1; l < 16; ++l) sum = _mm512_add_ps(sum, lanes[l]);
    _mm512_mask_storeu_ps(scores + j0, first_lanes(keys), sum);
  }
}

template <class T>
void add_weighted_values_avx512(const float* p, const T* v, int64_t n, int64_t HD, float* acc) {
  constexpr int64_t kVectors = 8;  // 128 values of a row in registers at a time
  for (int64_t d0 = 0; d0 < HD; d0 += 16 * kVectors) {
    __mmask16 m[kVectors];
    __m512 a[kVectors];
    for (int64_t u = 0; u < kVectors; ++u) {
      const int64_t d = d0 + 16 * u;
      m[u] = d < HD ? first_lanes(HD - d) : __mmask16(0);
      a[u] = _mm512_maskz_loadu_ps(m[u], acc + d);
    }
    for (int64_t j = 0; j < n; ++j) {
      const __m512 pj = _mm512_set1_ps(p[j]);
      for (int64_t u = 0; u < kVectors; ++u)
        a[u] = _mm512_fmadd_ps(pj, load16(v + j * HD + d0 + 16 * u, m[u]), a[u]);
    }
    for (int64_t u = 0; u < kVectors; ++u) _mm512_mask_storeu_ps(acc + d0 + 16 * u, m[u], a[u]);
  }
}

template <>
void key_scores(const float* q, const float* k, int64_t n, int64_t HD, float* scores) {
  key_scores_avx512(q, k, n, HD, scores);
}
template <>
void key_scores(const float* q, const bf16* k, int64_t n, int64_t HD, float* scores) {
  key_scores_avx512(q, k, n, HD, scores);
}
template <>
void add_weighted_values(const float* p, const float* v, int64_t n, int64_t HD, float* __restrict acc) {
  add_weighted_values_avx512(p, v, n, HD, acc);
}
template <>
void add_weighted_values(const float* p, const bf16* v, int64_t n, int64_t HD, float* __restrict acc) {
  add_weighted_values_avx512(p, v, n, HD, acc);
}
#endif

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
  // A task is one (b, kv head, t, chunk of kChunk keys): each key and value row is read
  // once for all the query heads of its group, and a long context spreads over every
  // thread even for one decoded row. A row whose keys fit in one chunk is finished in
  // its task; otherwise each chunk leaves (max, sum, unnormalised output) and pass 3
  // combines the chunks in chunk order. Chunks are fixed by position, not by thread, so
  // the result does not depend on the thread count.
  const float scale = 1.0f / std::sqrt(float(HD));
  const int64_t max_keys = a.window > 0 ? std::min<int64_t>(a.window, a.pos + T_new) : a.pos + T_new;
  const int64_t chunks = (max_keys + kChunk - 1) / kChunk, part = HD + 2;
  auto row_keys = [&](int64_t t, int64_t& first) {
    const int64_t keys = a.pos + t + 1;
    first = a.window > 0 && keys > a.window ? keys - a.window : 0;
    return keys - first;
  };
  // (B, NH, T_new, chunks) partial results of HD + 2 floats; only rows of several chunks.
  ThreadScratch<float, 1> partial_scratch(chunks > 1 ? size_t(B * NH * T_new * chunks * part) : 0);
  float* partials = partial_scratch.data();
  parallel_for(B * NKV * T_new * chunks, 1, [&](int64_t begin, int64_t end) {
    ThreadScratch<float> scratch(size_t(group * (kChunk + 2 * HD + 2)));
    float* scores = scratch.data();         // (group, kChunk)
    float* q = scores + group * kChunk;     // (group, HD)
    float* acc = q + group * HD;            // (group, HD)
    float* max = acc + group * HD;          // (group)
    float* sum = max + group;               // (group)
    for (int64_t task = begin; task < end; ++task) {
      const int64_t c = task % chunks, t = (task / chunks) % T_new, g = (task / (chunks * T_new)) % NKV;
      const int64_t b = task / (chunks * T_new * NKV);
      int64_t first = 0;
      const int64_t n_row = row_keys(t, first), row_chunks = (n_row + kChunk - 1) / kChunk;
      if (c >= row_chunks) continue;
      const int64_t j0 = first + c * kChunk, n = std::min<int64_t>(kChunk, first + n_row - j0);
      for (int64_t i = 0; i < group; ++i) {
        const T* q_row = qkv + (b * T_new + t) * width + (g * group + i) * HD;
        for (int64_t d = 0; d < HD; ++d) q[i * HD + d] = load(q_row[d]) * scale;
      }
      const T* k = kc + ((b * NKV + g) * S + j0) * HD;
      const T* v = vc + ((b * NKV + g) * S + j0) * HD;
      // The chunk's keys and values (at most kChunk rows) stay in cache across the group's heads.
      for (int64_t i = 0; i < group; ++i) key_scores(q + i * HD, k, n, HD, scores + i * kChunk);
      for (int64_t i = 0; i < group; ++i) {
        max[i] = max_of(scores + i * kChunk, n);
        sum[i] = exp_sum(scores + i * kChunk, scores + i * kChunk, n, 1.0f, max[i]);  // exp(score - max)
      }
      for (int64_t d = 0; d < group * HD; ++d) acc[d] = 0;
      for (int64_t i = 0; i < group; ++i) add_weighted_values(scores + i * kChunk, v, n, HD, acc + i * HD);
      for (int64_t i = 0; i < group; ++i) {
        const int64_t h = g * group + i;
        if (row_chunks == 1) {
          T* o = out + ((b * T_new + t) * NH + h) * HD;
          for (int64_t d = 0; d < HD; ++d) o[d] = store<T>(acc[i * HD + d] / sum[i]);
        } else {
          float* r = partials + (((b * NH + h) * T_new + t) * chunks + c) * part;
          r[0] = max[i], r[1] = sum[i];
          for (int64_t d = 0; d < HD; ++d) r[2 + d] = acc[i * HD + d];
        }
      }
    }
  });
  if (chunks == 1) return;
  // Pass 3: rows of several chunks, each chunk rescaled to the rows' max, in chunk order.
  parallel_for(B * NH * T_new, 4, [&](int64_t begin, int64_t end) {
    ThreadScratch<float> scratch(static_cast<size_t>(HD));
    float* o_acc = scratch.data();
    for (int64_t row = begin; row < end; ++row) {
      const int64_t t = row % T_new;
      int64_t first = 0;
      const int64_t row_chunks = (row_keys(t, first) + kChunk - 1) / kChunk;
      if (row_chunks == 1) continue;
      const float* r = partials + row * chunks * part;  // row = (b * NH + h) * T_new + t
      float max = r[0];
      for (int64_t c = 1; c < row_chunks; ++c) max = std::max(max, r[c * part]);
      float sum = 0;
      for (int64_t d = 0; d < HD; ++d) o_acc[d] = 0;
      for (int64_t c = 0; c < row_chunks; ++c) {
        const float* rc = r + c * part;
        const float f = std::exp(rc[0] - max);
        sum += f * rc[1];
        for (int64_t d = 0; d < HD; ++d) o_acc[d] += f * rc[2 + d];
      }
      const int64_t h = (row / T_new) % NH, b = row / (T_new * NH);
      T* dst = out + ((b * T_new + t) * NH + h) * HD;
      for (int64_t d = 0; d < HD; ++d) dst[d] = store<T>(o_acc[d] / sum);
    }
  });
}

}  // namespace

void attention_decode(const ops::AttentionDecodeArgs& a) {
  dispatch_float(a.qkv.dtype, [&](auto tag) { decode<decltype(tag)>(a); });
}

}  // namespace strata::cpu
