// The kernels of one gpt2-small training step at B 16 x T 1024, bf16, one at a time
// through their op entry points (kernels/ops.h): attention forward / backward (12 heads
// of 64 and of 128, causal), the block's GEMMs (qkv, proj, fc with the GELU epilogue,
// fc-proj) and the head (vocabulary 50257, unpadded and as the head runs it: logits
// with row stride 50304, out_padded / d_out_padded), forward and backward,
// LayerNorm, the bias gradient, cross-entropy and AdamW over 124M parameters.
//   strata-bench --device cuda:N kernels   timed with CUDA events: median of up to 20
//                                          runs after warm-up, TFLOP/s or GB/s and %
//                                          of the GPU's peak (plan.cpp's FLOP/s table,
//                                          the DRAM bandwidth the device reports)
//   strata-bench kernels                   no GPU: each kernel's FLOPs, bytes and
//                                          FLOP/byte, which is what bounds it
//   strata-bench-emu kernels               (built with the tests) each op run once on
//                                          the emulated device at B 1 x T 128, with the
//                                          bank-conflict degree of every CUDA kernel
// Invariant: FLOPs and bytes are the op's necessary work (causal attention counts half
// the score matrix; bytes are what the op must read + write once), the same figures
// in both modes, so a GPU run's % of peak reads against the CPU run's table.
#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench.h"
#include "cuda/runtime.h"
#if defined(STRATA_CUDA_EMULATION)
#include "cuda/emu/emu.h"
#endif
#include "ops.h"
#include "strata/plan.h"
#include "strata/strata.h"

namespace strata::bench {

namespace {

// The step's shape: gpt2-small bf16 at B 16 x T 1024. The emulated report runs each
// kernel once at a smaller one (conflict degrees are a property of the access pattern).
struct Dims {
  int64_t B = 16, T = 1024, vocab = 50257, vocab_padded = 50304, params = 124'000'000;
};
Dims dims;
int64_t rows() { return dims.B * dims.T; }
constexpr int64_t kC = 768, kHeads = 12;

// Device memory with deterministic contents in [lo, hi), staged through the CPU.
class DeviceTensor {
 public:
  DeviceTensor(Device& device, DType dtype, std::initializer_list<int64_t> shape, float lo = -1, float hi = 1)
      : view_(nullptr, dtype, shape, &device) {
    buffer_ = Buffer(device, view_.nbytes(), "kernel benchmark tensor");
    view_.data = buffer_.data();
    const BenchTensor host(bench_device(), dtype, shape, lo, hi);
    device.stream().copy(view_.data, host.view().data, view_.nbytes());
    device.stream().synchronize();
  }
  const TensorView& operator*() const { return view_; }

 private:
  Buffer buffer_;
  TensorView view_;
};
using Tensors = std::vector<std::unique_ptr<DeviceTensor>>;

// One benchmarked kernel: its work, and a setup that allocates its tensors on a device
// and returns the call to time (the tensors live as long as `keep`).
struct Kernel {
  std::string name, shape;
  double flops = 0, bytes = 0;
  std::function<std::function<void(Stream&)>(Device&, Tensors& keep)> setup;
};

TensorView make(Device& d, Tensors& keep, DType t, std::initializer_list<int64_t> shape, float lo = -1,
                float hi = 1) {
  keep.push_back(std::make_unique<DeviceTensor>(d, t, shape, lo, hi));
  return **keep.back();
}

constexpr DType bf = DType::bf16, f32 = DType::f32;

ops::AttentionForwardArgs forward_of(const ops::AttentionBackwardArgs& b) {
  ops::AttentionForwardArgs f;
  f.out = b.out, f.lse = b.lse, f.qkv = b.qkv, f.n_heads = b.n_heads;
  return f;
}

void add_attention(std::vector<Kernel>& ks, int64_t hd) {
  const int64_t c = kHeads * hd;
  const double score_flops = 2.0 * dims.B * kHeads * double(dims.T) * dims.T * hd / 2;  // one T x T x HD product, causal half
  const std::string shape =
      std::to_string(dims.B) + "x" + std::to_string(dims.T) + "x12x" + std::to_string(hd) + " causal";
  const double qkv = 2.0 * rows() * 3 * c, out = 2.0 * rows() * c, lse = 4.0 * dims.B * kHeads * dims.T;
  auto tensors = [=](Device& d, Tensors& keep, bool backward) {
    ops::AttentionBackwardArgs a;
    a.qkv = make(d, keep, bf, {dims.B, dims.T, 3 * c}), a.out = make(d, keep, bf, {dims.B, dims.T, kHeads, hd});
    a.lse = make(d, keep, f32, {dims.B, kHeads, dims.T}), a.n_heads = kHeads;
    ops::attention_forward(forward_of(a), d.stream());  // out and lse for backward
    if (backward) a.d_out = make(d, keep, bf, {dims.B, dims.T, kHeads, hd}), a.d_qkv = make(d, keep, bf, {dims.B, dims.T, 3 * c});
    return a;
  };
  ks.push_back({"attention_forward", shape, 2 * score_flops, qkv + out + lse, [=](Device& d, Tensors& keep) {
                  const ops::AttentionBackwardArgs a = tensors(d, keep, false);
                  return std::function<void(Stream&)>([f = forward_of(a)](Stream& s) { ops::attention_forward(f, s); });
                }});
  // Backward: the scores again, dV, dP, dQ and dK: five products.
  ks.push_back({"attention_backward", shape, 5 * score_flops, 2 * qkv + 2 * out + lse,
                [=](Device& d, Tensors& keep) {
                  const ops::AttentionBackwardArgs a = tensors(d, keep, true);
                  return std::function<void(Stream&)>([a](Stream& s) { ops::attention_backward(a, s); });
                }});
}

// ld_out > oc: out / d_out with that padded row stride (the head's vocabulary).
void add_gemm(std::vector<Kernel>& ks, const std::string& name, int64_t oc, int64_t ic, bool bias, bool gelu,
              int64_t ld_out = 0) {
  const int64_t ld = ld_out ? ld_out : oc;
  const double mnk = double(rows()) * oc * ic, weights = 2.0 * oc * ic;
  const std::string shape = std::to_string(rows()) + "x" + std::to_string(ic) + " -> " + std::to_string(oc);
  const double fwd_bytes = 2.0 * rows() * ic + weights + 2.0 * rows() * oc * (gelu ? 2 : 1);
  ks.push_back({"matmul_forward " + name, shape + (gelu ? " +gelu" : ""), 2 * mnk, fwd_bytes,
                [=](Device& d, Tensors& keep) {
                  ops::MatmulForwardArgs a{make(d, keep, bf, {rows(), ld}), make(d, keep, bf, {rows(), ic}),
                                           make(d, keep, bf, {oc, ic}, -0.05f, 0.05f),
                                           bias ? make(d, keep, bf, {oc}) : TensorView{}};
                  if (gelu) a.gelu_pre = make(d, keep, bf, {rows(), oc});
                  a.out_padded = ld != oc;
                  return std::function<void(Stream&)>([a](Stream& s) { ops::matmul_forward(a, s); });
                }});
  // d_inp and d_weight (f32, accumulated: read + written); the bias gradient is its own row.
  const double bwd_bytes = 2.0 * rows() * oc + 2.0 * rows() * ic + weights + 2 * 4.0 * oc * ic + 2.0 * rows() * ic;
  ks.push_back({"matmul_backward " + name, shape, 4 * mnk, bwd_bytes, [=](Device& d, Tensors& keep) {
                  ops::MatmulBackwardArgs a{make(d, keep, bf, {rows(), ic}), make(d, keep, f32, {oc, ic}), {},
                                            make(d, keep, bf, {rows(), ld}), make(d, keep, bf, {rows(), ic}),
                                            make(d, keep, bf, {oc, ic}, -0.05f, 0.05f)};
                  a.d_out_padded = ld != oc;
                  return std::function<void(Stream&)>([a](Stream& s) { ops::matmul_backward(a, s); });
                }});
}

void add_memory_bound(std::vector<Kernel>& ks, int64_t vocab) {
  const double nc = double(rows()) * kC;
  ks.push_back({"norm_forward", std::to_string(rows()) + "x768 layer", 8 * nc, 2 * nc + 4.0 * kC + 2 * nc + 8.0 * rows(),
                [](Device& d, Tensors& keep) {
                  const ops::NormForwardArgs a{make(d, keep, bf, {rows(), kC}), make(d, keep, f32, {rows()}),
                                               make(d, keep, f32, {rows()}), make(d, keep, bf, {rows(), kC}),
                                               make(d, keep, bf, {kC}, 0.5f, 1.5f), make(d, keep, bf, {kC})};
                  return std::function<void(Stream&)>([a](Stream& s) { ops::norm_forward(a, s); });
                }});
  ks.push_back({"norm_backward", std::to_string(rows()) + "x768 layer", 12 * nc, 3 * 2 * nc + 8.0 * rows() + 2 * 8.0 * kC,
                [](Device& d, Tensors& keep) {
                  ops::NormBackwardArgs a{make(d, keep, bf, {rows(), kC}), make(d, keep, f32, {kC}),
                                          make(d, keep, f32, {kC}), make(d, keep, bf, {rows(), kC}),
                                          make(d, keep, bf, {rows(), kC}), make(d, keep, bf, {kC}, 0.5f, 1.5f),
                                          make(d, keep, f32, {rows()}), make(d, keep, f32, {rows()}, 0.5f, 2.0f)};
                  return std::function<void(Stream&)>([a](Stream& s) { ops::norm_backward(a, s); });
                }});
  const int64_t fc = 4 * kC;
  ks.push_back({"bias_grad (matmul_backward)", std::to_string(rows()) + "x3072 -> 3072", double(rows()) * fc,
                2.0 * rows() * fc + 8.0 * fc, [=](Device& d, Tensors& keep) {
                  const ops::MatmulBackwardArgs a{{},
                                                  {},
                                                  make(d, keep, f32, {fc}),
                                                  make(d, keep, bf, {rows(), fc}),
                                                  make(d, keep, bf, {rows(), kC}),
                                                  make(d, keep, bf, {fc, kC})};
                  return std::function<void(Stream&)>([a](Stream& s) { ops::matmul_backward(a, s); });
                }});
  const double nv = double(rows()) * vocab;
  const std::string ce_shape = std::to_string(rows()) + "x" + std::to_string(vocab);
  auto ce = [=](Device& d, Tensors& keep) {
    ops::CrossEntropyBackwardArgs a{make(d, keep, bf, {rows(), vocab}), make(d, keep, bf, {rows(), vocab}, -8, 8),
                                    make(d, keep, f32, {rows()}), make(d, keep, DType::i32, {rows()}, 0, float(vocab))};
    ops::cross_entropy_forward({make(d, keep, f32, {rows()}), a.lse, a.logits, a.targets}, d.stream());  // lse
    return a;
  };
  ks.push_back({"cross_entropy_forward", ce_shape, 4 * nv, 2 * nv + 12.0 * rows(), [=](Device& d, Tensors& keep) {
                  const ops::CrossEntropyBackwardArgs a = ce(d, keep);
                  const TensorView losses = make(d, keep, f32, {rows()});
                  return std::function<void(Stream&)>([a, losses](Stream& s) {
                    ops::cross_entropy_forward({losses, a.lse, a.logits, a.targets}, s);
                  });
                }});
  ks.push_back({"cross_entropy_backward", ce_shape, 3 * nv, 4 * nv + 8.0 * rows(), [=](Device& d, Tensors& keep) {
                  const ops::CrossEntropyBackwardArgs a = ce(d, keep);
                  return std::function<void(Stream&)>([a](Stream& s) { ops::cross_entropy_backward(a, s); });
                }});
  const int64_t params = dims.params;  // gpt2-small, every unit in one shard
  ks.push_back({"adamw_step", format_fixed(double(params) / 1e6, 0) + "M params, bf16 working", 12.0 * params, 30.0 * params,
                [=](Device& d, Tensors& keep) {
                  ops::AdamWArgs a;
                  a.master = make(d, keep, f32, {params}), a.grad = make(d, keep, f32, {params});
                  a.m = make(d, keep, f32, {params}, -0.01f, 0.01f), a.v = make(d, keep, f32, {params}, 0, 1e-4f);
                  a.working = make(d, keep, bf, {params}), a.weight_decay = 0.1f, a.step = 10;
                  return std::function<void(Stream&)>([a](Stream& s) { ops::adamw_step(a, s); });
                }});
}

std::vector<Kernel> kernels() {
  std::vector<Kernel> ks;
  add_attention(ks, 64);
  add_attention(ks, 128);
  add_gemm(ks, "qkv", 3 * kC, kC, true, false);
  add_gemm(ks, "proj", kC, kC, true, false);
  add_gemm(ks, "fc", 4 * kC, kC, true, true);
  add_gemm(ks, "fc-proj", kC, 4 * kC, true, false);
  add_gemm(ks, "head", dims.vocab, kC, false, false);
  add_gemm(ks, "head padded", dims.vocab, kC, false, false, dims.vocab_padded);
  add_memory_bound(ks, dims.vocab_padded);
  return ks;
}

// Compute-bound when it does more FLOPs per byte than the GPU's ridge point (an H100's
// is near 300 in bf16; any kernel here is far on one side of it).
bool compute_bound(const Kernel& k) { return k.flops / k.bytes > 50; }

#if !defined(STRATA_CUDA_EMULATION)
// Median milliseconds of `run` on `s`, CUDA events around each call: up to 20 calls
// after warm-up, fewer for slow kernels (about half a second each at most).
double median_ms(Stream& s, const std::function<void(Stream&)>& run) {
  struct Events {  // destroyed also when a kernel throws
    void* a = cuda_runtime::timing_event_create();
    void* b = cuda_runtime::timing_event_create();
    ~Events() {
      cuda_runtime::event_destroy(a);
      cuda_runtime::event_destroy(b);
    }
  } e;
  auto once = [&] {
    cuda_runtime::event_record(e.a, s.native());
    run(s);
    cuda_runtime::event_record(e.b, s.native());
    return double(cuda_runtime::event_elapsed_ms(e.a, e.b));
  };
  once();  // warm-up: cuBLASLt plans, first-touch
  const double first = once();
  const int n = int(std::clamp(500.0 / std::max(first, 1e-3), 3.0, 20.0));
  std::vector<double> ms{first};
  for (int i = 1; i < n; ++i) ms.push_back(once());
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

std::string percent(double fraction) { return fraction > 0 ? format_fixed(100 * fraction, 1) + "%" : "-"; }

void bench_kernels_cuda() {
  std::unique_ptr<Device> device = Device::cuda(cuda_index());  // "no CUDA device: ..." without one
  const std::string product = cuda_runtime::product_name(cuda_index());
  const double peak = peak_flops(*device, Precision::bf16), bandwidth = cuda_runtime::memory_bandwidth(cuda_index());
  Table t({"kernel", "shape", "GFLOP", "MB", "time", "TFLOP/s", "GB/s", "% peak", "bound"});
  for (const Kernel& k : kernels()) {
    try {
      Tensors keep;
      const std::function<void(Stream&)> run = k.setup(*device, keep);
      const double ms = median_ms(device->stream(), run), s = ms / 1e3;
      const bool compute = compute_bound(k);
      const double bound = compute ? peak : bandwidth;  // 0: unknown
      const double reached = bound > 0 ? (compute ? k.flops : k.bytes) / s / bound : 0;
      t.row({k.name, k.shape, format_fixed(k.flops / 1e9, 1), format_fixed(k.bytes / 1e6, 1), format_seconds(s),
             format_fixed(k.flops / s / 1e12, 1), format_fixed(k.bytes / s / 1e9, 0), percent(reached),
             compute ? "flops" : "memory"});
      std::printf("RESULT kernel %s [%s] %.4f ms\n", k.name.c_str(), k.shape.c_str(), ms);
    } catch (const std::exception& e) {  // out of memory, a kernel this build lacks: say so, go on
      t.row({k.name, k.shape, "-", "-", "-", "-", "-", "-", std::string("failed: ") + e.what()});
    }
  }
  t.print("kernels on cuda:" + std::to_string(cuda_index()) + ", " + product +
          ", bf16, median of up to 20 runs (CUDA events); % peak: of " +
          (peak > 0 ? format_fixed(peak / 1e12, 0) + " TFLOP/s (bf16 dense)" : std::string("an unknown FLOP/s peak")) +
          " or of " +
          (bandwidth > 0 ? format_fixed(bandwidth / 1e9, 0) + " GB/s (DRAM)" : std::string("unknown GB/s")));
}

void bench_kernels_cpu() {
  Table t({"kernel", "shape", "GFLOP", "MB", "FLOP/byte", "bound"});
  for (const Kernel& k : kernels())
    t.row({k.name, k.shape, format_fixed(k.flops / 1e9, 2), format_fixed(k.bytes / 1e6, 1),
           format_fixed(k.flops / k.bytes, 1), compute_bound(k) ? "flops" : "memory"});
  t.print("kernels of a gpt2-small bf16 step (B 16 x T 1024): work per call, not timed here; "
          "`strata-bench --device cuda:N kernels` times them on a GPU");
}

#endif  // !STRATA_CUDA_EMULATION

#if defined(STRATA_CUDA_EMULATION)
// Each kernel once on the emulated CUDA device at B 1 x T 128 (vocabulary 4000, 1M
// AdamW parameters), with the work of the full-size call beside the shared-memory
// bank-conflict degrees of every CUDA kernel the op launched (the emulator's report).
void bench_kernels_emulated() {
  const std::vector<Kernel> full = kernels();
  dims = Dims{1, 128, 4000, 4032, 1 << 20};
  const std::vector<Kernel> small = kernels();
  std::unique_ptr<Device> device = Device::cuda(0);  // the emulated device
  std::printf("kernels of a gpt2-small bf16 step (B 16 x T 1024), work per call; each run once on the emulated CUDA "
              "device at B 1 x T 128 for its shared-memory bank conflicts (degree: the most distinct words one bank "
              "serves in a warp instruction; 1 is conflict-free)\n\n");
  for (size_t i = 0; i < full.size(); ++i) {
    const Kernel& k = full[i];
    std::printf("%s [%s]: %.2f GFLOP, %.1f MB, %.1f FLOP/byte, %s-bound\n", k.name.c_str(), k.shape.c_str(),
                k.flops / 1e9, k.bytes / 1e6, k.flops / k.bytes, compute_bound(k) ? "flops" : "memory");
    try {
      Tensors keep;
      const std::function<void(Stream&)> run = small[i].setup(*device, keep);
      device->stream().synchronize();
      emu::reset_stats();  // the op's own kernels only, not its setup's
      run(device->stream());
      device->stream().synchronize();
      std::printf("%s\n", emu::conflict_report().c_str());
    } catch (const std::exception& e) {
      std::printf("  failed: %s\n\n", e.what());
    }
  }
}
#endif

}  // namespace

#if defined(STRATA_CUDA_EMULATION)
STRATA_BENCH("kernels", bench_kernels_emulated);
#else
STRATA_BENCH_CUDA("kernels", bench_kernels_cuda);
STRATA_BENCH("kernels", bench_kernels_cpu);
#endif

}  // namespace strata::bench
