// strata-bench adamw: throughput of the CPU AdamW the offloaded optimizer runs
// (ops::adamw_step on f32 master, m, v; alone and with the bf16 working copy) at
// 64M..1G parameters, against the memory-bandwidth bound measured in the same run:
// a STREAM-triad-style loop over the same arrays that touches the same bytes per
// parameter (reads p, g, m, v = 16 B; writes p, m, v = 12 B; + 2 B for the bf16 copy)
// with trivial arithmetic. Options: --sizes (default 64M,128M,256M,512M,1G),
// --threads (default 2). Each size is allocated, measured and freed before the next.
// Invariant: the kernel and its bound loop move exactly the same bytes over the same
// buffers, split into the same chunks, so strata/bound is the fraction of the
// machine's bandwidth AdamW achieves; nothing is asserted.
#include <algorithm>
#include <bit>
#include <cstdio>
#include <iostream>

#include "bench.h"
#include "kernels/cpu/util.h"
#include "lib/optim/adamw_args.h"
#include "ops.h"
#include "strata/error.h"

namespace strata::bench {
namespace {

constexpr int kRounds = 5;              // timed calls of each loop, alternating; the fastest counts
constexpr int64_t kGrain = int64_t(1) << 15;  // adamw_step's chunk size

// The bound: per element the bytes adamw_step moves, with an add in place of the
// update. `zero` is 0 at run time (the compiler cannot know), so values stay as they
// are and AdamW keeps seeing sane inputs. __restrict parameters let the compiler
// vectorise without alias checks.
void bound_range(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v, int64_t n,
                 float zero) {
  for (int64_t i = 0; i < n; ++i) {
    p[i] += zero * g[i];
    m[i] += zero * v[i];
    v[i] += zero * g[i];
  }
}

void bound_range_bf16(float* __restrict p, const float* __restrict g, float* __restrict m, float* __restrict v,
                      uint16_t* __restrict working, int64_t n, float zero) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = p[i] + zero * g[i];
    p[i] = x;
    m[i] += zero * v[i];
    v[i] += zero * g[i];
    working[i] = uint16_t(std::bit_cast<uint32_t>(x) >> 16);  // truncation: the bound needs the bytes, not the rounding
  }
}

void bound_loop(float* p, const float* g, float* m, float* v, uint16_t* working, int64_t n, float zero) {
  cpu::parallel_for(n, kGrain, [=](int64_t begin, int64_t end) {
    if (working)
      bound_range_bf16(p + begin, g + begin, m + begin, v + begin, working + begin, end - begin, zero);
    else
      bound_range(p + begin, g + begin, m + begin, v + begin, end - begin, zero);
  });
}

std::string count_name(int64_t n) {
  if (n % (int64_t(1) << 30) == 0) return std::to_string(n >> 30) + "G";
  if (n % (int64_t(1) << 20) == 0) return std::to_string(n >> 20) + "M";
  return std::to_string(n);
}

void measure_size(Table& t, int64_t n) {
  Device& dev = bench_device();
  // First touch (page faults) happens here, while the arrays are filled.
  BenchTensor master(dev, DType::f32, {n}, -1.0f, 1.0f), grad(dev, DType::f32, {n}, -1e-3f, 1e-3f);
  BenchTensor m(dev, DType::f32, {n}, -1e-4f, 1e-4f), v(dev, DType::f32, {n}, 0.0f, 1e-6f);
  BenchTensor working(dev, DType::bf16, {n});
  volatile float zero_source = 0.0f;
  const float zero = zero_source;
  for (bool with_working : {false, true}) {
    ops::AdamWArgs a = adamw_args(AdamWOptions{}, nullptr, AdamWOptions{}.lr, 1.0f, 1);
    a.master = master.view();
    a.grad = grad.view();
    a.m = m.view();
    a.v = v.view();
    a.working = with_working ? working.view() : TensorView{};
    uint16_t* w = with_working ? working.view().ptr<uint16_t>() : nullptr;
    auto strata = [&] {
      ops::adamw_step(a, dev.stream());
      ++a.step;
    };
    auto bound = [&] {
      bound_loop(master.view().ptr<float>(), grad.view().ptr<float>(), m.view().ptr<float>(), v.view().ptr<float>(),
                 w, n, zero);
    };
    // Alternating, so drift in the machine's speed (other processes) hits both alike.
    strata();
    bound();
    double strata_s = 1e300, bound_s = 1e300;
    for (int r = 0; r < kRounds; ++r) {
      strata_s = std::min(strata_s, min_seconds(strata, 0, 1, 0));
      bound_s = std::min(bound_s, min_seconds(bound, 0, 1, 0));
    }
    const double bytes_per_param = with_working ? 30 : 28;
    const double strata_rate = double(n) / strata_s, bound_rate = double(n) / bound_s;
    const std::string variant = with_working ? "f32 + bf16 copy" : "f32";
    t.row({count_name(n), variant, format_fixed(bytes_per_param, 0), format_seconds(strata_s), format_fixed(strata_rate / 1e9, 3),
           format_gbps(bytes_per_param * double(n), strata_s), format_fixed(bound_rate / 1e9, 3),
           format_gbps(bytes_per_param * double(n), bound_s), format_ratio(strata_rate / bound_rate)});
    const std::string key = "adamw_" + count_name(n) + (with_working ? "_bf16" : "_f32");
    std::printf("RESULT %s_params_per_s %.0f\nRESULT %s_bound_params_per_s %.0f\n", key.c_str(), strata_rate,
                key.c_str(), bound_rate);
  }
}

void bench_adamw() {
  const Options& o = options();
  const std::vector<int64_t> sizes =
      o.sizes.empty() ? parse_counts("64M,128M,256M,512M,1G") : parse_counts(o.sizes);
  const int threads = o.threads > 0 ? o.threads : 2;
  set_num_threads(threads);
  Table t({"params", "variant", "B/param", "strata time", "strata G params/s", "strata GB/s", "bound G params/s",
           "bound GB/s", "strata/bound"});
  try {
    for (int64_t n : sizes) measure_size(t, n);  // one size at a time: its arrays are freed before the next
  } catch (...) {
    set_num_threads(0);
    throw;
  }
  set_num_threads(0);
  t.print("adamw_step (the offloaded optimizer's kernel) vs a triad-style loop moving the same bytes, " +
          std::to_string(threads) + " threads, best of " + std::to_string(kRounds) + " alternating rounds");
}

// On request: the default sizes need 18 GiB at 1G.
STRATA_BENCH_ON_REQUEST("adamw", bench_adamw);

}  // namespace
}  // namespace strata::bench
