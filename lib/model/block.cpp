// A transformer block, pre-norm:
//   x2  = x  + drop(proj(attention(rope(qkv(norm1(x))))))
//   out = x2 + drop(fc2(act(fc(norm2(x2)))))
// Saved for backward (per row): ln1, qkv (rotated), att, x2, ln2, fc, act, and the
// norm statistics and attention lse. x itself is the Model's residual buffer.
#include <cmath>

#include "unit.h"

namespace strata {

namespace {

enum BlockParam : int { kLn1W, kLn1B, kQkvW, kQkvB, kProjW, kProjB, kLn2W, kLn2B, kFcW, kFcB, kFc2W, kFc2B };

class BlockUnit final : public Unit {
 public:
  BlockUnit(const ModelConfig& c, int layer) : c_(c), layer_(layer) {
    C_ = c.d_model;
    H_ = c.d_mlp;
    fc_out_ = c.mlp == MlpKind::swiglu ? 2 * H_ : H_;
  }

  std::string name() const override { return "blocks." + std::to_string(layer_); }

  std::vector<ParamSpec> param_specs() const override {
    using I = ParamSpec::Init;
    float resid_std = 0.02f / std::sqrt(2.0f * float(c_.n_layers));
    bool ln = c_.norm == NormKind::layernorm;
    std::vector<ParamSpec> s;
    auto add = [&](const char* n, std::vector<int64_t> shape, I init, float std, bool decay, bool present) {
      // Absent parameters keep their slot (empty) so indices stay fixed.
      s.push_back({present ? n : "", present ? shape : std::vector<int64_t>{}, init, std, decay});
    };
    add("ln_1.weight", {C_}, I::ones, 0, false, true);
    add("ln_1.bias", {C_}, I::zeros, 0, false, ln && c_.bias);
    add("attn.qkv.weight", {3 * C_, C_}, I::normal, 0.02f, true, true);
    add("attn.qkv.bias", {3 * C_}, I::zeros, 0, false, c_.bias);
    add("attn.proj.weight", {C_, C_}, I::normal, resid_std, true, true);
    add("attn.proj.bias", {C_}, I::zeros, 0, false, c_.bias);
    add("ln_2.weight", {C_}, I::ones, 0, false, true);
    add("ln_2.bias", {C_}, I::zeros, 0, false, ln && c_.bias);
    add("mlp.fc.weight", {fc_out_, C_}, I::normal, 0.02f, true, true);
    add("mlp.fc.bias", {fc_out_}, I::zeros, 0, false, c_.bias);
    add("mlp.proj.weight", {C_, H_}, I::normal, resid_std, true, true);
    add("mlp.proj.bias", {C_}, I::zeros, 0, false, c_.bias);
    return s;
  }

  void reserve(Device& device, DType dtype, int64_t B, int64_t T) override {
    int64_t n = B * T;
    size_t bytes = saved_bytes(dtype, B, T);
    if (saved_.size() < bytes) saved_ = Buffer(device, bytes, "block activations");
    (void)n;
  }

  size_t scratch_bytes(DType dtype, int64_t n) const override {
    return 3 * carve_bytes(dtype, n * C_) + carve_bytes(dtype, n * 3 * C_) +
           carve_bytes(dtype, n * H_) + carve_bytes(dtype, n * fc_out_);
  }

  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override {
    Saved a = views(ctx);
    Stream& s = ctx.stream;
    const auto& P = p.params;
    const bool rms = c_.norm == NormKind::rmsnorm;
    TensorView x = io.x.reshape({ctx.rows(), C_});
    TensorView y = io.y.reshape({ctx.rows(), C_});

    ops::norm_forward({a.ln1, rms ? TensorView{} : a.mean1, a.rstd1, x, P[kLn1W], P[kLn1B], c_.norm_eps, rms}, s);
    ops::matmul_forward({a.qkv, a.ln1, P[kQkvW], P[kQkvB]}, s);
    if (c_.positions == PositionKind::rope) {
      TensorView q = a.qkv.reshape({ctx.B, ctx.T, 3 * c_.n_heads, c_.head_dim()});
      ops::rope_forward({q, q, 2 * c_.n_heads, c_.rope_theta, 0}, s);
    }
    ops::attention_forward({a.att.reshape({ctx.B, ctx.T, c_.n_heads, c_.head_dim()}), a.lse, qkv3(ctx, a.qkv), c_.n_heads, c_.causal, drop(ctx, c_.dropout_attention),
                            ctx.dropout_key(kSiteAttention)},
                           s);
    // y holds proj(att) until the residual add writes x2.
    ops::matmul_forward({y, a.att, P[kProjW], P[kProjB]}, s);
    if (drop(ctx, c_.dropout_residual) > 0)
      ops::dropout_forward({y, y, c_.dropout_residual, ctx.dropout_key(kSiteAttnResidual)}, s);
    ops::add({a.x2, x, y}, s);

    ops::norm_forward({a.ln2, rms ? TensorView{} : a.mean2, a.rstd2, a.x2, P[kLn2W], P[kLn2B], c_.norm_eps, rms}, s);
    ops::matmul_forward({a.fc, a.ln2, P[kFcW], P[kFcB]}, s);
    if (c_.mlp == MlpKind::swiglu)
      ops::swiglu_forward({a.act, a.fc}, s);
    else
      ops::gelu_forward({a.act, a.fc}, s);
    ops::matmul_forward({y, a.act, P[kFc2W], P[kFc2B]}, s);
    if (drop(ctx, c_.dropout_residual) > 0)
      ops::dropout_forward({y, y, c_.dropout_residual, ctx.dropout_key(kSiteMlpResidual)}, s);
    ops::add({y, a.x2, y}, s);
  }

  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) override {
    Saved a = views(ctx);
    Stream& s = ctx.stream;
    const auto& P = p.params;
    const auto& G = p.grads;
    const bool rms = c_.norm == NormKind::rmsnorm;
    const int64_t n = ctx.rows();
    char* cur = static_cast<char*>(scratch);
    TensorView sa = carve(cur, ctx.dtype, {n, C_});
    TensorView sb = carve(cur, ctx.dtype, {n, C_});
    TensorView d_x2 = carve(cur, ctx.dtype, {n, C_});
    TensorView d_qkv = carve(cur, ctx.dtype, {n, 3 * C_});
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
    if (c_.mlp == MlpKind::swiglu)
      ops::swiglu_backward({d_fc, d_act, a.fc}, s);
    else
      ops::gelu_backward({d_fc, d_act, a.fc}, s);
    ops::matmul_backward({sb, G[kFcW], G[kFcB], d_fc, a.ln2, P[kFcW]}, s);
    ops::norm_backward({sa, G[kLn2W], G[kLn2B], sb, a.x2, P[kLn2W], rms ? TensorView{} : a.mean2, a.rstd2, rms}, s);
    ops::add({d_x2, dy, sa}, s);

    // Attention branch: x2 = x + drop(proj(att))
    TensorView d_att_out = d_x2;
    if (drop(ctx, c_.dropout_residual) > 0) {
      ops::dropout_backward({sa, d_x2, c_.dropout_residual, ctx.dropout_key(kSiteAttnResidual)}, s);
      d_att_out = sa;
    }
    ops::matmul_backward({sb, G[kProjW], G[kProjB], d_att_out, a.att, P[kProjW]}, s);
    ops::attention_backward({qkv3(ctx, d_qkv), sb.reshape({ctx.B, ctx.T, c_.n_heads, c_.head_dim()}),
                             qkv3(ctx, a.qkv), a.att.reshape({ctx.B, ctx.T, c_.n_heads, c_.head_dim()}), a.lse,
                             c_.n_heads, c_.causal, drop(ctx, c_.dropout_attention),
                             ctx.dropout_key(kSiteAttention)},
                            s);
    if (c_.positions == PositionKind::rope) {
      TensorView q = d_qkv.reshape({ctx.B, ctx.T, 3 * c_.n_heads, c_.head_dim()});
      ops::rope_backward({q, q, 2 * c_.n_heads, c_.rope_theta, 0}, s);
    }
    ops::matmul_backward({sa, G[kQkvW], G[kQkvB], d_qkv, a.ln1, P[kQkvW]}, s);
    ops::norm_backward({sb, G[kLn1W], G[kLn1B], sa, x, P[kLn1W], rms ? TensorView{} : a.mean1, a.rstd1, rms}, s);
    ops::add({dx, d_x2, sb}, s);
  }

 private:
  struct Saved {
    TensorView ln1, mean1, rstd1, qkv, att, lse, x2, ln2, mean2, rstd2, fc, act;
  };

  static float drop(const UnitContext& ctx, float p) { return ctx.train ? p : 0.0f; }

  TensorView qkv3(const UnitContext& ctx, const TensorView& t) const { return t.reshape({ctx.B, ctx.T, 3 * C_}); }

  size_t saved_bytes(DType dt, int64_t B, int64_t T) const {
    int64_t n = B * T;
    return 4 * carve_bytes(dt, n * C_) + carve_bytes(dt, n * 3 * C_) + carve_bytes(dt, n * fc_out_) +
           carve_bytes(dt, n * H_) + 4 * carve_bytes(DType::f32, n) + carve_bytes(DType::f32, B * c_.n_heads * T);
  }

  Saved views(const UnitContext& ctx) {
    const int64_t n = ctx.rows();
    char* cur = static_cast<char*>(saved_.data());
    Saved a;
    a.ln1 = carve(cur, ctx.dtype, {n, C_});
    a.qkv = carve(cur, ctx.dtype, {n, 3 * C_});
    a.att = carve(cur, ctx.dtype, {n, C_});
    a.x2 = carve(cur, ctx.dtype, {n, C_});
    a.ln2 = carve(cur, ctx.dtype, {n, C_});
    a.fc = carve(cur, ctx.dtype, {n, fc_out_});
    a.act = carve(cur, ctx.dtype, {n, H_});
    a.mean1 = carve(cur, DType::f32, {n});
    a.rstd1 = carve(cur, DType::f32, {n});
    a.mean2 = carve(cur, DType::f32, {n});
    a.rstd2 = carve(cur, DType::f32, {n});
    a.lse = carve(cur, DType::f32, {ctx.B, c_.n_heads, ctx.T});
    for (TensorView* t : {&a.ln1, &a.qkv, &a.att, &a.x2, &a.ln2, &a.fc, &a.act, &a.mean1, &a.rstd1, &a.mean2,
                          &a.rstd2, &a.lse})
      t->device = &ctx.stream.device();
    return a;
  }

  ModelConfig c_;
  int layer_;
  int64_t C_, H_, fc_out_;
  Buffer saved_;
};

}  // namespace

std::unique_ptr<Unit> make_block_unit(const ModelConfig& config, int layer) {
  return std::make_unique<BlockUnit>(config, layer);
}

}  // namespace strata
