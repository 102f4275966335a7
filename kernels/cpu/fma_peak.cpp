// FMA-loop peak probe (fma_peak.h): 12 independent accumulator chains per thread,
// more than an FMA's latency times the FMA ports of any x86 core, so the loop runs at
// the ports' throughput. 512-bit and 256-bit loops both run because some cores split
// a 512-bit FMA in two (their 256-bit rate is the same) and others have two 512-bit
// ports; the better one is the peak.
// Invariant: a loop's flop count is exactly what its instructions do (an FMA lane 2,
// a vdpbf16ps lane 4); nothing here is scaled or guessed.
#include "fma_peak.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__AVX512F__) || defined(__FMA__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

#include "gemm_amx.h"
#include "strata/device.h"

namespace strata::cpu {

namespace {

constexpr int kChains = 12;
constexpr int64_t kBurst = 8192;  // iterations per timed burst: ~100k FMAs, tens of microseconds

// One loop: `iters` iterations of kChains independent instructions; returns a value
// that depends on every chain so nothing is optimised away.
struct Loop {
  const char* name;
  double flops_per_iter;
  float (*run)(int64_t iters);
};

#if defined(__AVX512F__)
__attribute__((noinline)) float loop_zmm_f32(int64_t iters) {
  __m512 acc[kChains];
#pragma GCC unroll 12
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(float(i));
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
  for (int64_t n = 0; n < iters; ++n) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
  }
  __m512 s = acc[0];
#pragma GCC unroll 12
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}
#endif

#if defined(__FMA__)
__attribute__((noinline)) float loop_ymm_f32(int64_t iters) {
  __m256 acc[kChains];
#pragma GCC unroll 12
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(float(i));
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
  for (int64_t n = 0; n < iters; ++n) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
  }
  __m256 s = acc[0];
#pragma GCC unroll 12
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  return out[0] + out[7];
}
#endif

#if defined(__AVX512BF16__)
__attribute__((noinline)) float loop_zmm_bf16(int64_t iters) {
  __m512 acc[kChains];
#pragma GCC unroll 12
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(float(i));
  // Small normal bf16 pairs: the sums grow by ~1e-6 an instruction, never overflow.
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(5e-4f), _mm512_set1_ps(5e-4f));
  for (int64_t n = 0; n < iters; ++n) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
#pragma GCC unroll 12
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}
#endif

// An AMX round (four TDPBF16PS) takes as long as ~4 rounds of the zmm loops: an
// iteration is a quarter round, so a burst lasts about as long as theirs.
float amx_burst(int64_t iters) { return amx_peak_loop(iters / 4); }

// Without AVX-512 or FMA: whatever the compiler makes of 12 chains of 8 floats.
__attribute__((noinline)) float loop_portable_f32(int64_t iters) {
  float acc[kChains][8];
  for (int i = 0; i < kChains; ++i)
    for (int j = 0; j < 8; ++j) acc[i][j] = float(i + j);
  for (int64_t n = 0; n < iters; ++n)
    for (int i = 0; i < kChains; ++i)
      for (int j = 0; j < 8; ++j) acc[i][j] = acc[i][j] * 0.999999f + 1e-6f;
  float s = 0;
  for (int i = 0; i < kChains; ++i) s += acc[i][0] + acc[i][7];
  return s;
}

std::vector<Loop> f32_loops() {
  std::vector<Loop> loops;
#if defined(__AVX512F__)
  loops.push_back({"zmm vfmadd231ps x12", kChains * 16 * 2.0, loop_zmm_f32});
#endif
#if defined(__FMA__)
  loops.push_back({"ymm vfmadd231ps x12", kChains * 8 * 2.0, loop_ymm_f32});
#endif
  if (loops.empty()) loops.push_back({"portable f32 multiply-add x12", kChains * 8 * 2.0, loop_portable_f32});
  return loops;
}

// One round: every thread runs bursts for `seconds`, all at once; each thread's rate
// is its fastest burst. Returns the sum of the threads' rates.
double round_flops(const Loop& loop, int threads, double seconds) {
  using Clock = std::chrono::steady_clock;
  std::atomic<int> ready{0};
  std::vector<double> rate(size_t(threads), 0.0);
  std::atomic<float> sink{0};
  auto body = [&](int t) {
    ready.fetch_add(1);
    while (ready.load() < threads) {
    }
    const auto end = Clock::now() + std::chrono::duration<double>(seconds);
    double best = 1e300;
    float s = 0;
    for (auto now = Clock::now(); now < end;) {
      s += loop.run(kBurst);
      const auto after = Clock::now();
      best = std::min(best, std::chrono::duration<double>(after - now).count());
      now = after;
    }
    sink.store(s);
    rate[size_t(t)] = loop.flops_per_iter * double(kBurst) / best;
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(body, t);
  body(0);
  for (auto& th : pool) th.join();
  double sum = 0;
  for (double r : rate) sum += r;
  return sum;
}

// Rounds until the last three agree within 2% (at most 30); the best round counts.
FmaPeak measure(const std::vector<Loop>& loops, int threads) {
  FmaPeak best;
  best.threads = threads;
  for (const Loop& loop : loops) {
    std::vector<double> rounds;
    while (rounds.size() < 30) {
      rounds.push_back(round_flops(loop, threads, 0.01));
      if (rounds.size() >= 3) {
        const auto last = rounds.end() - 3;
        const double lo = *std::min_element(last, rounds.end()), hi = *std::max_element(last, rounds.end());
        if (hi <= lo * 1.02) break;
      }
    }
    const double peak = *std::max_element(rounds.begin(), rounds.end());
    best.rounds += int(rounds.size());
    if (peak > best.flops) {
      best.flops = peak;
      best.kernel = loop.name;
    }
  }
  return best;
}

}  // namespace

namespace {

enum class LoopSet { f32, vdpbf16ps, amx };

const FmaPeak& peak_of(LoopSet set) {
  static std::mutex mu;
  static std::map<std::pair<LoopSet, int>, FmaPeak> cache;  // (loops, threads)
  std::lock_guard<std::mutex> lock(mu);
  const int threads = std::max(1, num_threads());
  auto it = cache.find({set, threads});
  if (it != cache.end()) return it->second;
  std::vector<Loop> loops = f32_loops();
#if defined(__AVX512BF16__)
  if (set == LoopSet::vdpbf16ps) loops = {{"zmm vdpbf16ps x12", kChains * 16 * 4.0, loop_zmm_bf16}};
#endif
  if (set == LoopSet::amx) loops = {{"amx tdpbf16ps x4", kAmxLoopFlops / 4, amx_burst}};
  return cache[{set, threads}] = measure(loops, threads);
}

}  // namespace

const FmaPeak& fma_peak(DType dtype) {
  if (dtype != DType::bf16) return peak_of(LoopSet::f32);
  // Where bf16 GEMMs run on AMX, their peak is the tile loop's.
  if (amx_bf16_enabled()) return peak_of(LoopSet::amx);
  return peak_of(kHaveGemmBf16 ? LoopSet::vdpbf16ps : LoopSet::f32);
}

const FmaPeak& fma_peak_vdpbf16ps() { return peak_of(kHaveGemmBf16 ? LoopSet::vdpbf16ps : LoopSet::f32); }

}  // namespace strata::cpu
