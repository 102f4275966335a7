// A transformer block, pre-norm:
//   x2  = x  + drop(proj(attention(rope(qkv(norm1(x))))))
//   out = x2 + drop(fc2(act(fc(norm2(x2)))))
// Saved for backward (per row): ln1, qkv (rotated), att, x2, ln2, fc, act, and the
// norm statistics and attention lse; x itself is the Model's residual buffer. Under
// recompute, what a mode does not keep lives in the Model's shared transient
// workspace and is replayed at the start of backward with the same ops and keys,
// so gradients are bitwise those without recompute.
// Fused ops remove passes: x2's residual add runs with norm2 (residual_norm_forward),
// both norm backwards add into the residual gradient (residual_norm_backward), and
// the GPT MLP's fc writes GELU through the matmul epilogue. What recompute replays
// must match what the forward computed bit for bit: a plain norm2 on the kept x2 is
// bitwise the fused one, and the GELU epilogue is used only where act is never
// replayed alone (not under selective recompute; on CUDA cuBLASLt's GELU is not
// bitwise gelu_forward of the rounded fc).
#include <algorithm>
#include <cmath>

#include "block_params.h"
#include "unit.h"

namespace strata {

namespace {

class BlockUnit final : public Unit {
 public:
  BlockUnit(const ModelConfig& c, int layer) : c_(c), layer_(layer) {
    C_ = c.d_model;
    A_ = c.attention_width();
    H_ = c.d_mlp;
    fc_out_ = c.mlp == MlpKind::swiglu ? 2 * H_ : H_;
  }

  std::string name() const override { return "blocks." + std::to_string(layer_); }

  std::vector<ParamSpec> param_specs() const override {
    using I = ParamSpec::Init;
    float resid_std = 0.02f / std::sqrt(2.0f * float(c_.n_layers));
    bool ln = c_.norm == NormKind::layernorm;
    std::vector<ParamSpec> s;
    auto add = [&](const char* n, std::vector<int64_t> shape, I init, float std, ParamRole role, bool present) {
      // Absent parameters keep their slot (empty) so indices stay fixed.
      s.push_back({present ? n : "", present ? shape : std::vector<int64_t>{}, init, std, role});
    };
    add("ln_1.weight", {C_}, I::ones, 0, ParamRole::norm, true);
    add("ln_1.bias", {C_}, I::zeros, 0, ParamRole::bias, ln && c_.bias);
    add("attn.qkv.weight", {c_.qkv_width(), C_}, I::normal, 0.02f, ParamRole::matrix, true);
    add("attn.qkv.bias", {c_.qkv_width()}, I::zeros, 0, ParamRole::bias, c_.bias || c_.qkv_bias);
    add("attn.proj.weight", {C_, A_}, I::normal, resid_std, ParamRole::matrix, true);
    add("attn.proj.bias", {C_}, I::zeros, 0, ParamRole::bias, c_.bias);
    add("ln_2.weight", {C_}, I::ones, 0, ParamRole::norm, true);
    add("ln_2.bias", {C_}, I::zeros, 0, ParamRole::bias, ln && c_.bias);
    add("mlp.fc.weight", {fc_out_, C_}, I::normal, 0.02f, ParamRole::matrix, true);
    add("mlp.fc.bias", {fc_out_}, I::zeros, 0, ParamRole::bias, c_.bias);
    add("mlp.proj.weight", {C_, H_}, I::normal, resid_std, ParamRole::matrix, true);
    add("mlp.proj.bias", {C_}, I::zeros, 0, ParamRole::bias, c_.bias);
    return s;
  }

  void set_recompute(Recompute mode) override { mode_ = mode; }
  std::vector<AdapterSite> adapter_sites() const override {
    return {{"qkv", "attn.qkv.weight", 0}, {"attn_proj", "attn.proj.weight", 1}, {"fc", "mlp.fc.weight", 2},
            {"mlp_proj", "mlp.proj.weight", 3}};
  }
  void set_adapter(LinearAdapter* adapter) override { adapter_ = adapter; }

  void reserve(Device& device, DType dtype, int64_t B, int64_t T) override {
    // Re-sized when the mode changes, so what recompute saves is really returned.
    size_t bytes = layout_bytes(dtype, B, T, false);
    if (saved_.size() < bytes || reserved_mode_ != mode_) {
      saved_ = Buffer();
      saved_ = Buffer(device, bytes, "block activations");
      reserved_mode_ = mode_;
    }
  }

  size_t transient_bytes(DType dtype, int64_t B, int64_t T) const override { return layout_bytes(dtype, B, T, true); }

  size_t scratch_bytes(DType dtype, int64_t n) const override {
    return 2 * carve_bytes(dtype, n * C_) + carve_bytes(dtype, n * std::max(C_, A_)) +
           carve_bytes(dtype, n * c_.qkv_width()) + carve_bytes(dtype, n * H_) + carve_bytes(dtype, n * fc_out_);
  }

  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override {
    Saved a = views(ctx, io.transient);
    const auto& P = p.params;
    TensorView x = io.x.reshape({ctx.rows(), C_});
    TensorView y = io.y.reshape({ctx.rows(), C_});
    attention_half(ctx, p, a, x);
    mlp_in(ctx, p, a);
    ops::matmul_forward({y, a.act, P[kFc2W], P[kFc2B]}, ctx.stream);
    if (adapter_) adapter_->forward(ctx, layer_, 3, a.act, y);
    if (drop(ctx, c_.dropout_residual) > 0)
      ops::dropout_forward({y, y, c_.dropout_residual, ctx.dropout_key(kSiteMlpResidual)}, ctx.stream);
    ops::add({y, a.x2, y}, ctx.stream);
  }

  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) override {
    Saved a = views(ctx, io.transient);
    Stream& s = ctx.stream;
    // Replay what was not kept: the same ops on the same inputs and Philox keys.
    if (mode_ == Recompute::full) {
      attention_half(ctx, p, a, io.x.reshape({ctx.rows(), C_}));
      mlp_in(ctx, p, a);
    } else if (mode_ == Recompute::selective) {
      norm1(ctx, p, a, io.x.reshape({ctx.rows(), C_}));
      norm2(ctx, p, a);
      activation(ctx, a);
    }
    const auto& P = p.params;
    const auto& G = p.grads;
    const bool rms = c_.norm == NormKind::rmsnorm;
    const int64_t n = ctx.rows();
    char* cur = static_cast<char*>(scratch);
    TensorView sa = carve(cur, ctx.dtype, {n, C_});
    // sb: (n, max(C, A)) bytes, viewed as (n, C) for the MLP and as d_att (n, A).
    char* sb_base = cur;
    carve(cur, ctx.dtype, {n, std::max(C_, A_)});
    TensorView sb(sb_base, ctx.dtype, {n, C_});
    TensorView d_x2 = carve(cur, ctx.dtype, {n, C_});
    TensorView d_qkv = carve(cur, ctx.dtype, {n, c_.qkv_width()});
    TensorView d_act = carve(cur, ctx.dtype, {n, H_});
    TensorView d_fc = carve(cur, ctx.dtype, {n, fc_out_});
    TensorView x = io.x.reshape({n, C_});
    TensorView dy = io.dy.reshape({n, C_});
    TensorView dx = io.dx.reshape({n, C_});

    // MLP branch: out = x2 + drop(fc2(act))
    TensorView d_mlp_out = dy;
    if (drop(ctx, c_.dropout_residual) > 0) {
      ops::dropout_backward({sa, dy, c_.dropout_residual, ctx.dropout_key(kSiteMlpResidual)}, s);
      d_mlp_out = sa;
    }
    ops::matmul_backward({d_act, G[kFc2W], G[kFc2B], d_mlp_out, a.act, P[kFc2W]}, s);
    if (adapter_) adapter_->backward(ctx, layer_, 3, a.act, d_mlp_out, d_act);
    if (c_.mlp == MlpKind::swiglu)
      ops::swiglu_backward({d_fc, d_act, a.fc}, s);
    else
      ops::gelu_backward({d_fc, d_act, a.fc}, s);
    ops::matmul_backward({sb, G[kFcW], G[kFcB], d_fc, a.ln2, P[kFcW]}, s);
    if (adapter_) adapter_->backward(ctx, layer_, 2, a.ln2, d_fc, sb);
    // d_x2 = dy (the residual path) + d(norm2 input)
    ops::residual_norm_backward(
        {d_x2, G[kLn2W], G[kLn2B], dy, sb, a.x2, P[kLn2W], rms ? TensorView{} : a.mean2, a.rstd2, rms}, s);

    // Attention branch: x2 = x + drop(proj(att))
    TensorView d_att_out = d_x2;
    if (drop(ctx, c_.dropout_residual) > 0) {
      ops::dropout_backward({sa, d_x2, c_.dropout_residual, ctx.dropout_key(kSiteAttnResidual)}, s);
      d_att_out = sa;
    }
    const TensorView d_att(sb_base, ctx.dtype, {n, A_});
    ops::matmul_backward({d_att, G[kProjW], G[kProjB], d_att_out, a.att, P[kProjW]}, s);
    if (adapter_) adapter_->backward(ctx, layer_, 1, a.att, d_att_out, d_att);
    ops::attention_backward({qkv3(ctx, d_qkv), d_att.reshape({ctx.B, ctx.T, c_.n_heads, c_.head_dim()}),
                             qkv3(ctx, a.qkv), a.att.reshape({ctx.B, ctx.T, c_.n_heads, c_.head_dim()}), a.lse,
                             c_.n_heads, c_.causal, drop(ctx, c_.dropout_attention),
                             ctx.dropout_key(kSiteAttention), c_.kv_heads(), c_.sliding_window},
                            s);
    if (c_.positions == PositionKind::rope) {
      TensorView q = d_qkv.reshape({ctx.B, ctx.T, c_.n_heads + 2 * c_.kv_heads(), c_.head_dim()});
      ops::rope_backward({q, q, c_.n_heads + c_.kv_heads(), c_.rope_theta, 0, rope_scaling_args(c_.rope_scaling)}, s);
    }
    ops::matmul_backward({sa, G[kQkvW], G[kQkvB], d_qkv, a.ln1, P[kQkvW]}, s);
    if (adapter_) adapter_->backward(ctx, layer_, 0, a.ln1, d_qkv, sa);
    // dx = d_x2 (the residual path) + d(norm1 input)
    ops::residual_norm_backward(
        {dx, G[kLn1W], G[kLn1B], d_x2, sa, x, P[kLn1W], rms ? TensorView{} : a.mean1, a.rstd1, rms}, s);
  }

 private:
  struct Saved {
    TensorView ln1, mean1, rstd1, qkv, att, lse, x2, ln2, mean2, rstd2, fc, act;
  };

  static float drop(const UnitContext& ctx, float p) { return ctx.train ? p : 0.0f; }

  TensorView qkv3(const UnitContext& ctx, const TensorView& t) const {
    return t.reshape({ctx.B, ctx.T, c_.qkv_width()});
  }

  void norm1(const UnitContext& ctx, const UnitParams& p, Saved& a, const TensorView& x) {
    const bool rms = c_.norm == NormKind::rmsnorm;
    ops::norm_forward({a.ln1, rms ? TensorView{} : a.mean1, a.rstd1, x, p.params[kLn1W], p.params[kLn1B], c_.norm_eps, rms},
                      ctx.stream);
  }

  void norm2(const UnitContext& ctx, const UnitParams& p, Saved& a) {
    const bool rms = c_.norm == NormKind::rmsnorm;
    ops::norm_forward({a.ln2, rms ? TensorView{} : a.mean2, a.rstd2, a.x2, p.params[kLn2W], p.params[kLn2B], c_.norm_eps, rms},
                      ctx.stream);
  }

  void activation(const UnitContext& ctx, Saved& a) {
    if (c_.mlp == MlpKind::swiglu)
      ops::swiglu_forward({a.act, a.fc}, ctx.stream);
    else
      ops::gelu_forward({a.act, a.fc}, ctx.stream);
  }

  // ln1 .. x2 = x + drop(proj(attention(rope(qkv(ln1))))), then ln2 = norm2(x2) in the
  // same pass as the residual add; proj is computed into x2.
  void attention_half(const UnitContext& ctx, const UnitParams& p, Saved& a, const TensorView& x) {
    const auto& P = p.params;
    Stream& s = ctx.stream;
    norm1(ctx, p, a, x);
    ops::matmul_forward({a.qkv, a.ln1, P[kQkvW], P[kQkvB]}, s);
    if (adapter_) adapter_->forward(ctx, layer_, 0, a.ln1, a.qkv);
    if (c_.positions == PositionKind::rope) {
      TensorView q = a.qkv.reshape({ctx.B, ctx.T, c_.n_heads + 2 * c_.kv_heads(), c_.head_dim()});
      ops::rope_forward({q, q, c_.n_heads + c_.kv_heads(), c_.rope_theta, 0, rope_scaling_args(c_.rope_scaling)}, s);
    }
    ops::attention_forward({a.att.reshape({ctx.B, ctx.T, c_.n_heads, c_.head_dim()}), a.lse, qkv3(ctx, a.qkv),
                            c_.n_heads, c_.causal, drop(ctx, c_.dropout_attention), ctx.dropout_key(kSiteAttention),
                            c_.kv_heads(), c_.sliding_window},
                           s);
    ops::matmul_forward({a.x2, a.att, P[kProjW], P[kProjB]}, s);
    if (adapter_) adapter_->forward(ctx, layer_, 1, a.att, a.x2);
    if (drop(ctx, c_.dropout_residual) > 0)
      ops::dropout_forward({a.x2, a.x2, c_.dropout_residual, ctx.dropout_key(kSiteAttnResidual)}, s);
    const bool rms = c_.norm == NormKind::rmsnorm;
    ops::residual_norm_forward({a.x2, a.ln2, rms ? TensorView{} : a.mean2, a.rstd2, x, a.x2, P[kLn2W], P[kLn2B],
                                c_.norm_eps, rms},
                               s);
  }

  // fc = fc(ln2), act = act(fc): one pass with the GELU epilogue where that is exact
  // for every replay (see the top of the file); LoRA adds to fc before act.
  void mlp_in(const UnitContext& ctx, const UnitParams& p, Saved& a) {
    if (c_.mlp == MlpKind::gelu && !adapter_ && mode_ != Recompute::selective) {
      ops::matmul_forward({a.act, a.ln2, p.params[kFcW], p.params[kFcB], a.fc}, ctx.stream);
      return;
    }
    ops::matmul_forward({a.fc, a.ln2, p.params[kFcW], p.params[kFcB]}, ctx.stream);
    if (adapter_) adapter_->forward(ctx, layer_, 2, a.ln2, a.fc);
    activation(ctx, a);
  }

  // Which activations a mode keeps in the block's own buffer; the rest live in
  // the Model's transient workspace. The norm statistics and lse are tiny: kept.
  bool kept(int field) const {
    enum { kLn1, kQkv, kAtt, kX2, kLn2, kFc, kAct };
    if (mode_ == Recompute::none) return true;
    if (mode_ == Recompute::full) return false;
    return field != kLn1 && field != kLn2 && field != kAct;
  }

  // Lays out the saved activations: the kept ones in `owned`, the others in
  // `transient`; with null bases it only counts bytes.
  size_t layout(DType dt, int64_t B, int64_t T, char* owned, char* transient, Saved* out, bool count_transient) const {
    const int64_t n = B * T;
    size_t bytes_owned = 0, bytes_transient = 0;
    TensorView* fields[] = {out ? &out->ln1 : nullptr, out ? &out->qkv : nullptr, out ? &out->att : nullptr,
                            out ? &out->x2 : nullptr,  out ? &out->ln2 : nullptr, out ? &out->fc : nullptr,
                            out ? &out->act : nullptr};
    const int64_t widths[] = {C_, c_.qkv_width(), A_, C_, C_, fc_out_, H_};
    for (int f = 0; f < 7; ++f) {
      size_t b = carve_bytes(dt, n * widths[f]);
      char*& base = kept(f) ? owned : transient;
      if (out) *fields[f] = TensorView(base, dt, {n, widths[f]});
      if (base) base += b;
      (kept(f) ? bytes_owned : bytes_transient) += b;
    }
    TensorView* stats[] = {out ? &out->mean1 : nullptr, out ? &out->rstd1 : nullptr, out ? &out->mean2 : nullptr,
                           out ? &out->rstd2 : nullptr};
    for (TensorView* t : stats) {
      if (out) *t = TensorView(owned, DType::f32, {n});
      if (owned) owned += carve_bytes(DType::f32, n);
      bytes_owned += carve_bytes(DType::f32, n);
    }
    if (out) out->lse = TensorView(owned, DType::f32, {B, c_.n_heads, T});
    bytes_owned += carve_bytes(DType::f32, B * c_.n_heads * T);
    return count_transient ? bytes_transient : bytes_owned;
  }

  size_t layout_bytes(DType dt, int64_t B, int64_t T, bool transient) const {
    return layout(dt, B, T, nullptr, nullptr, nullptr, transient);
  }

  Saved views(const UnitContext& ctx, void* transient) {
    Saved a;
    layout(ctx.dtype, ctx.B, ctx.T, static_cast<char*>(saved_.data()), static_cast<char*>(transient), &a, false);
    for (TensorView* t : {&a.ln1, &a.qkv, &a.att, &a.x2, &a.ln2, &a.fc, &a.act, &a.mean1, &a.rstd1, &a.mean2,
                          &a.rstd2, &a.lse})
      t->device = &ctx.stream.device();
    return a;
  }

  ModelConfig c_;
  int layer_;
  int64_t C_, A_, H_, fc_out_;  // A_: attention width, n_heads * head_dim
  Recompute mode_ = Recompute::none;
  Recompute reserved_mode_ = Recompute::none;
  Buffer saved_;
  LinearAdapter* adapter_ = nullptr;  // LoRA; its saved state is its own
};

}  // namespace

std::unique_ptr<Unit> make_block_unit(const ModelConfig& config, int layer) {
  return std::make_unique<BlockUnit>(config, layer);
}

}  // namespace strata
