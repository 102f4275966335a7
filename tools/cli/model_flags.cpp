// The model-configuration options of `strata train`: declarations and their
// application to a preset (see model_flags.h).
#include "model_flags.h"

#include <cstdio>

namespace cli {

namespace {
const std::vector<std::string> kBool = {"true", "false"};
bool is_true(const std::string& v) { return v == "true"; }
}  // namespace

void add_model_flags(Args& args, ModelFlags* f) {
  args.option("preset", &f->preset, "NAME", "model preset (overridden by the model options below)");
  args.option("n-layers", &f->n_layers, "N", "transformer blocks (0: the preset's)", 0, 4096);
  args.option("n-heads", &f->n_heads, "N", "attention heads (0: the preset's)", 0, 4096);
  args.option("n-kv-heads", &f->n_kv_heads, "N",
              "key/value heads, dividing --n-heads: grouped-query attention, 1 multi-query (0: the preset's)", 0,
              4096);
  args.option("d-head", &f->d_head, "N", "width of one head (0: the preset's, d_model / n_heads)", 0, 1 << 16);
  args.option("d-model", &f->d_model, "N", "model width (0: the preset's)", 0, 1 << 20);
  args.option("d-mlp", &f->d_mlp, "N", "MLP width (0: the preset's)", 0, 1 << 22);
  args.option("vocab-size", &f->vocab_size, "N", "vocabulary (0: the preset's)", 0, int64_t(1) << 31);
  args.option("max-seq", &f->max_seq, "N", "longest sequence (0: the preset's, at least --seq)", 0, 1 << 24);
  args.option("sliding-window", &f->sliding_window, "W",
              "sliding-window attention: position i sees keys (i - W, i] (0: none; -1: the preset's)", -1, 1 << 24);
  args.choice("norm", &f->norm, {"layernorm", "rmsnorm"}, "normalisation (default: the preset's)");
  args.choice("mlp", &f->mlp, {"gelu", "swiglu"}, "MLP activation (default: the preset's)");
  args.choice("positions", &f->positions, {"learned", "rope", "sinusoidal"}, "position encoding (default: the preset's)");
  args.choice("bias", &f->bias, kBool, "biases on every linear layer and LayerNorm (default: the preset's)");
  args.choice("qkv-bias", &f->qkv_bias, kBool, "a bias on the q/k/v projection even without --bias (Qwen2)");
  args.choice("tied-embeddings", &f->tied_embeddings, kBool, "the head reuses the token embedding (default: the preset's)");
  args.choice("causal", &f->causal, kBool, "causal attention (default: the preset's, true)");
  args.option("dropout", &f->dropout, "P", "attention and residual dropout in [0, 1) (-1: the preset's)", -1, 1);
  args.option("dropout-embedding", &f->dropout_embedding, "P", "embedding dropout in [0, 1) (-1: the preset's)", -1, 1);
  args.option("norm-eps", &f->norm_eps, "X", "norm epsilon (0: the preset's)", 0, 1);
  args.option("rope-theta", &f->rope_theta, "X", "RoPE base (0: the preset's)", 0);
  args.choice("rope-scaling", &f->rope_scaling, {"none", "linear", "llama3"},
              "RoPE frequency scaling (default: the preset's, none)");
  args.option("rope-factor", &f->rope_factor, "X", "linear / llama3 scaling factor (0: 1)", 0);
  args.option("rope-low-freq-factor", &f->rope_low_freq_factor, "X", "llama3 low_freq_factor (0: 1)", 0);
  args.option("rope-high-freq-factor", &f->rope_high_freq_factor, "X", "llama3 high_freq_factor (0: 4)", 0);
  args.option("rope-original-max-seq", &f->rope_original_max_seq, "N",
              "llama3 original_max_position_embeddings (0: 8192)", 0, 1 << 24);
}

std::string check_model_flags(const ModelFlags& f) {
  char buf[160];
  for (auto [name, p] : {std::pair{"--dropout", f.dropout}, std::pair{"--dropout-embedding", f.dropout_embedding}})
    if (p != -1 && !(p >= 0 && p < 1)) {
      std::snprintf(buf, sizeof buf, "%s: %g is out of range (expected -1 for the preset's, or [0, 1))", name, p);
      return buf;
    }
  const bool scaled = f.rope_scaling == "linear" || f.rope_scaling == "llama3";
  if (!scaled && (f.rope_factor || f.rope_low_freq_factor || f.rope_high_freq_factor || f.rope_original_max_seq))
    return "--rope-factor and the other --rope-* scaling options need --rope-scaling linear or llama3";
  if (f.rope_scaling == "linear" && (f.rope_low_freq_factor || f.rope_high_freq_factor || f.rope_original_max_seq))
    return "--rope-low-freq-factor, --rope-high-freq-factor and --rope-original-max-seq are llama3's; "
           "linear scaling takes only --rope-factor";
  return "";
}

strata::ModelConfig model_config_from_flags(const ModelFlags& f, int64_t seq) {
  using namespace strata;
  ModelConfig c = ModelConfig::preset(f.preset);
  if (f.n_layers) c.n_layers = f.n_layers;
  if (f.n_heads) c.n_heads = f.n_heads;
  if (f.n_kv_heads) c.n_kv_heads = f.n_kv_heads == c.n_heads ? 0 : f.n_kv_heads;
  if (f.d_head) c.d_head = f.d_head;
  if (f.d_model) c.d_model = f.d_model;
  if (f.d_mlp) c.d_mlp = f.d_mlp;
  if (f.vocab_size) c.vocab_size = f.vocab_size;
  if (f.max_seq) c.max_seq = f.max_seq;
  if (seq > c.max_seq) c.max_seq = seq;
  if (f.sliding_window >= 0) c.sliding_window = f.sliding_window;
  if (!f.norm.empty()) c.norm = f.norm == "layernorm" ? NormKind::layernorm : NormKind::rmsnorm;
  if (!f.mlp.empty()) c.mlp = f.mlp == "gelu" ? MlpKind::gelu : MlpKind::swiglu;
  if (!f.positions.empty())
    c.positions = f.positions == "learned" ? PositionKind::learned
                  : f.positions == "rope"  ? PositionKind::rope
                                           : PositionKind::sinusoidal;
  if (!f.bias.empty()) c.bias = is_true(f.bias);
  if (!f.qkv_bias.empty()) c.qkv_bias = is_true(f.qkv_bias);
  if (!f.tied_embeddings.empty()) c.tied_embeddings = is_true(f.tied_embeddings);
  if (!f.causal.empty()) c.causal = is_true(f.causal);
  if (f.dropout >= 0) c.dropout_attention = c.dropout_residual = float(f.dropout);
  if (f.dropout_embedding >= 0) c.dropout_embedding = float(f.dropout_embedding);
  if (f.norm_eps > 0) c.norm_eps = float(f.norm_eps);
  if (f.rope_theta > 0) c.rope_theta = float(f.rope_theta);
  if (!f.rope_scaling.empty()) {
    RopeScaling r;  // the defaults, then what is given
    r.kind = f.rope_scaling == "linear" ? RopeScalingKind::linear
             : f.rope_scaling == "llama3" ? RopeScalingKind::llama3
                                          : RopeScalingKind::none;
    if (f.rope_factor > 0) r.factor = float(f.rope_factor);
    if (f.rope_low_freq_factor > 0) r.low_freq_factor = float(f.rope_low_freq_factor);
    if (f.rope_high_freq_factor > 0) r.high_freq_factor = float(f.rope_high_freq_factor);
    if (f.rope_original_max_seq > 0) r.original_max_seq = f.rope_original_max_seq;
    c.rope_scaling = r;
  }
  c.validate();
  return c;
}

}  // namespace cli
