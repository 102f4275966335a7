// A program built against an installed strata with g++ alone (no CUDA headers):
// checks that the public API links and runs, and that a researcher's own layer can
// be written against it: a unit subclassed from strata::Unit, computing with the
// public ops, gradient-checked, then trained inside a Model composed from units.
//   make test-consumer      (installs strata into build/prefix and builds this)
#include <strata/strata.h>

#include <cstdio>

namespace {

// A residual MLP with no norm: y = x + W2 gelu(W1 x + b1).
// Saved for backward (per row): pre = W1 x + b1 (H) and act = gelu(pre) (H).
// Parameter gradients accumulate (+=, as matmul_backward does); dx is assigned.
class ResidualMlp final : public strata::Unit {
 public:
  ResidualMlp(int64_t width, int64_t hidden, int index) : C_(width), H_(hidden), index_(index) {}
  std::string name() const override { return "mlp." + std::to_string(index_); }
  std::vector<strata::ParamSpec> param_specs() const override {
    using I = strata::ParamSpec::Init;
    using R = strata::ParamRole;
    return {{"fc.weight", {H_, C_}, I::normal, 0.02f, R::matrix},
            {"fc.bias", {H_}, I::zeros, 0, R::bias},
            {"proj.weight", {C_, H_}, I::normal, 0.02f, R::matrix}};
  }
  void reserve(strata::Device& device, strata::DType dtype, int64_t B, int64_t T) override {
    const size_t bytes = 2 * strata::carve_bytes(dtype, B * T * H_);
    if (saved_.size() < bytes) saved_ = strata::Buffer(device, bytes, "residual mlp activations");
  }
  // Backward needs d_act (H) and the branch's dx (C) per row.
  size_t scratch_bytes(strata::DType dtype, int64_t rows) const override {
    return strata::carve_bytes(dtype, rows * H_) + strata::carve_bytes(dtype, rows * C_);
  }
  void forward(const strata::UnitContext& ctx, const strata::UnitParams& p, strata::UnitIO& io) override {
    namespace ops = strata::ops;
    Saved a = saved(ctx);
    const strata::TensorView x = io.x.reshape({ctx.rows(), C_}), y = io.y.reshape({ctx.rows(), C_});
    ops::matmul_forward({a.pre, x, p.params[0], p.params[1]}, ctx.stream);
    ops::gelu_forward({a.act, a.pre}, ctx.stream);
    ops::matmul_forward({y, a.act, p.params[2], {}}, ctx.stream);
    ops::add({y, y, x}, ctx.stream);
  }
  void backward(const strata::UnitContext& ctx, const strata::UnitParams& p, strata::UnitIO& io,
                void* scratch) override {
    namespace ops = strata::ops;
    Saved a = saved(ctx);
    char* cur = static_cast<char*>(scratch);
    const strata::TensorView d_act = strata::carve(cur, ctx.dtype, {ctx.rows(), H_});
    const strata::TensorView d_branch = strata::carve(cur, ctx.dtype, {ctx.rows(), C_});
    const strata::TensorView x = io.x.reshape({ctx.rows(), C_}), dy = io.dy.reshape({ctx.rows(), C_});
    ops::matmul_backward({d_act, p.grads[2], {}, dy, a.act, p.params[2]}, ctx.stream);
    ops::gelu_backward({d_act, d_act, a.pre}, ctx.stream);  // d_pre, in place
    ops::matmul_backward({d_branch, p.grads[0], p.grads[1], d_act, x, p.params[0]}, ctx.stream);
    ops::add({io.dx.reshape({ctx.rows(), C_}), dy, d_branch}, ctx.stream);  // the residual's share
  }

 private:
  struct Saved {
    strata::TensorView pre, act;
  };
  Saved saved(const strata::UnitContext& ctx) {
    char* cur = static_cast<char*>(saved_.data());
    Saved a;
    a.pre = strata::carve(cur, ctx.dtype, {ctx.rows(), H_});
    a.act = strata::carve(cur, ctx.dtype, {ctx.rows(), H_});
    return a;
  }
  int64_t C_, H_;
  int index_;
  strata::Buffer saved_;
};

}  // namespace

int main() {
  auto device = strata::Device::cpu(0, size_t(1) << 30);
  float x = strata::bf16_to_float(strata::float_to_bf16(1.00390625f));  // a tie: rounds to even
  std::printf("strata consumer: %s; bf16(1.00390625) = %g; CUDA devices: %d\n", device->name().c_str(), x,
              strata::cuda_device_count());
  if (x != 1.0f) return 1;

  strata::ModelConfig c;
  c.vocab_size = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.d_model = 16;
  c.d_mlp = 32;
  c.max_seq = 8;

  ResidualMlp probe(c.d_model, c.d_mlp, 0);
  const strata::UnitGradCheckReport report = strata::check_unit_gradients(probe, c, *device);
  std::printf("gradient check of %s:\n%s", probe.name().c_str(), report.str().c_str());
  if (!report.ok()) return 1;

  // embedding -> two custom units -> the built-in head, trained to copy its input.
  std::vector<std::unique_ptr<strata::Unit>> units;
  units.push_back(strata::make_embedding_unit(c));
  for (int l = 0; l < int(c.n_layers); ++l) units.push_back(std::make_unique<ResidualMlp>(c.d_model, c.d_mlp, l));
  units.push_back(strata::make_head_unit(c));
  strata::Model model(c, std::move(units), *device, strata::Precision::fp32, 1);
  strata::AdamWOptions options;
  strata::AdamW adamw(model, options);
  std::vector<int32_t> tokens(4 * 8);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7 + 3) % 16);
  const strata::TensorView view(tokens.data(), strata::DType::i32, {4, 8}, device.get());
  float first = 0, last = 0;
  for (int64_t step = 1; step <= 60; ++step) {
    model.zero_grad();
    last = model.forward(strata::Batch{view, view}, strata::StepKey{1, step, 0}, true);
    if (step == 1) first = last;
    model.backward(1.0f);
    adamw.step(1e-2f, 1.0f, step);
  }
  std::printf("custom-unit model: loss %.4f -> %.4f over 60 steps\n", first, last);
  return last < 0.5f * first ? 0 : 1;
}
