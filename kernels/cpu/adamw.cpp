// CPU AdamW: one fused pass over a flat f32 shard that reads grad, master, m, v
// and writes master, m, v and (optionally) the working copy in its dtype. Three
// bodies, chosen at run time for the CPU at hand (so a portable build, without
// -march=native, still vectorises): AVX-512 (16 lanes), AVX2 + FMA + F16C (8 lanes)
// and a scalar loop.
// Invariant: every element goes through the same arithmetic (same fused
// multiply-adds, same rounding) whichever body runs it, whether it falls in a vector
// body or a tail, or in a different chunk, so a step is bitwise reproducible under
// any thread count and on any x86 CPU. The working copy is exactly store<T>(new master).
#include <cmath>
#include <cstring>
#include <type_traits>

#include "cpu.h"
#include "strata/error.h"
#include "util.h"
#include "op_profile.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define STRATA_TARGET(isa) __attribute__((target(isa)))
#endif

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

// The scalar form of the update. The vector bodies perform the same operations in
// the same order.
inline void update_one(const AdamWConstants& c, float grad, float& master, float& m, float& v) {
  float g = grad * c.grad_scale;
  m = std::fma(c.beta1, m, c.one_minus_beta1 * g);
  v = std::fma(c.beta2, v, (c.one_minus_beta2 * g) * g);
  float denom = std::sqrt(v * c.inv_bias2) + c.eps;
  float step = std::fma(c.weight_decay, master, (m * c.inv_bias1) / denom);
  master = std::fma(-c.lr, step, master);
}

template <class W>
void adamw_range_scalar(const AdamWConstants& c, float* master, const float* grad, float* m, float* v,
                        W* working, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    update_one(c, grad[i], master[i], m[i], v[i]);
    if constexpr (!std::is_void_v<W>) working[i] = store<W>(master[i]);
  }
}

#if defined(__x86_64__)
// GCC 12 reports its own intrinsics' _mm*_undefined_*() as maybe-uninitialized where
// they are inlined (GCC bug 105593), so the pragma covers the vector bodies.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// Bits of store<bf16>(x) for 16 lanes, one per 32-bit lane: round to nearest even,
// NaN quieted, exactly as num::float_to_bf16.
STRATA_TARGET("avx512f") inline __m512i bf16_bits(__m512 x) {
  __m512i u = _mm512_castps_si512(x);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
  __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                          _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_epi32(rounded, nan, quiet);
}

// Loads and stores of the AVX-512 body: plain in the body, masked in the tail (a
// masked store costs more than a plain one on some cores, e.g. AMD Zen 4).
template <bool kFull>
STRATA_TARGET("avx512f") inline __m512 load16(const float* p, __mmask16 k) {
  if constexpr (kFull) return _mm512_loadu_ps(p);
  return _mm512_maskz_loadu_ps(k, p);
}
template <bool kFull>
STRATA_TARGET("avx512f") inline void store16(float* p, __mmask16 k, __m512 x) {
  if constexpr (kFull) _mm512_storeu_ps(p, x);
  else _mm512_mask_storeu_ps(p, k, x);
}

// 16 elements from i on, the first `count` of them (k: their mask) when not kFull.
template <bool kFull, class W>
STRATA_TARGET("avx512f")
inline void adamw16(const AdamWConstants& c, float* master, const float* grad, float* m, float* v, W* working,
                    int64_t i, int64_t count, __mmask16 k) {
  const __m512 g = _mm512_mul_ps(load16<kFull>(grad + i, k), _mm512_set1_ps(c.grad_scale));
  const __m512 mi = _mm512_fmadd_ps(_mm512_set1_ps(c.beta1), load16<kFull>(m + i, k),
                                    _mm512_mul_ps(_mm512_set1_ps(c.one_minus_beta1), g));
  const __m512 vi = _mm512_fmadd_ps(_mm512_set1_ps(c.beta2), load16<kFull>(v + i, k),
                                    _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(c.one_minus_beta2), g), g));
  __m512 p = load16<kFull>(master + i, k);
  const __m512 denom = _mm512_add_ps(_mm512_sqrt_ps(_mm512_mul_ps(vi, _mm512_set1_ps(c.inv_bias2))),
                                     _mm512_set1_ps(c.eps));
  const __m512 step = _mm512_fmadd_ps(_mm512_set1_ps(c.weight_decay), p,
                                      _mm512_div_ps(_mm512_mul_ps(mi, _mm512_set1_ps(c.inv_bias1)), denom));
  p = _mm512_fmadd_ps(_mm512_set1_ps(-c.lr), step, p);
  store16<kFull>(m + i, k, mi);
  store16<kFull>(v + i, k, vi);
  store16<kFull>(master + i, k, p);
  if constexpr (std::is_same_v<W, float>) {
    store16<kFull>(working + i, k, p);
  } else if constexpr (!std::is_void_v<W>) {
    // Narrow in registers: a masked narrowing store to memory (vpmovdw m256{k}) is
    // microcoded and slow on some cores.
    __m256i h = std::is_same_v<W, bf16> ? _mm512_cvtepi32_epi16(bf16_bits(p))
                                        : _mm512_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if constexpr (kFull) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(working + i), h);
    } else {
      alignas(32) uint16_t bits[16];
      _mm256_store_si256(reinterpret_cast<__m256i*>(bits), h);
      std::memcpy(working + i, bits, size_t(count) * 2);
    }
  }
}

template <class W>
STRATA_TARGET("avx512f")
void adamw_range_avx512(const AdamWConstants& c, float* master, const float* grad, float* m, float* v, W* working,
                        int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) adamw16<true>(c, master, grad, m, v, working, i, 16, 0xffff);
  // The tail runs the same instructions under a mask rather than a scalar loop.
  if (i < n) adamw16<false>(c, master, grad, m, v, working, i, n - i, __mmask16((1u << (n - i)) - 1u));
}

// bf16_bits for 8 lanes (AVX2 has no unsigned compare; |x| fits a signed one).
STRATA_TARGET("avx2,fma,f16c") inline __m256i bf16_bits8(__m256 x) {
  __m256i u = _mm256_castps_si256(x);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
  __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

// As load16 / store16; AVX2 masks are lanes of all ones (vmaskmovps, whose store
// form is microcoded on AMD cores).
template <bool kFull>
STRATA_TARGET("avx2,fma,f16c") inline __m256 load8(const float* p, __m256i k) {
  if constexpr (kFull) return _mm256_loadu_ps(p);
  return _mm256_maskload_ps(p, k);
}
template <bool kFull>
STRATA_TARGET("avx2,fma,f16c") inline void store8(float* p, __m256i k, __m256 x) {
  if constexpr (kFull) _mm256_storeu_ps(p, x);
  else _mm256_maskstore_ps(p, k, x);
}

template <bool kFull, class W>
STRATA_TARGET("avx2,fma,f16c")
inline void adamw8(const AdamWConstants& c, float* master, const float* grad, float* m, float* v, W* working,
                   int64_t i, int64_t count, __m256i k) {
  const __m256 g = _mm256_mul_ps(load8<kFull>(grad + i, k), _mm256_set1_ps(c.grad_scale));
  const __m256 mi = _mm256_fmadd_ps(_mm256_set1_ps(c.beta1), load8<kFull>(m + i, k),
                                    _mm256_mul_ps(_mm256_set1_ps(c.one_minus_beta1), g));
  const __m256 vi = _mm256_fmadd_ps(_mm256_set1_ps(c.beta2), load8<kFull>(v + i, k),
                                    _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(c.one_minus_beta2), g), g));
  __m256 p = load8<kFull>(master + i, k);
  const __m256 denom = _mm256_add_ps(_mm256_sqrt_ps(_mm256_mul_ps(vi, _mm256_set1_ps(c.inv_bias2))),
                                     _mm256_set1_ps(c.eps));
  const __m256 step = _mm256_fmadd_ps(_mm256_set1_ps(c.weight_decay), p,
                                      _mm256_div_ps(_mm256_mul_ps(mi, _mm256_set1_ps(c.inv_bias1)), denom));
  p = _mm256_fmadd_ps(_mm256_set1_ps(-c.lr), step, p);
  store8<kFull>(m + i, k, mi);
  store8<kFull>(v + i, k, vi);
  store8<kFull>(master + i, k, p);
  if constexpr (std::is_same_v<W, float>) {
    store8<kFull>(working + i, k, p);
  } else if constexpr (!std::is_void_v<W>) {
    __m128i h;
    if constexpr (std::is_same_v<W, bf16>) {
      // Each lane's bits are < 2^16, so the saturating pack is exact; it packs per
      // 128-bit half, and the permute puts the halves' results together.
      const __m256i b = bf16_bits8(p);
      h = _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(b, b), 0x08));
    } else {
      h = _mm256_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    }
    if constexpr (kFull) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(working + i), h);
    } else {
      alignas(16) uint16_t bits[8];
      _mm_store_si128(reinterpret_cast<__m128i*>(bits), h);
      std::memcpy(working + i, bits, size_t(count) * 2);
    }
  }
}

template <class W>
STRATA_TARGET("avx2,fma,f16c")
void adamw_range_avx2(const AdamWConstants& c, float* master, const float* grad, float* m, float* v, W* working,
                      int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) adamw8<true>(c, master, grad, m, v, working, i, 8, _mm256_setzero_si256());
  if (i < n) {
    const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n - i)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    adamw8<false>(c, master, grad, m, v, working, i, n - i, k);
  }
}
#pragma GCC diagnostic pop
#endif

template <class W>
void adamw_all(const ops::AdamWArgs& a, W* working, AdamWBody body) {
  const AdamWConstants c = constants(a);
  float* master = a.master.ptr<float>();
  const float* grad = a.grad.ptr<float>();
  float* m = a.m.ptr<float>();
  float* v = a.v.ptr<float>();
  auto range = &adamw_range_scalar<W>;
#if defined(__x86_64__)
  if (body == AdamWBody::avx512) range = &adamw_range_avx512<W>;
  if (body == AdamWBody::avx2) range = &adamw_range_avx2<W>;
#endif
  parallel_for(a.master.numel(), kGrain, [&](int64_t begin, int64_t end) {
    W* w = nullptr;
    if constexpr (!std::is_same_v<W, void>) w = working + begin;
    range(c, master + begin, grad + begin, m + begin, v + begin, w, end - begin);
  });
}

}  // namespace

AdamWBody adamw_body_best() {
#if defined(__x86_64__)
  static const AdamWBody best = __builtin_cpu_supports("avx512f") ? AdamWBody::avx512
                                : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                                          __builtin_cpu_supports("f16c")
                                    ? AdamWBody::avx2
                                    : AdamWBody::scalar;
  return best;
#else
  return AdamWBody::scalar;
#endif
}

const char* adamw_body_name(AdamWBody body) {
  switch (body) {
    case AdamWBody::avx512: return "avx512";
    case AdamWBody::avx2: return "avx2";
    case AdamWBody::scalar: return "scalar";
  }
  return "?";
}

void adamw_step(const ops::AdamWArgs& a, AdamWBody body) {
  OpTimer timer(OpCategory::adamw);
  STRATA_CHECK(int(body) <= int(adamw_body_best()), "adamw_step: this CPU cannot run the " << adamw_body_name(body)
                                                     << " body; the best it runs is " << adamw_body_name(adamw_body_best()));
  if (!a.working.defined()) {
    adamw_all<void>(a, nullptr, body);
    return;
  }
  dispatch_float(a.working.dtype, [&](auto tag) {
    using W = decltype(tag);
    adamw_all<W>(a, a.working.ptr<W>(), body);
  });
}

void adamw_step(const ops::AdamWArgs& a) { adamw_step(a, adamw_body_best()); }

}  // namespace strata::cpu
