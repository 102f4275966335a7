// strata-selftest: runs ops on the GPU and on the CPU backend with the same inputs
// and prints pass / fail per op and dtype. Without a GPU (or in a build without CUDA)
// it prints the "no CUDA device" error and exits 2; the CPU path is untouched.
//   build/tools/strata-selftest [device index]
// Invariant: inputs are generated once on the host and copied to both devices, so a
// failure is a disagreement between backends, never between inputs.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cuda/runtime.h"
#include "ops.h"
#include "strata/device.h"
#include "strata/error.h"

namespace strata {
namespace {

float to_float(DType t, const void* p, int64_t i) {
  switch (t) {
    case DType::bf16: return bf16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::f16: return f16_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::i32: return float(static_cast<const int32_t*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

void from_float(DType t, void* p, int64_t i, float v) {
  switch (t) {
    case DType::bf16: static_cast<uint16_t*>(p)[i] = float_to_bf16(v); break;
    case DType::f16: static_cast<uint16_t*>(p)[i] = float_to_f16(v); break;
    case DType::i32: static_cast<int32_t*>(p)[i] = int32_t(v); break;
    default: static_cast<float*>(p)[i] = v;
  }
}

// One tensor on both devices, from the same host values.
struct Twin {
  std::vector<uint64_t> host;  // the CPU device's memory (CPU memory is host memory)
  Buffer gpu_buffer;
  TensorView cpu, gpu;

  Twin(Device& gpu_device, DType dtype, std::initializer_list<int64_t> shape, float lo, float hi, uint32_t seed) {
    cpu = TensorView(nullptr, dtype, shape);
    host.resize((cpu.nbytes() + 7) / 8);
    cpu.data = host.data();
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(lo, hi);
    for (int64_t i = 0; i < cpu.numel(); ++i) from_float(dtype, cpu.data, i, dtype == DType::i32 ? std::floor(u(rng)) : u(rng));
    gpu_buffer = Buffer(gpu_device, cpu.nbytes(), "selftest tensor");
    gpu = cpu;
    gpu.data = gpu_buffer.data();
    gpu.device = &gpu_device;
    cuda_runtime::copy_async(gpu.data, cpu.data, cpu.nbytes(), gpu_device.stream().native());
  }

  // Largest difference between the GPU's and the CPU's values, relative to max(1, max |cpu|).
  double error(Stream& s) const {
    std::vector<uint64_t> back(host.size());
    cuda_runtime::copy_async(back.data(), gpu.data, cpu.nbytes(), s.native());
    s.synchronize();
    double scale = 1, err = 0;
    for (int64_t i = 0; i < cpu.numel(); ++i) scale = std::max(scale, double(std::fabs(to_float(cpu.dtype, cpu.data, i))));
    for (int64_t i = 0; i < cpu.numel(); ++i) {
      const double a = to_float(cpu.dtype, back.data(), i), b = to_float(cpu.dtype, cpu.data, i);
      err = std::max(err, std::isnan(a) != std::isnan(b) ? INFINITY : (std::isnan(a) ? 0.0 : std::fabs(a - b) / scale));
    }
    return err;
  }
};

double tolerance(DType t) { return t == DType::bf16 ? 2e-2 : t == DType::f16 ? 4e-3 : 1e-4; }

int failures = 0;

void report(const char* op, DType t, double err, double tol) {
  const bool ok = err <= tol;
  failures += !ok;
  std::printf("%-24s %-5s %s  max rel error %.3g (tolerance %.3g)\n", op, dtype_name(t), ok ? "PASS" : "FAIL", err, tol);
}

void run(Device& gpu) {
  Device& cpu = *Device::cpu().release();  // lives to the end of the program
  Stream &cs = cpu.stream(), &gs = gpu.stream();
  for (DType t : {DType::f32, DType::bf16, DType::f16}) {
    {
      Twin a(gpu, t, {1000}, -2, 2, 1), b(gpu, t, {1000}, -2, 2, 2), out(gpu, t, {1000}, 0, 0, 3);
      ops::add({out.cpu, a.cpu, b.cpu}, cs);
      ops::add({out.gpu, a.gpu, b.gpu}, gs);
      report("add", t, out.error(gs), tolerance(t));
      ops::gelu_forward({out.cpu, a.cpu}, cs);
      ops::gelu_forward({out.gpu, a.gpu}, gs);
      report("gelu_forward", t, out.error(gs), tolerance(t));
    }
    {
      Twin inp(gpu, t, {64, 768}, -1, 3, 4), w(gpu, t, {768}, 0.5, 1.5, 5), bias(gpu, t, {768}, -1, 1, 6);
      Twin out(gpu, t, {64, 768}, 0, 0, 7), mean(gpu, DType::f32, {64}, 0, 0, 8), rstd(gpu, DType::f32, {64}, 0, 0, 9);
      ops::norm_forward({out.cpu, mean.cpu, rstd.cpu, inp.cpu, w.cpu, bias.cpu}, cs);
      ops::norm_forward({out.gpu, mean.gpu, rstd.gpu, inp.gpu, w.gpu, bias.gpu}, gs);
      report("norm_forward", t, out.error(gs), tolerance(t));
    }
    {
      Twin inp(gpu, t, {128, 256}, -1, 1, 10), w(gpu, t, {384, 256}, -0.1, 0.1, 11), b(gpu, t, {384}, -1, 1, 12);
      Twin out(gpu, t, {128, 384}, 0, 0, 13);
      ops::matmul_forward({out.cpu, inp.cpu, w.cpu, b.cpu}, cs);
      ops::matmul_forward({out.gpu, inp.gpu, w.gpu, b.gpu}, gs);
      report("matmul_forward", t, out.error(gs), tolerance(t));
    }
    {
      Twin logits(gpu, t, {64, 5000}, -8, 8, 14), targets(gpu, DType::i32, {64}, 0, 5000, 15);
      Twin losses(gpu, DType::f32, {64}, 0, 0, 16), lse(gpu, DType::f32, {64}, 0, 0, 17);
      ops::cross_entropy_forward({losses.cpu, lse.cpu, logits.cpu, targets.cpu}, cs);
      ops::cross_entropy_forward({losses.gpu, lse.gpu, logits.gpu, targets.gpu}, gs);
      report("cross_entropy_forward", t, losses.error(gs), tolerance(DType::f32) * 10);
    }
    {
      const int64_t B = 2, T = 200, NH = 4, HD = 64;
      Twin qkv(gpu, t, {B, T, 3 * NH * HD}, -2, 2, 18), out(gpu, t, {B, T, NH, HD}, 0, 0, 19);
      Twin lse(gpu, DType::f32, {B, NH, T}, 0, 0, 20);
      ops::AttentionForwardArgs a;
      a.n_heads = NH;
      a.out = out.cpu, a.lse = lse.cpu, a.qkv = qkv.cpu;
      ops::attention_forward(a, cs);
      a.out = out.gpu, a.lse = lse.gpu, a.qkv = qkv.gpu;
      ops::attention_forward(a, gs);
      report("attention_forward", t, out.error(gs), tolerance(t));
    }
  }
  {
    Twin master(gpu, DType::f32, {10000}, -1, 1, 21), grad(gpu, DType::f32, {10000}, -1, 1, 22);
    Twin m(gpu, DType::f32, {10000}, -0.1, 0.1, 23), v(gpu, DType::f32, {10000}, 0, 0.01, 24);
    Twin work(gpu, DType::bf16, {10000}, 0, 0, 25);
    ops::AdamWArgs a;
    a.lr = 1e-3f, a.weight_decay = 0.1f, a.step = 3;
    a.master = master.cpu, a.grad = grad.cpu, a.m = m.cpu, a.v = v.cpu, a.working = work.cpu;
    ops::adamw_step(a, cs);
    a.master = master.gpu, a.grad = grad.gpu, a.m = m.gpu, a.v = v.gpu, a.working = work.gpu;
    ops::adamw_step(a, gs);
    report("adamw_step (master)", DType::f32, master.error(gs), 1e-6);
    report("adamw_step (working)", DType::bf16, work.error(gs), 1e-2);
  }
}

}  // namespace
}  // namespace strata

int main(int argc, char** argv) {
  const int index = argc > 1 ? std::atoi(argv[1]) : 0;
  try {
    auto gpu = strata::Device::cuda(index);
    std::printf("strata selftest: %s, CUDA ops against the CPU backend\n", gpu->name().c_str());
    strata::run(*gpu);
    std::printf("%s: %d failure(s)\n", strata::failures ? "FAIL" : "PASS", strata::failures);
    return strata::failures ? 1 : 0;
  } catch (const strata::Error& e) {
    std::fprintf(stderr, "strata selftest: %s\n", e.what());
    return 2;
  }
}
