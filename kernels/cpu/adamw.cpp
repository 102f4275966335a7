// CPU AdamW: one fused pass over a flat f32 shard that reads grad, master, m, v
// and writes master, m, v and (optionally) the working copy in its dtype.
// Invariant: every element goes through the same arithmetic (same fused
// multiply-adds, same rounding) whether it falls in a vector body, a tail or a
// different chunk, so a step is bitwise reproducible under any thread count.
// The working copy is exactly store<T>(new master).
#include <cmath>
#include <cstring>
#include <type_traits>

#include "convert_block.h"  // also brings <immintrin.h>
#include "cpu.h"
#include "util.h"

namespace strata::cpu {

namespace {

constexpr int64_t kGrain = int64_t(1) << 15;

// Per-step constants, folded once so the loop only multiplies.
struct AdamWConstants {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float inv_bias1, inv_bias2;  // 1 / (1 - beta^t)
  float lr, eps, weight_decay, grad_scale;
};

AdamWConstants constants(const ops::AdamWArgs& a) {
  // beta^t in double: for large t, float powers lose the bias correction's digits.
  double bias1 = 1.0 - std::pow(double(a.beta1), double(a.step));
  double bias2 = 1.0 - std::pow(double(a.beta2), double(a.step));
  return {a.beta1,          1.0f - a.beta1, a.beta2, 1.0f - a.beta2, float(1.0 / bias1),
          float(1.0 / bias2), a.lr,         a.eps,   a.weight_decay, a.grad_scale};
}

// The scalar form of the update, used where there is no AVX-512. The vector form
// below performs the same operations in the same order.
inline void update_one(const AdamWConstants& c, float grad, float& master, float& m, float& v) {
  float g = grad * c.grad_scale;
  m = std::fma(c.beta1, m, c.one_minus_beta1 * g);
  v = std::fma(c.beta2, v, (c.one_minus_beta2 * g) * g);
  float denom = std::sqrt(v * c.inv_bias2) + c.eps;
  float step = std::fma(c.weight_decay, master, (m * c.inv_bias1) / denom);
  master = std::fma(-c.lr, step, master);
}

#if defined(__AVX512F__)
// Bits of store<bf16>(x) for 16 lanes, one per 32-bit lane: round to nearest even,
// NaN quieted, exactly as num::float_to_bf16.
inline __m512i bf16_bits(__m512 x) {
  __m512i u = _mm512_castps_si512(x);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                          _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_epi32(rounded, nan, quiet);
}

template <class W>
void adamw_range(const AdamWConstants& c, float* master, const float* grad, float* m, float* v,
                 W* working, int64_t n) {
  const __m512 b1 = _mm512_set1_ps(c.beta1), omb1 = _mm512_set1_ps(c.one_minus_beta1);
  const __m512 b2 = _mm512_set1_ps(c.beta2), omb2 = _mm512_set1_ps(c.one_minus_beta2);
  const __m512 ib1 = _mm512_set1_ps(c.inv_bias1), ib2 = _mm512_set1_ps(c.inv_bias2);
  const __m512 neg_lr = _mm512_set1_ps(-c.lr), eps = _mm512_set1_ps(c.eps);
  const __m512 wd = _mm512_set1_ps(c.weight_decay), gs = _mm512_set1_ps(c.grad_scale);
  for (int64_t i = 0; i < n; i += 16) {
    // The tail runs the same instructions under a mask rather than a scalar loop.
    __mmask16 k = n - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - i)) - 1u);
    __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, grad + i), gs);
    __m512 mi = _mm512_fmadd_ps(b1, _mm512_maskz_loadu_ps(k, m + i), _mm512_mul_ps(omb1, g));
    __m512 vi = _mm512_fmadd_ps(b2, _mm512_maskz_loadu_ps(k, v + i), _mm512_mul_ps(_mm512_mul_ps(omb2, g), g));
    __m512 p = _mm512_maskz_loadu_ps(k, master + i);
    __m512 denom = _mm512_add_ps(_mm512_sqrt_ps(_mm512_mul_ps(vi, ib2)), eps);
    __m512 step = _mm512_fmadd_ps(wd, p, _mm512_div_ps(_mm512_mul_ps(mi, ib1), denom));
    p = _mm512_fmadd_ps(neg_lr, step, p);
    _mm512_mask_storeu_ps(m + i, k, mi);
    _mm512_mask_storeu_ps(v + i, k, vi);
    _mm512_mask_storeu_ps(master + i, k, p);
    if constexpr (std::is_same_v<W, float>) {
      _mm512_mask_storeu_ps(working + i, k, p);
    } else if constexpr (!std::is_void_v<W>) {
      // Narrow in registers: a masked narrowing store to memory (vpmovdw m256{k}) is
      // microcoded and slow on some cores.
      __m256i h = std::is_same_v<W, bf16>
                      ? _mm512_cvtepi32_epi16(bf16_bits(p))
                      : _mm512_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      if (k == 0xffff) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(working + i), h);
      } else {
        alignas(32) uint16_t bits[16];
        _mm256_store_si256(reinterpret_cast<__m256i*>(bits), h);
        std::memcpy(working + i, bits, size_t(n - i) * 2);
      }
    }
  }
}
#else
template <class W>
void adamw_range(const AdamWConstants& c, float* master, const float* grad, float* m, float* v,
                 W* working, int64_t n) {
  for (int64_t i = 0; i < n; ++i) update_one(c, grad[i], master[i], m[i], v[i]);
  if constexpr (!std::is_same_v<W, void>) store_block(master, working, n);
}
#endif

template <class W>
void adamw_all(const ops::AdamWArgs& a, W* working) {
  const AdamWConstants c = constants(a);
  float* master = a.master.ptr<float>();
  const float* grad = a.grad.ptr<float>();
  float* m = a.m.ptr<float>();
  float* v = a.v.ptr<float>();
  parallel_for(a.master.numel(), kGrain, [&](int64_t begin, int64_t end) {
    W* w = nullptr;
    if constexpr (!std::is_same_v<W, void>) w = working + begin;
    adamw_range<W>(c, master + begin, grad + begin, m + begin, v + begin, w, end - begin);
  });
}

}  // namespace

void adamw_step(const ops::AdamWArgs& a) {
  if (!a.working.defined()) {
    adamw_all<void>(a, nullptr);
    return;
  }
  dispatch_float(a.working.dtype, [&](auto tag) {
    using W = decltype(tag);
    adamw_all<W>(a, a.working.ptr<W>());
  });
}

}  // namespace strata::cpu
