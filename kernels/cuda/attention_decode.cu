// CUDA attention of new rows against a KV cache (inference decoding).
// Invariants: the append kernel runs before the attention kernel on the same stream,
// so every key a row reads is in the cache; one thread per output element (b, t, h, d)
// recomputes the row's scores (f32, two passes: max and sum, then the weighted sum of
// values) and needs no shared memory or barriers — written for clarity and emulation,
// not tuned for throughput.
#include "kernel_util.cuh"

namespace strata::STRATA_CUDA_NS {

// One thread per element (b, t, g, d) of the new rows' k and v.
template <class T>
static __global__ void kv_append_kernel(T* kc, T* vc, const T* qkv, int64_t b_size, int64_t t_size, int64_t nh,
                                        int64_t nkv, int64_t s_size, int64_t hd, int64_t pos) {
  const int64_t n = b_size * t_size * nkv * hd, width = (nh + 2 * nkv) * hd;
  for (int64_t k = grid_first(); k < n; k += grid_stride()) {
    const int64_t d = k % hd, g = (k / hd) % nkv, bt = k / (hd * nkv), t = bt % t_size, b = bt / t_size;
    const int64_t at = ((b * nkv + g) * s_size + pos + t) * hd + d;
    kc[at] = qkv[bt * width + (nh + g) * hd + d];
    vc[at] = qkv[bt * width + (nh + nkv + g) * hd + d];
  }
}

// One thread per output element (b, t, h, d): row t attends over keys [0, pos + t], or
// under a sliding window over (pos + t - window, pos + t].
template <class T>
static __global__ void decode_kernel(T* out, const T* qkv, const T* kc, const T* vc, int64_t b_size, int64_t t_size,
                                     int64_t nh, int64_t nkv, int64_t s_size, int64_t hd, int64_t pos, float scale,
                                     int64_t window) {
  const int64_t n = b_size * t_size * nh * hd, width = (nh + 2 * nkv) * hd;
  for (int64_t k = grid_first(); k < n; k += grid_stride()) {
    const int64_t d = k % hd, h = (k / hd) % nh, bt = k / (hd * nh), t = bt % t_size, b = bt / t_size;
    const int64_t g = h / (nh / nkv), keys = pos + t + 1;
    const int64_t first = window > 0 && keys > window ? keys - window : 0;
    const T* q = qkv + bt * width + h * hd;
    const T* kh = kc + (b * nkv + g) * s_size * hd;
    const T* vh = vc + (b * nkv + g) * s_size * hd;
    float max = -INFINITY, sum = 0.0f;
    for (int64_t j = first; j < keys; ++j) {  // online max and sum of exp
      float dot = 0.0f;
      for (int64_t i = 0; i < hd; ++i) dot += (load(q[i]) * scale) * load(kh[j * hd + i]);
      const float m = fmaxf(max, dot);
      sum = sum * expf(max - m) + expf(dot - m);
      max = m;
    }
    float acc = 0.0f;
    for (int64_t j = first; j < keys; ++j) {
      float dot = 0.0f;
      for (int64_t i = 0; i < hd; ++i) dot += (load(q[i]) * scale) * load(kh[j * hd + i]);
      acc += expf(dot - max) * load(vh[j * hd + d]);
    }
    out[k] = store<T>(acc / sum);
  }
}

void attention_decode(const ops::AttentionDecodeArgs& a, const Context& c) {
  const int64_t b_size = a.k_cache.shape[0], nkv = a.k_cache.shape[1], s_size = a.k_cache.shape[2],
                hd = a.k_cache.shape[3], t_size = a.qkv.shape[1], nh = a.n_heads;
  const float scale = 1.0f / sqrtf(float(hd));
  dispatch_float(a.qkv.dtype, [&](auto tag) {
    using T = decltype(tag);
    const int64_t n_kv = b_size * t_size * nkv * hd, n_out = b_size * t_size * nh * hd;
    launch(kv_append_kernel<T>, blocks_for(n_kv, kThreads), kThreads, 0, c.stream, a.k_cache.ptr<T>(),
           a.v_cache.ptr<T>(), static_cast<const T*>(a.qkv.ptr<T>()), b_size, t_size, nh, nkv, s_size, hd, a.pos);
    launch(decode_kernel<T>, blocks_for(n_out, kThreads), kThreads, 0, c.stream, a.out.ptr<T>(),
           static_cast<const T*>(a.qkv.ptr<T>()), static_cast<const T*>(a.k_cache.ptr<T>()),
           static_cast<const T*>(a.v_cache.ptr<T>()), b_size, t_size, nh, nkv, s_size, hd, a.pos, scale,
           a.window);
  });
}

}  // namespace strata::STRATA_CUDA_NS
