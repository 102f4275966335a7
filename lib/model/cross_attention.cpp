// Cross-attention, a built-in unit for encoder-decoder models: the decoder's stream
// attends (non-causally) over a side activation, the memory an encoder published:
//   y = x + drop(proj(attention(q = LN_q(x) Wq, [k v] = LN_m(m) Wkv)))
// It reuses the packed attention op: q and [k v] are written side by side into one
// (B, T, (NH + 2*NKV)*HD) buffer by two GEMMs with a padded row stride (q into the
// first NH*HD columns, [k v] into the rest, through a view offset by NH*HD elements:
// the buffer has NH*HD elements of slack so that view stays inside it). Hence the
// memory has the stream's length T, and q and kv carry no bias (a padded GEMM has no
// bias gradient). Invariants: dx is assigned; the memory's gradient is ADDED (+=) to
// io.d_side[0] (other units may read the same memory); parameter gradients +=.
// Full recompute keeps the norm statistics and the attention lse and replays the rest
// with the same ops and dropout keys, so its gradients are bitwise those without.
#include <algorithm>
#include <cmath>

#include "strata/error.h"
#include "unit.h"

namespace strata {

namespace {

enum CrossParam : int { kLnQW, kLnQB, kLnMW, kLnMB, kQW, kKvW, kProjW, kProjB };

class CrossAttentionUnit final : public Unit {
 public:
  CrossAttentionUnit(const ModelConfig& c, int layer, std::string memory)
      : c_(c), layer_(layer), memory_(std::move(memory)) {
    C_ = c.d_model;
    QW_ = c.n_heads * c.head_dim();
    W_ = c.qkv_width();
  }

  std::string name() const override { return "cross." + std::to_string(layer_); }
  std::vector<std::string> reads() const override { return {memory_}; }

  std::vector<ParamSpec> param_specs() const override {
    using I = ParamSpec::Init;
    const bool ln_bias = c_.norm == NormKind::layernorm && c_.bias;
    const float resid_std = 0.02f / std::sqrt(2.0f * float(std::max<int64_t>(c_.n_layers, 1)));
    auto bias = [&](const char* n) {
      return ParamSpec{ln_bias ? n : "", ln_bias ? std::vector<int64_t>{C_} : std::vector<int64_t>{}, I::zeros, 0,
                       ParamRole::bias};
    };
    return {{"ln_q.weight", {C_}, I::ones, 0, ParamRole::norm},
            bias("ln_q.bias"),
            {"ln_m.weight", {C_}, I::ones, 0, ParamRole::norm},
            bias("ln_m.bias"),
            {"q.weight", {QW_, C_}, I::normal, 0.02f, ParamRole::matrix},
            {"kv.weight", {W_ - QW_, C_}, I::normal, 0.02f, ParamRole::matrix},
            {"proj.weight", {C_, QW_}, I::normal, resid_std, ParamRole::matrix},
            {c_.bias ? "proj.bias" : "", c_.bias ? std::vector<int64_t>{C_} : std::vector<int64_t>{}, I::zeros, 0,
             ParamRole::bias}};
  }

  void set_recompute(Recompute mode) override { full_ = mode == Recompute::full; }

  void reserve(Device& device, DType dtype, int64_t B, int64_t T) override {
    const size_t bytes = small_bytes(B, T) + (full_ ? 0 : big_bytes(dtype, B * T));
    if (saved_.size() < bytes || reserved_full_ != full_) {
      saved_ = Buffer();
      saved_ = Buffer(device, bytes, "cross-attention activations");
      reserved_full_ = full_;
    }
  }

  size_t transient_bytes(DType dtype, int64_t B, int64_t T) const override {
    return full_ ? big_bytes(dtype, B * T) : 0;
  }

  // d_att, d_lnq, d_lnm, the dropout's (rows, C) and d_qkv with its slack.
  size_t scratch_bytes(DType dtype, int64_t n) const override {
    return carve_bytes(dtype, n * QW_) + 3 * carve_bytes(dtype, n * C_) + carve_bytes(dtype, n * W_ + QW_);
  }

  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override {
    check_io(ctx, io);
    Saved a = views(ctx, io.transient);
    const int64_t n = ctx.rows();
    const TensorView x = io.x.reshape({n, C_}), y = io.y.reshape({n, C_});
    attend(ctx, p, a, x, io.side[0].reshape({n, C_}));
    ops::matmul_forward({y, a.att, p.params[kProjW], p.params[kProjB]}, ctx.stream);
    if (drop(ctx, c_.dropout_residual) > 0)
      ops::dropout_forward({y, y, c_.dropout_residual, ctx.dropout_key(kSiteAttnResidual)}, ctx.stream);
    ops::add({y, y, x}, ctx.stream);
  }

  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) override {
    check_io(ctx, io);
    Saved a = views(ctx, io.transient);
    Stream& s = ctx.stream;
    const auto& P = p.params;
    const auto& G = p.grads;
    const int64_t n = ctx.rows();
    const TensorView x = io.x.reshape({n, C_}), m = io.side[0].reshape({n, C_});
    if (full_) attend(ctx, p, a, x, m);  // the same ops on the same inputs and keys
    char* cur = static_cast<char*>(scratch);
    const TensorView d_att = carve(cur, ctx.dtype, {n, QW_});
    const TensorView d_lnq = carve(cur, ctx.dtype, {n, C_});
    const TensorView d_lnm = carve(cur, ctx.dtype, {n, C_});
    const TensorView d_drop = carve(cur, ctx.dtype, {n, C_});
    const TensorView d_qkv = carve(cur, ctx.dtype, {n * W_ + QW_});
    const TensorView dy = io.dy.reshape({n, C_});
    TensorView d_branch = dy;
    if (drop(ctx, c_.dropout_residual) > 0) {
      ops::dropout_backward({d_drop, dy, c_.dropout_residual, ctx.dropout_key(kSiteAttnResidual)}, s);
      d_branch = d_drop;
    }
    ops::matmul_backward({d_att, G[kProjW], G[kProjB], d_branch, a.att, P[kProjW]}, s);
    ops::attention_backward({packed(ctx, d_qkv, 0), heads(ctx, d_att), packed(ctx, a.qkv, 0), heads(ctx, a.att), a.lse,
                             c_.n_heads, false, drop(ctx, c_.dropout_attention), ctx.dropout_key(kSiteAttention),
                             c_.kv_heads()},
                            s);
    ops::MatmulBackwardArgs dq{d_lnq, G[kQW], {}, rows(ctx, d_qkv, 0), a.lnq, P[kQW]};
    dq.d_out_padded = true;
    ops::matmul_backward(dq, s);
    ops::MatmulBackwardArgs dkv{d_lnm, G[kKvW], {}, rows(ctx, d_qkv, QW_), a.lnm, P[kKvW]};
    dkv.d_out_padded = true;
    ops::matmul_backward(dkv, s);
    const bool rms = c_.norm == NormKind::rmsnorm;
    // dx = dy (the residual path) + d(LN_q input); d_memory += d(LN_m input).
    ops::residual_norm_backward({io.dx.reshape({n, C_}), G[kLnQW], G[kLnQB], dy, d_lnq, x, P[kLnQW],
                                 rms ? TensorView{} : a.mean_q, a.rstd_q, rms},
                                s);
    const TensorView d_m = io.d_side[0].reshape({n, C_});
    ops::residual_norm_backward(
        {d_m, G[kLnMW], G[kLnMB], d_m, d_lnm, m, P[kLnMW], rms ? TensorView{} : a.mean_m, a.rstd_m, rms}, s);
  }

 private:
  struct Saved {
    TensorView mean_q, rstd_q, mean_m, rstd_m, lse;  // always kept (small)
    TensorView lnq, lnm, qkv, att;                   // replayed under full recompute
  };

  static float drop(const UnitContext& ctx, float p) { return ctx.train ? p : 0.0f; }

  void check_io(const UnitContext& ctx, const UnitIO& io) const {
    STRATA_CHECK(io.side.size() == 1 && io.side[0].numel() == ctx.rows() * C_,
                 name() << ": expects the memory '" << memory_ << "' as its one side input, (B, T, C) = (" << ctx.B
                        << ", " << ctx.T << ", " << C_ << "); run it in a Model whose earlier unit publishes it");
  }

  // LN_q(x), LN_m(m), q and [k v] packed into qkv, and attention (out and lse).
  void attend(const UnitContext& ctx, const UnitParams& p, Saved& a, const TensorView& x, const TensorView& m) {
    const auto& P = p.params;
    Stream& s = ctx.stream;
    const bool rms = c_.norm == NormKind::rmsnorm;
    ops::norm_forward({a.lnq, rms ? TensorView{} : a.mean_q, a.rstd_q, x, P[kLnQW], P[kLnQB], c_.norm_eps, rms}, s);
    ops::norm_forward({a.lnm, rms ? TensorView{} : a.mean_m, a.rstd_m, m, P[kLnMW], P[kLnMB], c_.norm_eps, rms}, s);
    ops::MatmulForwardArgs q{rows(ctx, a.qkv, 0), a.lnq, P[kQW], {}};
    q.out_padded = true;
    ops::matmul_forward(q, s);
    ops::MatmulForwardArgs kv{rows(ctx, a.qkv, QW_), a.lnm, P[kKvW], {}};
    kv.out_padded = true;
    ops::matmul_forward(kv, s);
    ops::attention_forward({heads(ctx, a.att), a.lse, packed(ctx, a.qkv, 0), c_.n_heads, false,
                            drop(ctx, c_.dropout_attention), ctx.dropout_key(kSiteAttention), c_.kv_heads()},
                           s);
  }

  // The packed buffer (n*W + QW elements) as (n, W) rows starting `at` elements in.
  TensorView rows(const UnitContext& ctx, const TensorView& flat, int64_t at) const {
    return TensorView(static_cast<char*>(flat.data) + size_t(at) * dtype_size(flat.dtype), flat.dtype,
                      {ctx.rows(), W_}, flat.device);
  }
  TensorView packed(const UnitContext& ctx, const TensorView& flat, int64_t at) const {
    return rows(ctx, flat, at).reshape({ctx.B, ctx.T, W_});
  }
  TensorView heads(const UnitContext& ctx, const TensorView& t) const {
    return t.reshape({ctx.B, ctx.T, c_.n_heads, c_.head_dim()});
  }

  size_t small_bytes(int64_t B, int64_t T) const {
    return 4 * carve_bytes(DType::f32, B * T) + carve_bytes(DType::f32, B * c_.n_heads * T);
  }
  size_t big_bytes(DType dt, int64_t n) const {
    return 2 * carve_bytes(dt, n * C_) + carve_bytes(dt, n * W_ + QW_) + carve_bytes(dt, n * QW_);
  }

  Saved views(const UnitContext& ctx, void* transient) const {
    const int64_t n = ctx.rows();
    char* cur = static_cast<char*>(saved_.data());
    Saved a;
    a.mean_q = carve(cur, DType::f32, {n});
    a.rstd_q = carve(cur, DType::f32, {n});
    a.mean_m = carve(cur, DType::f32, {n});
    a.rstd_m = carve(cur, DType::f32, {n});
    a.lse = carve(cur, DType::f32, {ctx.B, c_.n_heads, ctx.T});
    if (full_) cur = static_cast<char*>(transient);
    a.lnq = carve(cur, ctx.dtype, {n, C_});
    a.lnm = carve(cur, ctx.dtype, {n, C_});
    a.qkv = carve(cur, ctx.dtype, {n * W_ + QW_});
    a.att = carve(cur, ctx.dtype, {n, QW_});
    for (TensorView* t : {&a.mean_q, &a.rstd_q, &a.mean_m, &a.rstd_m, &a.lse, &a.lnq, &a.lnm, &a.qkv, &a.att})
      t->device = &ctx.stream.device();
    return a;
  }

  ModelConfig c_;
  int layer_;
  std::string memory_;
  int64_t C_, QW_, W_;
  bool full_ = false, reserved_full_ = false;
  Buffer saved_;
};

}  // namespace

std::unique_ptr<Unit> make_cross_attention_unit(const ModelConfig& config, int layer, const std::string& memory) {
  config.validate();
  STRATA_CHECK(!memory.empty(), "make_cross_attention_unit: name the memory it reads (the activation an encoder "
                                "unit publishes)");
  return std::make_unique<CrossAttentionUnit>(config, layer, memory);
}

}  // namespace strata
