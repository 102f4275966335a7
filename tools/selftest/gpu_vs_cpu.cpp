// GPU-vs-CPU checks shared by strata-selftest and test_cuda_emu (see gpu_vs_cpu.h).
// Each op runs through its public entry point (ops::name) on both devices, so the
// checks cover the argument checks and the backend dispatch as well as the kernels.
#include "gpu_vs_cpu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "ops.h"
#include "strata/error.h"
#include "strata/train.h"
#if defined(STRATA_WITH_CUDA) || defined(STRATA_CUDA_EMULATION)
#include "cuda/cuda_ops.h"
#endif

namespace strata::selftest {

namespace {

// Real hardware, not the emulated device: a shared case's hardware_slack applies.
#ifdef STRATA_CUDA_EMULATION
constexpr bool kHardware = false;
#else
constexpr bool kHardware = true;
#endif

double tolerance(DType t) { return t == DType::bf16 ? 2e-2 : t == DType::f16 ? 4e-3 : 1e-4; }
double relative_error(const std::vector<double>& g, const std::vector<double>& c);

// One tensor on both devices with bitwise the same initial contents.
struct Twin {
  std::vector<uint64_t> host;  // the CPU device's memory (a CPU device's memory is host memory)
  Buffer gpu_buffer;
  TensorView cpu, gpu;

  Twin(Device& cpu_device, Device& gpu_device, DType dtype, std::initializer_list<int64_t> shape, double lo,
       double hi, uint32_t seed) {
    cpu = TensorView(nullptr, dtype, shape, &cpu_device);
    host.resize((cpu.nbytes() + 7) / 8);
    cpu.data = host.data();
    std::mt19937 rng(seed);
    std::uniform_real_distribution<double> u(lo, hi);
    if (dtype == DType::i32) {
      for (int64_t i = 0; i < cpu.numel(); ++i) cpu.ptr<int32_t>()[i] = int32_t(std::floor(u(rng)));
    } else {
      std::vector<float> v(size_t(cpu.numel()));
      for (float& x : v) x = float(u(rng));
      copy_from_host_f32(cpu, v.data());
    }
    gpu_buffer = Buffer(gpu_device, cpu.nbytes(), "selftest tensor");
    gpu = cpu;
    gpu.data = gpu_buffer.data();
    gpu.device = &gpu_device;
    gpu_device.stream().copy(gpu.data, cpu.data, cpu.nbytes());
    gpu_device.stream().synchronize();
  }

  // After the CPU values were edited: the GPU copy again.
  void refresh_gpu() {
    gpu.device->stream().copy(gpu.data, cpu.data, cpu.nbytes());
    gpu.device->stream().synchronize();
  }

  std::vector<double> values(const TensorView& t) const {
    std::vector<double> out(size_t(t.numel()));
    if (t.dtype == DType::i32) {
      std::vector<int32_t> v(out.size());
      t.device->stream().copy(v.data(), t.data, t.nbytes());
      t.device->stream().synchronize();
      std::copy(v.begin(), v.end(), out.begin());
    } else {
      const std::vector<float> v = copy_to_host_f32(t);
      std::copy(v.begin(), v.end(), out.begin());
    }
    return out;
  }

  double error() const { return relative_error(values(gpu), values(cpu)); }
};

// Largest |g - c| relative to max(1, max |c|); NaN must meet NaN, Inf the same Inf.
double relative_error(const std::vector<double>& g, const std::vector<double>& c) {
  double scale = 1, err = 0;
  for (double x : c)
    if (std::isfinite(x)) scale = std::max(scale, std::fabs(x));
  for (size_t i = 0; i < c.size(); ++i) {
    if (std::isnan(g[i]) || std::isnan(c[i])) {
      if (std::isnan(g[i]) != std::isnan(c[i])) err = INFINITY;
      continue;
    }
    if (std::isinf(c[i]) || std::isinf(g[i])) {
      if (g[i] != c[i]) err = INFINITY;
      continue;
    }
    err = std::max(err, std::fabs(g[i] - c[i]) / scale);
  }
  return err;
}

// The op table: each entry makes its tensors, runs the op on both devices and
// records one check per output.
class Table {
 public:
  Table(Device& gpu, const CompareOptions& o)
      : gpu_(gpu), cpu_(Device::cpu()), small_(o.small), on_check_(o.on_check) {}

  Twin make(DType t, std::initializer_list<int64_t> shape, double lo = -1, double hi = 1) {
    return Twin(*cpu_, gpu_, t, shape, lo, hi, ++seed_);
  }
  // Runs `op` with the CPU views, then with the GPU views.
  void run(const std::function<void(bool gpu, Stream& s)>& op) {
    op(false, cpu_->stream());
    op(true, gpu_.stream());
    gpu_.stream().synchronize();
  }
  void check(const std::string& op, const std::string& what, DType t, const Twin& out, double tol) {
    add({op, what, dtype_name(t), out.error(), tol, ""});
  }
  void add(Check c) {
    checks_.push_back(std::move(c));
    if (on_check_) on_check_(checks_.back());
  }
  void check(const std::string& op, const std::string& what, DType t, const Twin& out) {
    check(op, what, t, out, tolerance(t));
  }

  // The shared reference cases of `ops` that take dtype t: one check per case (the
  // worst output over its shapes, against the tolerance of its dtype times the case's
  // slack), each case in its own try/catch. The emulated device skips the long ones.
  void shared(std::initializer_list<const char*> ops, DType t) {
    for (const char* op : ops)
      for (const test::OpCase& c : test::op_table()) {
        if (!c.run_on || c.op != op || std::find(c.dtypes.begin(), c.dtypes.end(), t) == c.dtypes.end()) continue;
        if (c.slow_on_emulator && !kHardware) continue;  // test_cuda_emu runs it under [slow]
        Check worst{c.op, "", dtype_name(t), 0, 0, ""};
        size_t outputs = 0;
        try {
          for (const auto& shape : c.shapes)
            for (const CaseOutput& o : compare_case(c, gpu_, t, shape)) {
              ++outputs;
              const double err = relative_error(o.gpu.values(), o.cpu.values());
              const double tol = tolerance(o.cpu.dtype()) * c.slack_on(kHardware);
              if (outputs == 1 || err - tol > worst.error - worst.tolerance) {
                worst.what = o.what + " " + test::shape_str(shape);
                worst.error = err;
                worst.tolerance = tol;
              }
            }
          worst.what = std::to_string(outputs) + " outputs, worst " + worst.what;
        } catch (const std::exception& e) {
          worst = {c.op, "threw", dtype_name(t), INFINITY, 0, e.what()};
        }
        add(worst);
      }
  }

  bool small() const { return small_; }
  std::vector<Check> take() { return std::move(checks_); }

 private:
  Device& gpu_;
  std::unique_ptr<Device> cpu_;
  bool small_;
  std::function<void(const Check&)> on_check_;
  uint32_t seed_ = 0;
  std::vector<Check> checks_;
};

#define V(x) (g ? (x).gpu : (x).cpu)

void matmul(Table& tb, DType t) {
  tb.shared({"matmul_forward", "matmul_backward"}, t);
#if defined(STRATA_WITH_CUDA) && !defined(STRATA_CUDA_EMULATION)
  // The tiled kernel the emulator runs as matmul, here on the hardware (no op of the
  // registry, so no shared case).
  const int64_t n = tb.small() ? 24 : 256, ic = tb.small() ? 40 : 384, oc = tb.small() ? 36 : 512;
  Twin inp = tb.make(t, {n, ic}), w = tb.make(t, {oc, ic}, -0.2, 0.2), b = tb.make(t, {oc});
  Twin d_out = tb.make(t, {n, oc});
  Twin out2 = tb.make(t, {n, oc}, 0, 0), d_inp2 = tb.make(t, {n, ic}), d_w2 = tb.make(DType::f32, {oc, ic});
  tb.run([&](bool g, Stream& s) {
    if (!g) {
      ops::matmul_forward({V(out2), V(inp), V(w), V(b)}, s);
      ops::matmul_backward({V(d_inp2), V(d_w2), {}, V(d_out), V(inp), V(w)}, s);
      return;
    }
    cuda::matmul_tiled_forward({V(out2), V(inp), V(w), V(b)}, cuda::context(s));
    cuda::matmul_tiled_backward({V(d_inp2), V(d_w2), {}, V(d_out), V(inp), V(w)}, cuda::context(s));
  });
  tb.check("matmul_tiled_forward", "", t, out2);
  tb.check("matmul_tiled_backward", "d_inp", t, d_inp2);
  tb.check("matmul_tiled_backward", "d_weight", t, d_w2);
#endif
}

void embedding(Table& tb, DType t) { tb.shared({"embedding_forward", "embedding_backward"}, t); }

void norms(Table& tb, DType t) {
  tb.shared({"norm_forward", "norm_backward", "residual_norm_forward", "residual_norm_backward"}, t);
}

void pointwise(Table& tb, DType t) {
  tb.shared({"gelu_forward", "gelu_backward", "swiglu_forward", "swiglu_backward", "rope_forward",
             "rope_backward", "dropout_forward", "dropout_backward"},
            t);
}

void attention(Table& tb, DType t) { tb.shared({"attention_forward", "attention_backward", "attention_decode"}, t); }

void elementwise(Table& tb, DType t) { tb.shared({"add", "scale", "cast", "accumulate", "fill_zero"}, t); }

void loss(Table& tb, DType t) { tb.shared({"cross_entropy_forward", "cross_entropy_backward"}, t); }

void optimizer(Table& tb, DType t) { tb.shared({"adamw_step"}, t); }

void reductions(Table& tb, DType t) { tb.shared({"global_norm", "count_nonfinite"}, t); }

#undef V

}  // namespace

namespace {
using Family = void (*)(Table&, DType);
const std::vector<std::pair<std::string, Family>>& families() {
  static const std::vector<std::pair<std::string, Family>> f = {
      {"matmul", matmul},       {"embedding", embedding},     {"norms", norms},
      {"pointwise", pointwise}, {"attention", attention},     {"elementwise", elementwise},
      {"loss", loss},           {"optimizer", optimizer},     {"reductions", reductions}};
  return f;
}
}  // namespace

const std::vector<std::string>& op_families() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> n;
    for (const auto& f : families()) n.push_back(f.first);
    return n;
  }();
  return names;
}

std::vector<Check> compare_ops(Device& gpu, const CompareOptions& options) {
  STRATA_CHECK(gpu.kind() == DeviceKind::cuda, "selftest: " << gpu.name() << " is not a CUDA device");
  for (const std::string& f : options.families)
    STRATA_CHECK(std::find(op_families().begin(), op_families().end(), f) != op_families().end(),
                 "selftest: no op family '" << f << "'; the families are matmul, embedding, norms, pointwise, "
                                               "attention, elementwise, loss, optimizer, reductions");
  Table tb(gpu, options);
  for (DType t : {DType::f32, DType::bf16, DType::f16})
    for (const auto& [name, run] : families()) {
      if (!options.families.empty() &&
          std::find(options.families.begin(), options.families.end(), name) == options.families.end())
        continue;
      try {
        run(tb, t);
      } catch (const std::exception& e) {
        tb.add({name, "threw", dtype_name(t), INFINITY, 0, e.what()});
      }
    }
  return tb.take();
}

std::vector<Check> compare_ops(Device& gpu, bool small) {
  CompareOptions o;
  o.small = small;
  return compare_ops(gpu, o);
}

namespace {

// The CPU pass of compare_case: tensors in place, every output recorded in order.
class RecordEnv : public test::OpEnv {
 public:
  Stream& stream() override { return test::cpu().stream(); }
  TensorView at(test::HostTensor& h) override { return h.view(); }
  void expect(const std::string& what, test::HostTensor& out, const std::vector<double>&,
              test::Tolerance) override {
    outputs.push_back({what, out, {}});
  }
  std::vector<CaseOutput> outputs;
};

// The GPU pass: a device copy per host tensor (see compare_case), outputs copied back.
class DeviceEnv : public test::OpEnv {
 public:
  DeviceEnv(Device& device, std::vector<CaseOutput>& outputs) : device_(device), outputs_(outputs) {}

  Stream& stream() override { return device_.stream(); }

  TensorView at(test::HostTensor& h) override {
    const TensorView host = h.view();
    auto it = copies_.find(host.data);
    if (it == copies_.end() || it->second.snapshot.size() != host.nbytes() ||
        std::memcmp(it->second.snapshot.data(), host.data, host.nbytes()) != 0) {
      Copy c;
      c.buffer = Buffer(device_, host.nbytes(), "op case tensor");
      snapshot(c, host);
      device_.stream().copy(c.buffer.data(), host.data, host.nbytes());
      device_.stream().synchronize();
      it = copies_.insert_or_assign(host.data, std::move(c)).first;
    }
    TensorView v = host;
    v.data = it->second.buffer.data();
    v.device = &device_;
    return v;
  }

  void expect(const std::string& what, test::HostTensor& out, const std::vector<double>&,
              test::Tolerance) override {
    const TensorView host = out.view();
    auto it = copies_.find(host.data);
    STRATA_CHECK(it != copies_.end(), "selftest: case output '" << what << "' was never passed to an op");
    STRATA_CHECK(next_ < outputs_.size() && outputs_[next_].what == what,
                 "selftest: case output '" << what << "' is not the CPU pass's output " << next_);
    device_.stream().copy(host.data, it->second.buffer.data(), host.nbytes());
    device_.stream().synchronize();
    snapshot(it->second, host);
    outputs_[next_++].gpu = out;
  }

  size_t compared() const { return next_; }

 private:
  struct Copy {
    Buffer buffer;
    std::vector<char> snapshot;
  };
  static void snapshot(Copy& c, const TensorView& host) {
    const char* p = static_cast<const char*>(host.data);
    c.snapshot.assign(p, p + host.nbytes());
  }
  Device& device_;
  std::vector<CaseOutput>& outputs_;
  std::map<const void*, Copy> copies_;
  size_t next_ = 0;
};

}  // namespace

std::vector<CaseOutput> compare_case(const test::OpCase& c, Device& gpu, DType dtype,
                                     const std::vector<int64_t>& shape) {
  STRATA_CHECK(c.run_on, "selftest: case " << c.op << " runs on the CPU only");
  RecordEnv want;
  c.run_on(want, dtype, shape);
  DeviceEnv got(gpu, want.outputs);
  c.run_on(got, dtype, shape);
  STRATA_CHECK(got.compared() == want.outputs.size(),
               "selftest: case " << c.op << " made " << got.compared() << " outputs on " << gpu.name() << ", "
                                 << want.outputs.size() << " on the CPU");
  return std::move(want.outputs);
}

std::vector<std::string> ops_not_compared(const std::vector<Check>& checks) {
  std::set<std::string> seen;
  for (const Check& c : checks) seen.insert(c.op);
  std::vector<std::string> missing;
  for (const ops::OpInfo& op : ops::op_registry())
    if (!seen.count(op.name)) missing.push_back(op.name);
  return missing;
}

namespace {

ModelConfig train_model(const TrainConfig& c) {
  STRATA_CHECK(c.preset == "gpt" || c.preset == "llama",
               "selftest: training preset '" << c.preset << "'; use gpt or llama");
  ModelConfig m = ModelConfig::preset(c.preset == "gpt" ? "gpt-mini" : "llama-60m");
  m.vocab_size = c.small ? 64 : 512;
  m.n_layers = 2;
  m.n_heads = c.small ? 2 : 4;
  m.d_model = c.small ? 32 : 256;
  m.d_mlp = c.preset == "gpt" ? 4 * m.d_model : 3 * m.d_model;
  m.max_seq = c.small ? 16 : 128;
  return m;
}

// Rows of a learnable sequence (each token a fixed function of the previous one)
// from a seeded start: the loss has something to fall towards.
std::vector<int32_t> batch_tokens(int64_t B, int64_t T1, int64_t vocab, int step) {
  std::mt19937 rng(uint32_t(1000 + step));
  std::vector<int32_t> out(size_t(B * T1));
  for (int64_t b = 0; b < B; ++b) {
    int32_t x = int32_t(rng() % uint32_t(vocab));
    for (int64_t t = 0; t < T1; ++t) {
      out[size_t(b * T1 + t)] = x;
      x = int32_t((x * 5 + 3) % vocab);
    }
  }
  return out;
}

struct Run {
  std::vector<float> losses;
  std::vector<std::vector<float>> weights;  // per unit, f32
};

Run train(Device& device, const ModelConfig& mc, const TrainConfig& c) {
  Model model(mc, device, c.precision, /*seed=*/7);
  TrainOptions o;
  o.adamw.lr = 3e-3f;
  o.schedule.kind = ScheduleKind::constant;
  Trainer trainer(model, o);
  const int64_t B = 2, T = mc.max_seq;
  Run r;
  for (int step = 0; step < c.steps; ++step) {
    const std::vector<int32_t> rows = batch_tokens(B, T + 1, mc.vocab_size, step);
    std::vector<int32_t> in(size_t(B * T)), tg(size_t(B * T));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        in[size_t(b * T + t)] = rows[size_t(b * (T + 1) + t)];
        tg[size_t(b * T + t)] = rows[size_t(b * (T + 1) + t + 1)];
      }
    const Batch batch{TensorView(in.data(), DType::i32, {B, T}), TensorView(tg.data(), DType::i32, {B, T})};
    r.losses.push_back(trainer.train_step({batch}).loss);
  }
  for (int u = 0; u < model.num_units(); ++u) r.weights.push_back(trainer.unit_parameters(u));
  return r;
}

}  // namespace

TrainComparison compare_training(Device& gpu, const TrainConfig& config) {
  STRATA_CHECK(gpu.kind() == DeviceKind::cuda, "selftest: " << gpu.name() << " is not a CUDA device");
  const ModelConfig mc = train_model(config);
  auto cpu = Device::cpu();
  const Run want = train(*cpu, mc, config), got = train(gpu, mc, config);
  TrainComparison r;
  r.loss_cpu = want.losses;
  r.loss_gpu = got.losses;
  for (size_t i = 0; i < want.losses.size(); ++i)
    r.max_loss_diff = std::max(r.max_loss_diff, double(std::fabs(got.losses[i] - want.losses[i])));
  double diff2 = 0, norm2 = 0;
  for (size_t u = 0; u < want.weights.size(); ++u)
    for (size_t i = 0; i < want.weights[u].size(); ++i) {
      const double w = want.weights[u][i], d = double(got.weights[u][i]) - w;
      r.max_weight_diff = std::max(r.max_weight_diff, std::fabs(d));
      diff2 += d * d;
      norm2 += w * w;
    }
  r.weight_diff = std::sqrt(diff2 / norm2);
  // fp32: only summation order differs (GEMM tiling, reduction trees). bf16: every
  // activation is rounded to 8 significant bits, so one-ulp differences propagate.
  // The weights are compared as a whole (relative L2): a parameter whose gradient is
  // zero up to rounding (GPT's key bias: softmax ignores it) is moved by AdamW's
  // normalised noise, about lr per step in either direction, on both devices alike.
  const bool fp32 = config.precision == Precision::fp32;
  r.loss_tolerance = fp32 ? 1e-5 : 1e-2;
  r.weight_tolerance = fp32 ? 1e-4 : 3e-2;
  return r;
}

void print(const Check& c, std::FILE* out) {
  if (!c.failure.empty())
    std::fprintf(out, "%-24s %-26s %-5s FAIL  %s\n", c.op.c_str(), c.what.c_str(), c.dtype.c_str(), c.failure.c_str());
  else
    std::fprintf(out, "%-24s %-26s %-5s %s  max rel error %.3g (tolerance %.3g)\n", c.op.c_str(), c.what.c_str(),
                 c.dtype.c_str(), c.pass() ? "PASS" : "FAIL", c.error, c.tolerance);
  std::fflush(out);
}

int print(const std::vector<Check>& checks, std::FILE* out) {
  int failures = 0;
  for (const Check& c : checks) {
    failures += !c.pass();
    print(c, out);
  }
  return failures;
}

int print(const TrainConfig& config, const TrainComparison& r, std::FILE* out) {
  std::fprintf(out, "train %-5s %-4s %d steps: loss cpu %.5f -> %.5f, gpu %.5f -> %.5f; max |loss diff| %.3g "
               "(tolerance %.3g); weights: relative L2 diff %.3g (tolerance %.3g), max |diff| %.3g  %s\n",
               config.preset.c_str(), precision_name(config.precision), config.steps, r.loss_cpu.front(),
               r.loss_cpu.back(), r.loss_gpu.front(), r.loss_gpu.back(), r.max_loss_diff, r.loss_tolerance,
               r.weight_diff, r.weight_tolerance, r.max_weight_diff, r.pass() ? "PASS" : "FAIL");
  return r.pass() ? 0 : 1;
}

}  // namespace strata::selftest
