// The sequence-classification head (strata/unit.h): final norm on every position,
// pooling to one row per sequence, linear C -> K classes, cross-entropy on a label
// per row read from targets[b, 0].
// Pooling is a GEMM with a constant pooling matrix P (B, B*T), P[b, b*T + t] = w_t
// (cls: w_0 = 1, the rest 0; mean: w_t = 1/T), so the head needs only the public ops:
//   pooled (B, C) = P @ lnf          matmul_backward's weight gradient, d_out = P^T
//   d_lnf (B*T, C) = P^T @ d_pooled  matmul_backward's input gradient, d_out = P^T
// A cls row is copied exactly (1 * x plus zeros). Invariant: P^T is rebuilt whenever
// reserve() sees a new (B, T), so it always matches the batch that runs.
#include "strata/error.h"
#include "unit.h"

namespace strata {

namespace {

enum ClassifierParam : int { kLnW, kLnB, kWeight, kBias };

class ClassifierHead final : public Unit {
 public:
  ClassifierHead(const ModelConfig& c, int64_t n_classes, Pooling pooling)
      : c_(c), classes_(n_classes), pooling_(pooling) {}
  std::string name() const override { return "head"; }

  std::vector<ParamSpec> param_specs() const override {
    using I = ParamSpec::Init;
    const bool ln_bias = c_.norm == NormKind::layernorm && c_.bias;
    return {{"ln_f.weight", {c_.d_model}, I::ones, 0, ParamRole::norm},
            {ln_bias ? "ln_f.bias" : "", ln_bias ? std::vector<int64_t>{c_.d_model} : std::vector<int64_t>{}, I::zeros,
             0, ParamRole::bias},
            {"classifier.weight", {classes_, c_.d_model}, I::normal, 0.02f, ParamRole::matrix},
            {"classifier.bias", {classes_}, I::zeros, 0, ParamRole::bias}};
  }

  void reserve(Device& device, DType dtype, int64_t B, int64_t T) override {
    const size_t bytes = saved_bytes(dtype, B, T);
    if (saved_.size() < bytes) {
      saved_ = Buffer(device, bytes, "classifier head activations");
      pool_B_ = pool_T_ = 0;
    }
    if (B == pool_B_ && T == pool_T_ && dtype == pool_dtype_) return;
    std::vector<float> host(size_t(B * T * B), 0.0f);  // P^T (B*T, B)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < (pooling_ == Pooling::cls ? 1 : T); ++t)
        host[size_t((b * T + t) * B + b)] = pooling_ == Pooling::cls ? 1.0f : 1.0f / float(T);
    char* cur = static_cast<char*>(saved_.data());
    copy_from_host_f32(TensorView(cur, dtype, {B * T, B}, &device), host.data());
    pool_B_ = B, pool_T_ = T, pool_dtype_ = dtype;
  }

  size_t scratch_bytes(DType dtype, int64_t rows) const override {
    return carve_bytes(dtype, rows * c_.d_model) * 2;  // d_lnf (rows, C) and d_pooled (B <= rows, C)
  }

  void check_targets(const TensorView& targets, const ModelConfig&) const override {
    const int32_t* t = targets.ptr<int32_t>();
    const int64_t B = targets.shape[0], T = targets.shape[1];
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < T; ++i) {
        const int32_t v = t[b * T + i];
        if (i == 0)
          STRATA_CHECK(v == -100 || (v >= 0 && v < classes_),
                       "Model: label " << v << " of row " << b << " (targets[" << b << ", 0]) is outside the classes [0, "
                                       << classes_ << ") and is not the ignore index -100");
        else
          STRATA_CHECK(v == -100, "Model: target " << v << " at row " << b << ", position " << i
                                                   << ": a classifier reads one label per row, at position 0; "
                                                      "set every other position to -100");
      }
  }

  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override {
    const Saved a = views(ctx);
    Stream& s = ctx.stream;
    const bool rms = c_.norm == NormKind::rmsnorm;
    ops::norm_forward({a.lnf, rms ? TensorView{} : a.mean, a.rstd, io.x.reshape({ctx.rows(), c_.d_model}),
                       p.params[kLnW], p.params[kLnB], c_.norm_eps, rms},
                      s);
    // pooled = 0 + P @ lnf; `weight` only gives the shape (no d_inp is asked for).
    ops::fill_zero(a.pooled, s);
    ops::matmul_backward({{}, a.pooled, {}, a.pool_t, a.lnf, a.pooled}, s);
    ops::matmul_forward({a.logits, a.pooled, p.params[kWeight], p.params[kBias]}, s);
    // Labels from column 0 of the targets; each row's loss back to position (b, 0).
    for (int64_t b = 0; b < ctx.B; ++b)
      s.copy(a.labels.ptr<int32_t>() + b, io.targets.ptr<int32_t>() + b * ctx.T, sizeof(int32_t));
    ops::cross_entropy_forward({a.row_losses, a.lse, a.logits, a.labels, -100}, s);
    ops::fill_zero(io.losses, s);
    for (int64_t b = 0; b < ctx.B; ++b)
      s.copy(io.losses.ptr<float>() + b * ctx.T, a.row_losses.ptr<float>() + b, sizeof(float));
  }

  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) override {
    const Saved a = views(ctx);
    Stream& s = ctx.stream;
    const bool rms = c_.norm == NormKind::rmsnorm;
    char* cur = static_cast<char*>(scratch);
    TensorView d_lnf = carve(cur, ctx.dtype, {ctx.rows(), c_.d_model});
    TensorView d_pooled = carve(cur, ctx.dtype, {ctx.B, c_.d_model});
    // d_logits overwrite the saved logits: the head's backward runs once per forward.
    ops::cross_entropy_backward({a.logits, a.logits, a.lse, a.labels, io.d_loss, -100}, s);
    ops::matmul_backward({d_pooled, p.grads[kWeight], p.grads[kBias], a.logits, a.pooled, p.params[kWeight]}, s);
    // d_lnf = P^T @ d_pooled; `inp` only gives the shape (no d_weight is asked for).
    ops::matmul_backward({d_lnf, {}, {}, a.pool_t, a.lnf, d_pooled}, s);
    TensorView x = io.x.reshape({ctx.rows(), c_.d_model});
    ops::norm_backward({io.dx.reshape({ctx.rows(), c_.d_model}), p.grads[kLnW], p.grads[kLnB], d_lnf, x,
                        p.params[kLnW], rms ? TensorView{} : a.mean, a.rstd, rms},
                       s);
  }

 private:
  struct Saved {
    TensorView pool_t, lnf, mean, rstd, pooled, logits, lse, labels, row_losses;
  };
  size_t saved_bytes(DType dt, int64_t B, int64_t T) const {
    const int64_t n = B * T;
    return carve_bytes(dt, n * B) + carve_bytes(dt, n * c_.d_model) + 2 * carve_bytes(DType::f32, n) +
           carve_bytes(dt, B * c_.d_model) + carve_bytes(dt, B * classes_) + 2 * carve_bytes(DType::f32, B) +
           carve_bytes(DType::i32, B);
  }
  Saved views(const UnitContext& ctx) const {
    const int64_t B = ctx.B, n = ctx.rows();
    Device* device = &ctx.stream.device();
    char* cur = static_cast<char*>(saved_.data());
    auto next = [&](DType dt, std::initializer_list<int64_t> shape) {
      TensorView t = carve(cur, dt, shape);
      t.device = device;
      return t;
    };
    Saved a;
    a.pool_t = next(ctx.dtype, {n, B});  // first: reserve() writes it there
    a.lnf = next(ctx.dtype, {n, c_.d_model});
    a.mean = next(DType::f32, {n});
    a.rstd = next(DType::f32, {n});
    a.pooled = next(ctx.dtype, {B, c_.d_model});
    a.logits = next(ctx.dtype, {B, classes_});
    a.lse = next(DType::f32, {B});
    a.row_losses = next(DType::f32, {B});
    a.labels = next(DType::i32, {B});
    return a;
  }

  ModelConfig c_;
  int64_t classes_;
  Pooling pooling_;
  Buffer saved_;
  int64_t pool_B_ = 0, pool_T_ = 0;  // the (B, T) the pooling matrix was built for
  DType pool_dtype_ = DType::f32;
};

}  // namespace

const char* pooling_name(Pooling pooling) { return pooling == Pooling::cls ? "cls" : "mean"; }

std::unique_ptr<Unit> make_classifier_head(const ModelConfig& config, int64_t n_classes, Pooling pooling) {
  STRATA_CHECK(n_classes >= 2, "make_classifier_head: n_classes = " << n_classes << "; a classifier needs at least 2");
  return std::make_unique<ClassifierHead>(config, n_classes, pooling);
}

std::vector<std::unique_ptr<Unit>> make_classifier_units(const ModelConfig& config, int64_t n_classes,
                                                         Pooling pooling) {
  config.validate();
  std::unique_ptr<Unit> head = make_classifier_head(config, n_classes, pooling);
  std::vector<std::unique_ptr<Unit>> units;
  units.push_back(make_embedding_unit(config));
  for (int l = 0; l < int(config.n_layers); ++l) units.push_back(make_block_unit(config, l));
  units.push_back(std::move(head));
  return units;
}

}  // namespace strata
