// Placement planning and the rate probes behind `strata plan` (see strata/plan.h).
// Invariant: bytes per parameter are the Trainer's (bf16/fp16: 2 + 4 + 12 = 18,
// fp32: 4 + 4 + 8 = 16); ZeRO-Infinity's 16 B/param (fp16 gradients) is shown beside
// them, never mixed in.
#include "strata/plan.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "lib/core/clock.h"
#include "cpu/fma_peak.h"
#include "cuda/runtime.h"
#include "ops.h"
#include "strata/error.h"
#include "strata/tensor.h"

namespace strata {

namespace {

template <class F>
double best_of(int runs, F&& f) {
  f();  // warm-up: page faults, packing buffers, thread start
  double best = 1e300;
  for (int i = 0; i < runs; ++i) {
    const double t0 = now_seconds();
    f();
    best = std::min(best, now_seconds() - t0);
  }
  return best;
}

// Matmul FLOP/s on the device at `dt`: (n x n) @ (n x n)^T.
double probe_flops(Device& dev, DType dt, int64_t n) {
  Buffer a(dev, size_t(n * n) * dtype_size(dt), "plan probe"), b(dev, size_t(n * n) * dtype_size(dt), "plan probe"),
      c(dev, size_t(n * n) * dtype_size(dt), "plan probe");
  TensorView av(a.data(), dt, {n, n}, &dev), bv(b.data(), dt, {n, n}, &dev), cv(c.data(), dt, {n, n}, &dev);
  ops::fill_zero(av, dev.stream());
  ops::fill_zero(bv, dev.stream());
  const double s = best_of(3, [&] {
    ops::matmul_forward({cv, av, bv, {}}, dev.stream());
    dev.stream().synchronize();
  });
  return 2.0 * double(n) * double(n) * double(n) / s;
}

// Bytes copied per second by a parallel memcpy of 256 MiB (each byte read and written).
double probe_memcpy() {
  const size_t bytes = size_t(256) << 20;
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  const double s = best_of(3, [&] { std::memcpy(dst.data(), src.data(), bytes); });
  return double(bytes) / s;
}

// O_DIRECT sequential write then read of `bytes` in 4 MiB blocks in dir.
void probe_nvme(const std::string& dir, size_t bytes, double& write_bps, double& read_bps) {
  const std::string path = dir + "/.strata-plan-probe";
  const size_t block = size_t(4) << 20;
  bytes = std::max(block, bytes / block * block);
  void* buf = nullptr;
  STRATA_CHECK(posix_memalign(&buf, 4096, block) == 0, "strata plan: cannot allocate the probe buffer");
  std::memset(buf, 7, block);
  int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_DIRECT, 0600);
  if (fd < 0) {
    std::free(buf);
    throw Error("strata plan: cannot open " + path + " with O_DIRECT (" + std::strerror(errno) +
                "); is the path on a local file system?");
  }
  bool ok = true;
  double t0 = now_seconds();
  for (size_t off = 0; ok && off < bytes; off += block) ok = ::pwrite(fd, buf, block, off_t(off)) == ssize_t(block);
  ok = ok && ::fsync(fd) == 0;
  write_bps = double(bytes) / (now_seconds() - t0);
  t0 = now_seconds();
  for (size_t off = 0; ok && off < bytes; off += block) ok = ::pread(fd, buf, block, off_t(off)) == ssize_t(block);
  read_bps = double(bytes) / (now_seconds() - t0);
  ::close(fd);
  ::unlink(path.c_str());
  std::free(buf);
  STRATA_CHECK(ok, "strata plan: the NVMe probe of " << dir << " failed (" << std::strerror(errno) << ")");
}

std::string gib(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f GiB", bytes / double(size_t(1) << 30));
  return b;
}
}  // namespace

double peak_flops_table(const std::string& product, Precision p) {
  // Dense tensor-core peaks from the vendors' data sheets (no sparsity); fp32 is
  // plain fp32 (strata does not enable TF32).
  // Matched in order against the CUDA product name ("NVIDIA H100 PCIe", "NVIDIA H100
  // 80GB HBM3" for the SXM part): more specific names first.
  struct Row { const char* name; double half, single; };
  static const Row rows[] = {{"H200", 989e12, 67e12},         {"H100 PCIe", 756e12, 51e12},
                             {"H100", 989e12, 67e12},         {"A100", 312e12, 19.5e12},
                             {"L40S", 362e12, 91.6e12},       {"RTX 6000 Ada", 364e12, 91.1e12},
                             {"A6000", 155e12, 38.7e12},      {"A10", 125e12, 31.2e12},
                             {"RTX 4090", 165e12, 82.6e12},   {"V100", 125e12, 15.7e12}};
  for (const Row& r : rows)
    if (product.find(r.name) != std::string::npos) return p == Precision::fp32 ? r.single : r.half;
  return 0;
}

double peak_flops(Device& device, Precision p) {
  if (device.kind() == DeviceKind::cuda)
    return peak_flops_table(cuda_runtime::product_name(device.index()), p);  // 0 when not in the table
  return cpu::fma_peak(precision_dtype(p)).flops;
}

Rates probe_rates(Device& device, Precision p, const std::vector<std::string>& paths, size_t nvme_bytes) {
  Rates r;
  r.peak_flops = peak_flops(device, p);
  // The better of two sizes: small ones under-fill the cores, large ones can fall
  // out of cache. Other load on the cores makes this read low; the peak does not.
  const DType dt = precision_dtype(p);
  r.flops = std::max(probe_flops(device, dt, 1024), probe_flops(device, dt, 2048));
  r.host_memcpy = probe_memcpy();
  r.host_to_device = r.host_memcpy;  // a CPU device: host memory is device memory
  for (const std::string& path : paths) {
    double w = 0, rd = 0;
    probe_nvme(path, nvme_bytes, w, rd);
    r.nvme_write += w;
    r.nvme_read += rd;
  }
  return r;
}

const char* tier_name(Tier t) { return t == Tier::device ? "device" : t == Tier::host ? "host" : "nvme"; }

Plan make_plan(const PlanRequest& q, const Rates& rates) {
  Plan plan;
  plan.rates = rates;
  ModelConfig c = q.config;
  const int64_t psi = q.parameters > 0 ? q.parameters : c.num_parameters();
  if (!q.config_known) {  // a GPT-2-like shape for the activations: Ψ ≈ 12 L C², L = C / 64
    int64_t C = int64_t(std::cbrt(64.0 * double(psi) / 12.0) / 128.0 + 0.5) * 128;
    C = std::max<int64_t>(C, 128);
    c.d_model = C;
    c.d_mlp = 4 * C;
    c.n_heads = C / 64;
    c.n_layers = std::max<int64_t>(1, psi / (12 * C * C));
  }
  plan.parameters = psi;
  const bool fp32 = q.precision == Precision::fp32;
  const size_t P = size_t(psi);
  plan.bytes_params = P * (fp32 ? 4 : 2);
  plan.bytes_grads = P * 4;
  plan.bytes_optimizer = P * (fp32 ? 8 : 12);
  // Saved activations per row and block (working dtype): none keeps ln1, qkv (Q wide:
  // (n_heads + 2 n_kv_heads) head_dim), att (A = n_heads head_dim), x2, ln2, fc, act and
  // the input (4C + Q + A + 2H); selective Q + A + C + H; full the input C. A sliding
  // window changes none of them: attention never stores its T x T scores.
  const double C = double(c.d_model), H = double(c.mlp == MlpKind::swiglu ? 2 * c.d_mlp : c.d_mlp);
  const double Q = double(c.qkv_width()), A = double(c.attention_width());
  const double per_block = q.recompute == Recompute::none        ? 4 * C + Q + A + 2 * H
                           : q.recompute == Recompute::selective ? Q + A + C + H
                                                                 : C;
  const double rows = double(q.batch * q.seq);
  const double ds = double(dtype_size(precision_dtype(q.precision)));
  // Blocks, two residual-gradient streams, and one micro-batch of f32 logits chunk-free.
  plan.bytes_activations = size_t(rows * ds * (double(c.n_layers) * per_block + 3 * C) + rows * double(c.vocab_size) * 4);
  // The largest unit: the embedding, or a block's qkv (Q x C), proj (C x A) and MLP.
  const size_t unit = size_t(std::max(double(c.vocab_size) * C, (Q + A) * C + H * C + C * double(c.d_mlp)));
  plan.largest_unit = unit;
  const size_t state_per_param = fp32 ? 16 : 18;
  const double n = double(std::max(1, q.devices));

  const double tokens = double(q.batch * q.seq * q.accum);
  const double recompute_factor = q.recompute == Recompute::full ? 4.0 / 3.0 : q.recompute == Recompute::selective ? 1.01 : 1.0;
  const double compute_s = rates.flops > 0 ? c.flops_per_token(q.seq) * tokens * recompute_factor / rates.flops : 0;
  // AdamW reads params, grads, master, m, v and writes params, master, m, v: 32 B/param
  // (bf16), i.e. 16 B copied per parameter at memcpy speed.
  const double opt_s = rates.host_memcpy > 0 ? double(P) / n * 16.0 / rates.host_memcpy : 0;

  auto make = [&](const char* name, Tier pt, Tier gt, Tier ot, size_t pinned) {
    PlanOption o;
    o.name = name;
    o.params = pt;
    o.grads = gt;
    o.optimizer = ot;
    o.pinned = pinned;
    auto put = [&](Tier t, size_t bytes) { o.tier_bytes[int(t)] += t == Tier::device ? size_t(double(bytes) / n) : bytes; };
    put(pt, plan.bytes_params);
    put(gt, plan.bytes_grads);
    put(ot, plan.bytes_optimizer);
    o.tier_bytes[int(Tier::device)] += plan.bytes_activations;
    if (pt != Tier::device) o.tier_bytes[int(Tier::device)] += 2 * unit * (fp32 ? 4 : 2);  // the gathered units
    o.tier_bytes[int(Tier::host)] += pinned;
    o.compute_s = compute_s;
    o.optimizer_s = opt_s;
    return o;
  };
  // device: everything resident. host (ZeRO-Offload): f32 grads and optimizer in host
  // memory, params on the device; pinned stages two units' grads and params. nvme
  // (ZeRO-Infinity): params, grads and optimizer on NVMe; pinned holds four units of
  // full state (prefetch, compute, write-back, spare).
  plan.options.push_back(make("device", Tier::device, Tier::device, Tier::device, 0));
  plan.options.push_back(make("host", Tier::device, Tier::host, Tier::host, 2 * unit * (4 + (fp32 ? 4 : 2))));
  plan.options.push_back(make("nvme", Tier::nvme, Tier::nvme, Tier::nvme, 4 * unit * state_per_param));
  {
    PlanOption& h = plan.options[1];
    const double moved = double(plan.bytes_grads + plan.bytes_params);
    h.transfer_s = rates.host_to_device > 0 ? moved / rates.host_to_device : 0;
    h.step_s = std::max(h.compute_s, h.transfer_s) + h.optimizer_s;
    PlanOption& v = plan.options[2];
    // Per step: params read in forward and backward, grads written then read, optimizer
    // state read and written, the new params written.
    const double rd = double(2 * plan.bytes_params + plan.bytes_grads + plan.bytes_optimizer);
    const double wr = double(plan.bytes_params + plan.bytes_grads + plan.bytes_optimizer);
    v.transfer_s = rates.nvme_read > 0 && rates.nvme_write > 0 ? rd / rates.nvme_read + wr / rates.nvme_write : 0;
    v.step_s = v.compute_s + std::max(v.transfer_s, v.optimizer_s);
    PlanOption& d = plan.options[0];
    d.step_s = d.compute_s + d.optimizer_s;
  }
  for (PlanOption& o : plan.options) {
    std::ostringstream why;
    size_t dev = o.tier_bytes[0], host = o.tier_bytes[1];
    if (q.device_is_host) {  // one pool: the device arena is host RAM
      host += dev;
      dev = 0;
    } else if (dev > q.device_bytes) {
      why << "device needs " << gib(double(dev)) << " per device, has " << gib(double(q.device_bytes)) << "; ";
    }
    if (host > q.ram_bytes) why << "host RAM needs " << gib(double(host)) << ", has " << gib(double(q.ram_bytes)) << "; ";
    if (o.tier_bytes[2] > 0 && q.nvme_paths.empty()) why << "no --nvme path given; ";
    else if (o.tier_bytes[2] > q.nvme_free)
      why << "NVMe needs " << gib(double(o.tier_bytes[2])) << ", has " << gib(double(q.nvme_free)) << " free; ";
    if (q.device_is_host && o.name == "host") why << "a CPU device is host memory: same as device; ";
    o.why = why.str();
    if (o.why.size() >= 2) o.why.resize(o.why.size() - 2);
    o.fits = o.why.empty();
  }
  for (int i = 0; i < 3; ++i)
    if ((q.placement.empty() && plan.options[size_t(i)].fits && plan.chosen < 0) || q.placement == plan.options[size_t(i)].name)
      plan.chosen = i;
  if (!q.placement.empty() && plan.chosen < 0)
    throw Error("strata plan: unknown placement '" + q.placement + "'; use device, host or nvme");
  return plan;
}

std::string format_plan(const PlanRequest& q, const Plan& p) {
  std::ostringstream o;
  char line[512];
  const double P = double(p.parameters);
  o << "parameters: " << p.parameters << " (" << gib(P) << " per byte per parameter)\n";
  o << "batch: " << q.batch << " x " << q.seq << " tokens x " << q.accum << " accum, " << precision_name(q.precision)
    << ", recompute " << recompute_name(q.recompute) << ", " << q.devices << " device(s)\n\n";
  o << "state              bytes/param   strata        ZeRO-Infinity (fp16 grads, 16 B/param)\n";
  const bool fp32 = q.precision == Precision::fp32;
  std::snprintf(line, sizeof line, "  params (%s)      %2d        %12s  %12s\n", fp32 ? "f32 " : "bf16", fp32 ? 4 : 2,
                gib(double(p.bytes_params)).c_str(), gib(2 * P).c_str());
  o << line;
  std::snprintf(line, sizeof line, "  grads (f32)       %2d        %12s  %12s (fp16, 2 B)\n", 4,
                gib(double(p.bytes_grads)).c_str(), gib(2 * P).c_str());
  o << line;
  std::snprintf(line, sizeof line, "  master+m+v (f32)  %2d        %12s  %12s\n", fp32 ? 8 : 12,
                gib(double(p.bytes_optimizer)).c_str(), gib(12 * P).c_str());
  o << line;
  std::snprintf(line, sizeof line, "  total             %2d        %12s  %12s\n", fp32 ? 16 : 18,
                gib(double(p.bytes_params + p.bytes_grads + p.bytes_optimizer)).c_str(), gib(16 * P).c_str());
  o << line;
  o << "  activations (estimate, this batch): " << gib(double(p.bytes_activations)) << "\n\n";
  o << "rates: " << p.rates.flops / 1e9 << " GFLOP/s matmul";
  if (p.rates.peak_flops > 0)
    o << " (" << int(100 * p.rates.flops / p.rates.peak_flops + 0.5) << "% of the " << p.rates.peak_flops / 1e9
      << " GFLOP/s peak)";
  o << ", host memcpy " << p.rates.host_memcpy / 1e9 << " GB/s";
  if (p.rates.nvme_read > 0)
    o << ", NVMe read " << p.rates.nvme_read / 1e9 << " GB/s, write " << p.rates.nvme_write / 1e9 << " GB/s";
  o << "\nbudget: RAM " << gib(double(q.ram_bytes));
  if (!q.device_is_host) o << ", device " << gib(double(q.device_bytes));
  else o << " (the CPU device shares it)";
  if (!q.nvme_paths.empty()) o << ", NVMe free " << gib(double(q.nvme_free));
  o << "\n\n";
  o << "placement  params/grads/optimizer   device       host(+pinned)  pinned       nvme         step (compute+io+opt)\n";
  for (size_t i = 0; i < p.options.size(); ++i) {
    const PlanOption& x = p.options[i];
    std::snprintf(line, sizeof line, "%s %-8s %-6s/%-6s/%-6s     %-12s %-14s %-12s %-12s %.2f s (%.2f + %.2f + %.2f)\n",
                  int(i) == p.chosen ? "*" : " ", x.name.c_str(), tier_name(x.params), tier_name(x.grads),
                  tier_name(x.optimizer), gib(double(x.tier_bytes[0])).c_str(), gib(double(x.tier_bytes[1])).c_str(),
                  gib(double(x.pinned)).c_str(), gib(double(x.tier_bytes[2])).c_str(), x.step_s, x.compute_s,
                  x.transfer_s, x.optimizer_s);
    o << line;
    o << "           " << (x.fits ? "fits" : "does not fit: " + x.why) << "\n";
  }
  // Issue 21: a store built from a Model::Init::deferred model stages one unit at a time.
  const size_t staging = p.largest_unit * (dtype_size(precision_dtype(q.precision)) + 4);
  o << "host memory to build offloaded (Model::Init::deferred): the pinned pool + one unit's staging ("
    << gib(double(staging)) << ": the largest unit's params and f32 master), not the model's size\n";
  o << "\n";
  if (p.chosen < 0)
    o << "nothing fits: " << (p.options.back().why.empty() ? "" : p.options.back().why)
      << ". Give more RAM or NVMe space, a smaller batch or recompute.\n";
  else if (!p.options[size_t(p.chosen)].fits)
    o << "the requested placement '" << p.options[size_t(p.chosen)].name
      << "' does not fit: " << p.options[size_t(p.chosen)].why << "\n";
  else if (p.rates.flops <= 0)
    o << "strata would use: " << p.options[size_t(p.chosen)].name << " (step time not predicted: no probe)\n";
  else
    o << "strata would use: " << p.options[size_t(p.chosen)].name << " (predicted step "
      << p.options[size_t(p.chosen)].step_s << " s)\n";
  return o.str();
}

}  // namespace strata
