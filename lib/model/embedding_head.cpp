// The first and last units: token (+ position) embedding, and final norm + LM head
// + fused cross-entropy. With tied embeddings the head borrows the embedding's
// table, so the table's gradient gets both uses accumulated in the owner's buffer.
// Padded vocabulary: the head's logits (and their gradient, which overwrites them)
// have a row stride Vp = V rounded up to a multiple of 64 (50304 for GPT-2's 50257),
// so every leading dimension of the head's GEMMs is 16-byte aligned on the device.
// Only the activation is padded: wte / lm_head stay (V, C), so parameters,
// checkpoints, HF files and Model::parameters() never see Vp. The GEMM writes only
// the V real columns (MatmulForwardArgs::out_padded), cross-entropy reads only them
// (vocab = V) and assigns 0 to the padding's gradient, which the backward GEMM does
// not read (d_out_padded). Invariant: the padding columns never reach a result, so
// losses and gradients are bitwise those of the unpadded head.
#include <cmath>

#include "strata/error.h"
#include "unit.h"

namespace strata {

namespace {

class EmbeddingUnit final : public Unit {
 public:
  explicit EmbeddingUnit(const ModelConfig& c) : c_(c) {}
  std::string name() const override { return "embedding"; }
  // Reads the batch's tokens wherever it sits (a decoder's embedding after an encoder).
  std::string batch_input() const override { return "tokens"; }

  std::vector<ParamSpec> param_specs() const override {
    using I = ParamSpec::Init;
    std::vector<ParamSpec> s{{"wte.weight", {c_.vocab_size, c_.d_model}, I::normal, 0.02f, ParamRole::embedding}};
    if (c_.positions == PositionKind::learned)
      s.push_back({"wpe.weight", {c_.max_seq, c_.d_model}, I::normal, 0.01f, ParamRole::embedding});
    return s;
  }

  void reserve(Device& device, DType dtype, int64_t B, int64_t T) override {
    if (c_.positions != PositionKind::sinusoidal || sinusoid_.data()) return;
    // Fixed table (max_seq, C): sin on even channels, cos on odd, as in "Attention Is
    // All You Need". Not a parameter: it never changes and is never saved.
    sinusoid_ = Buffer(device, carve_bytes(dtype, c_.max_seq * c_.d_model), "sinusoidal positions");
    std::vector<float> host(size_t(c_.max_seq * c_.d_model));  // (max_seq, C)
    for (int64_t pos = 0; pos < c_.max_seq; ++pos)
      for (int64_t i = 0; i < c_.d_model; ++i) {
        double freq = std::pow(10000.0, -double(i / 2 * 2) / double(c_.d_model));
        host[size_t(pos * c_.d_model + i)] =
            float(i % 2 == 0 ? std::sin(double(pos) * freq) : std::cos(double(pos) * freq));
      }
    copy_from_host_f32(table(dtype, device), host.data());
  }

  size_t scratch_bytes(DType, int64_t) const override { return 0; }

  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override {
    TensorView wpe = c_.positions == PositionKind::learned ? p.params[1]
                     : c_.positions == PositionKind::sinusoidal ? table(ctx.dtype, ctx.stream.device())
                                                                : TensorView{};
    ops::embedding_forward({io.y, io.tokens, p.params[0], wpe, ctx.pos_offset}, ctx.stream);
    float pdrop = ctx.train ? c_.dropout_embedding : 0.0f;
    if (pdrop > 0) ops::dropout_forward({io.y, io.y, pdrop, ctx.dropout_key(kSiteEmbedding)}, ctx.stream);
  }

  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void*) override {
    float pdrop = ctx.train ? c_.dropout_embedding : 0.0f;
    if (pdrop > 0) ops::dropout_backward({io.dy, io.dy, pdrop, ctx.dropout_key(kSiteEmbedding)}, ctx.stream);
    TensorView d_wpe = c_.positions == PositionKind::learned ? p.grads[1] : TensorView{};
    ops::embedding_backward({p.grads[0], d_wpe, io.dy, io.tokens, 0}, ctx.stream);
  }

 private:
  TensorView table(DType dtype, Device& device) const {
    return TensorView(sinusoid_.data(), dtype, {c_.max_seq, c_.d_model}, &device);
  }
  ModelConfig c_;
  Buffer sinusoid_;
};

enum HeadParam : int { kLnfW, kLnfB, kLmHead };

// 64 elements: a row stride of 128 B in bf16 (256 B in f32), so the leading
// dimension never holds cuBLASLt's alignment below what the pointers allow.
constexpr int64_t kVocabMultiple = 64;

int64_t padded_vocab(int64_t v) { return (v + kVocabMultiple - 1) / kVocabMultiple * kVocabMultiple; }

class HeadUnit final : public Unit {
 public:
  explicit HeadUnit(const ModelConfig& c) : c_(c) {}
  std::string name() const override { return "head"; }

  std::vector<ParamSpec> param_specs() const override {
    using I = ParamSpec::Init;
    bool ln_bias = c_.norm == NormKind::layernorm && c_.bias;
    std::vector<ParamSpec> s{{"ln_f.weight", {c_.d_model}, I::ones, 0, ParamRole::norm},
                             {ln_bias ? "ln_f.bias" : "", ln_bias ? std::vector<int64_t>{c_.d_model} : std::vector<int64_t>{},
                              I::zeros, 0, ParamRole::bias}};
    if (!c_.tied_embeddings) s.push_back({"lm_head.weight", {c_.vocab_size, c_.d_model}, I::normal, 0.02f, ParamRole::matrix});
    return s;
  }

  std::vector<std::string> borrowed() const override {
    if (c_.tied_embeddings) return {"embedding.wte.weight"};
    return {};
  }

  void reserve(Device& device, DType dtype, int64_t B, int64_t T) override {
    size_t bytes = saved_bytes(dtype, B * T);
    if (saved_.size() < bytes) saved_ = Buffer(device, bytes, "head activations");
  }

  size_t scratch_bytes(DType dtype, int64_t n) const override { return carve_bytes(dtype, n * c_.d_model); }

  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override {
    Saved a = views(ctx);
    const bool rms = c_.norm == NormKind::rmsnorm;
    TensorView x = io.x.reshape({ctx.rows(), c_.d_model});
    ops::norm_forward({a.lnf, rms ? TensorView{} : a.mean, a.rstd, x, p.params[kLnfW], p.params[kLnfB], c_.norm_eps, rms},
                      ctx.stream);
    ops::MatmulForwardArgs head{a.logits, a.lnf, p.params[kLmHead], {}};
    head.out_padded = padded();
    ops::matmul_forward(head, ctx.stream);
    ops::CrossEntropyForwardArgs loss{io.losses, a.lse, a.logits, io.targets.reshape({ctx.rows()}), -100};
    loss.vocab = c_.vocab_size;
    ops::cross_entropy_forward(loss, ctx.stream);
  }

  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) override {
    Saved a = views(ctx);
    const bool rms = c_.norm == NormKind::rmsnorm;
    char* cur = static_cast<char*>(scratch);
    TensorView d_lnf = carve(cur, ctx.dtype, {ctx.rows(), c_.d_model});
    // d_logits overwrite the saved logits: the head's backward runs once per forward.
    ops::CrossEntropyBackwardArgs loss{a.logits, a.logits, a.lse, io.targets.reshape({ctx.rows()}), io.d_loss, -100};
    loss.vocab = c_.vocab_size;
    ops::cross_entropy_backward(loss, ctx.stream);
    ops::MatmulBackwardArgs head{d_lnf, p.grads[kLmHead], {}, a.logits, a.lnf, p.params[kLmHead]};
    head.d_out_padded = padded();
    ops::matmul_backward(head, ctx.stream);
    ops::norm_backward({io.dx.reshape({ctx.rows(), c_.d_model}), p.grads[kLnfW], p.grads[kLnfB], d_lnf,
                        io.x.reshape({ctx.rows(), c_.d_model}), p.params[kLnfW], rms ? TensorView{} : a.mean, a.rstd,
                        rms},
                       ctx.stream);
  }

  void logits(const UnitContext& ctx, const UnitParams& p, const TensorView& x, const TensorView& out) {
    Saved a = views(ctx);  // ctx.rows() == rows of x
    const bool rms = c_.norm == NormKind::rmsnorm;
    ops::norm_forward({a.lnf, rms ? TensorView{} : a.mean, a.rstd, x, p.params[kLnfW], p.params[kLnfB], c_.norm_eps, rms},
                      ctx.stream);
    // Unpadded here: `out` is (rows, V) and the cast needs equal shapes; the saved
    // buffer has room for it (Vp >= V), and each logit is the same value either way.
    TensorView logits(a.logits.data, a.logits.dtype, {ctx.rows(), c_.vocab_size}, a.logits.device);
    ops::matmul_forward({logits, a.lnf, p.params[kLmHead], {}}, ctx.stream);
    ops::cast({out, logits}, ctx.stream);
  }

 private:
  struct Saved {
    TensorView lnf, mean, rstd, logits, lse;
  };
  bool padded() const { return padded_vocab(c_.vocab_size) != c_.vocab_size; }
  size_t saved_bytes(DType dt, int64_t n) const {
    return carve_bytes(dt, n * c_.d_model) + carve_bytes(dt, n * padded_vocab(c_.vocab_size)) +
           3 * carve_bytes(DType::f32, n);
  }
  Saved views(const UnitContext& ctx) {
    const int64_t n = ctx.rows();
    char* cur = static_cast<char*>(saved_.data());
    Saved a;
    a.lnf = carve(cur, ctx.dtype, {n, c_.d_model});
    a.logits = carve(cur, ctx.dtype, {n, padded_vocab(c_.vocab_size)});  // (n, Vp)
    a.mean = carve(cur, DType::f32, {n});
    a.rstd = carve(cur, DType::f32, {n});
    a.lse = carve(cur, DType::f32, {n});
    return a;
  }
  ModelConfig c_;
  Buffer saved_;
};

}  // namespace

std::unique_ptr<Unit> make_embedding_unit(const ModelConfig& config) { return std::make_unique<EmbeddingUnit>(config); }
std::unique_ptr<Unit> make_head_unit(const ModelConfig& config) { return std::make_unique<HeadUnit>(config); }

void require_lm_head(const Unit& head) {
  STRATA_CHECK(dynamic_cast<const HeadUnit*>(&head),
               "Model: logits and decoding need the built-in LM head as the last unit; this model ends in '"
                   << head.name() << "' (a classifier's outputs are its per-row losses)");
}

void head_logits(Unit& head, const UnitContext& ctx, const UnitParams& p, const TensorView& x,
                 const TensorView& logits) {
  require_lm_head(head);
  static_cast<HeadUnit&>(head).logits(ctx, p, x, logits);
}

size_t carve_bytes(DType dtype, int64_t numel) { return (size_t(numel) * dtype_size(dtype) + 63) / 64 * 64; }

TensorView carve(char*& cursor, DType dtype, std::initializer_list<int64_t> shape) {
  TensorView t(cursor, dtype, shape);
  cursor += carve_bytes(dtype, t.numel());
  return t;
}

num::RandomKey UnitContext::dropout_key(uint32_t site) const {
  STRATA_CHECK(site < 16, "UnitContext::dropout_key: site " << site << " of unit " << unit_index
                                                             << "; a unit has dropout sites 0..15");
  // key1 = optimizer step; key2 = micro-step (12 bits) | unit (16 bits) | site (4 bits).
  uint32_t key2 = (uint32_t(key.micro & 0xfff) << 20) | (uint32_t(unit_index & 0xffff) << 4) | uint32_t(site);
  return num::RandomKey{key.seed, uint32_t(key.step), key2};
}

}  // namespace strata
