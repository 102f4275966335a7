// Model configurations: presets, validation, parameter and FLOP accounting.
#include <cmath>
#include <sstream>

#include "strata/error.h"
#include "strata/model.h"

namespace strata {

namespace {
ModelConfig gpt2(int64_t layers, int64_t heads, int64_t width) {
  ModelConfig c;
  c.n_layers = layers;
  c.n_heads = heads;
  c.d_model = width;
  c.d_mlp = 4 * width;
  return c;
}

ModelConfig llama(int64_t layers, int64_t heads, int64_t width, int64_t mlp) {
  ModelConfig c;
  c.vocab_size = 32000;
  c.n_layers = layers;
  c.n_heads = heads;
  c.d_model = width;
  c.d_mlp = mlp;
  c.max_seq = 2048;
  c.norm = NormKind::rmsnorm;
  c.mlp = MlpKind::swiglu;
  c.positions = PositionKind::rope;
  c.bias = false;
  c.tied_embeddings = false;
  c.norm_eps = 1e-6f;
  return c;
}
}  // namespace

std::vector<std::string> ModelConfig::preset_names() {
  return {"gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl", "llama-60m", "llama-350m",
          "llama-1b",   "llama-7b",    "gpt-mini",   "demo"};
}

ModelConfig ModelConfig::preset(const std::string& name) {
  if (name == "gpt2-small") return gpt2(12, 12, 768);
  if (name == "gpt2-medium") return gpt2(24, 16, 1024);
  if (name == "gpt2-large") return gpt2(36, 20, 1280);
  if (name == "gpt2-xl") return gpt2(48, 25, 1600);
  if (name == "llama-60m") return llama(8, 8, 512, 1376);
  if (name == "llama-350m") return llama(24, 16, 1024, 2736);
  if (name == "llama-1b") return llama(24, 32, 2048, 5461);
  if (name == "llama-7b") return llama(32, 32, 4096, 11008);
  if (name == "gpt-mini" || name == "demo") {
    // gpt-mini: the benchmark config. demo: the same architecture, byte-level, sized
    // to train on two cores in a few minutes.
    ModelConfig c = gpt2(4, 4, 256);
    c.vocab_size = 256;
    c.max_seq = 256;
    if (name == "demo") {
      c.max_seq = 128;
      c.dropout_residual = 0.0f;
    }
    return c;
  }
  std::ostringstream names;
  for (const auto& n : preset_names()) names << " " << n;
  STRATA_FAIL("unknown model preset '" << name << "'; presets:" << names.str());
}

void ModelConfig::validate() const {
  STRATA_CHECK(vocab_size >= 1, "ModelConfig: vocab_size " << vocab_size << " must be at least 1");
  STRATA_CHECK(n_layers >= 1, "ModelConfig: n_layers " << n_layers << " must be at least 1");
  STRATA_CHECK(n_heads >= 1, "ModelConfig: n_heads " << n_heads << " must be at least 1");
  STRATA_CHECK(d_head >= 0, "ModelConfig: d_head " << d_head << " must be >= 0 (0: d_model / n_heads)");
  STRATA_CHECK(d_model >= 1 && (d_head != 0 || d_model % n_heads == 0),
               "ModelConfig: d_model " << d_model << " does not divide into n_heads " << n_heads
                                       << " heads; choose a width that is a multiple of the head count, or set "
                                          "d_head");
  STRATA_CHECK(n_kv_heads >= 0 && (n_kv_heads == 0 || n_heads % n_kv_heads == 0),
               "ModelConfig: n_kv_heads " << n_kv_heads << " must divide n_heads " << n_heads
                                          << " (or be 0 for n_heads); grouped-query attention shares each kv head "
                                             "among n_heads / n_kv_heads query heads");
  STRATA_CHECK(positions != PositionKind::rope || head_dim() % 2 == 0,
               "ModelConfig: RoPE needs an even head dimension, got " << head_dim()
                                                                     << (d_head ? " (d_head)" : " (d_model / n_heads)"));
  STRATA_CHECK(sliding_window >= 0, "ModelConfig: sliding_window " << sliding_window
                                                                   << " must be >= 0 (0: no sliding window)");
  STRATA_CHECK(sliding_window == 0 || causal,
               "ModelConfig: sliding_window " << sliding_window
                                              << " needs causal attention; set causal or sliding_window = 0");
  STRATA_CHECK(hf_model_type.empty() || hf_model_type == "llama" || hf_model_type == "mistral" ||
                   hf_model_type == "qwen2" || hf_model_type == "gpt2",
               "ModelConfig: hf_model_type \"" << hf_model_type
                                              << "\" is not llama, mistral, qwen2 or gpt2 (or empty: from the shape)");
  STRATA_CHECK(d_mlp >= 1, "ModelConfig: d_mlp " << d_mlp << " must be at least 1");
  STRATA_CHECK(max_seq >= 1, "ModelConfig: max_seq " << max_seq << " must be at least 1");
  for (float p : {dropout_embedding, dropout_attention, dropout_residual})
    STRATA_CHECK(p >= 0.0f && p < 1.0f, "ModelConfig: dropout " << p << " must be in [0, 1)");
  STRATA_CHECK(norm_eps > 0.0f, "ModelConfig: norm_eps " << norm_eps << " must be positive");
  STRATA_CHECK(rope_theta > 0.0f && std::isfinite(rope_theta),
               "ModelConfig: rope_theta " << rope_theta << " must be a finite value > 0");
  const RopeScaling& r = rope_scaling;
  if (r.kind != RopeScalingKind::none) {
    STRATA_CHECK(positions == PositionKind::rope, "ModelConfig: rope_scaling " << rope_scaling_name(r.kind)
                                                  << " needs RoPE positions");
    STRATA_CHECK(r.factor > 0.0f && std::isfinite(r.factor),
                 "ModelConfig: rope_scaling factor " << r.factor << " must be a finite value > 0");
  }
  if (r.kind == RopeScalingKind::llama3)
    STRATA_CHECK(r.low_freq_factor > 0.0f && r.high_freq_factor > r.low_freq_factor && r.original_max_seq >= 1,
                 "ModelConfig: llama3 rope_scaling needs high_freq_factor > low_freq_factor > 0 and "
                 "original_max_seq >= 1, got "
                     << r.high_freq_factor << ", " << r.low_freq_factor << ", " << r.original_max_seq);
}

const char* rope_scaling_name(RopeScalingKind kind) {
  switch (kind) {
    case RopeScalingKind::none: return "none";
    case RopeScalingKind::linear: return "linear";
    case RopeScalingKind::llama3: return "llama3";
  }
  return "?";
}

int64_t ModelConfig::num_parameters() const {
  const int64_t C = d_model, H = d_mlp;
  const int64_t fc_out = mlp == MlpKind::swiglu ? 2 * H : H;
  const int64_t norm_params = norm == NormKind::layernorm && bias ? 2 * C : C;
  const int64_t qkv = qkv_width(), A = attention_width();
  int64_t block = 2 * norm_params + qkv * C + C * A + fc_out * C + C * H;
  if (bias) block += C + fc_out + C;
  if (bias || qkv_bias) block += qkv;
  int64_t n = vocab_size * C + (positions == PositionKind::learned ? max_seq * C : 0);
  n += n_layers * block + norm_params + (tied_embeddings ? 0 : vocab_size * C);
  return n;
}

double ModelConfig::flops_per_token(int64_t seq) const {
  const double C = double(d_model), H = double(d_mlp);
  const double fc_out = mlp == MlpKind::swiglu ? 2 * H : H;
  const double qkv = double(qkv_width());  // 3C for multi-head
  const double A = double(attention_width());  // C unless d_head is set
  const double matmul_params = double(n_layers) * (qkv * C + C * A + fc_out * C + C * H) + double(vocab_size) * C;
  // Scores and values span the keys a query sees: seq, or at most the sliding window.
  const double keys = sliding_window > 0 && sliding_window < seq ? double(sliding_window) : double(seq);
  return 6.0 * matmul_params + 12.0 * double(n_layers) * A * keys;
}

std::string ModelConfig::describe() const {
  std::ostringstream s;
  s << n_layers << " layers, width " << d_model << ", " << n_heads << " heads";
  if (kv_heads() != n_heads) s << " (" << kv_heads() << " kv)";
  if (d_head != 0) s << " of width " << d_head;
  if (sliding_window != 0) s << ", window " << sliding_window;
  s << ", mlp " << d_mlp << ", vocab "
    << vocab_size << ", seq " << max_seq << ", " << (norm == NormKind::layernorm ? "LayerNorm" : "RMSNorm") << ", "
    << (mlp == MlpKind::gelu ? "GELU" : "SwiGLU") << ", "
    << (positions == PositionKind::learned ? "learned positions"
        : positions == PositionKind::rope  ? (rope_scaling.kind == RopeScalingKind::none
                                                  ? std::string("RoPE")
                                                  : std::string("RoPE (") + rope_scaling_name(rope_scaling.kind) +
                                                        " scaling)")
                                           : std::string("sinusoidal positions"))
    << ", " << double(num_parameters()) / 1e6 << "M parameters";
  return s.str();
}

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::bf16: return "bf16";
    case Precision::fp16: return "fp16";
  }
  return "?";
}

Precision precision_from_string(const std::string& name) {
  if (name == "fp32" || name == "f32") return Precision::fp32;
  if (name == "bf16") return Precision::bf16;
  if (name == "fp16" || name == "f16") return Precision::fp16;
  STRATA_FAIL("unknown precision '" << name << "': use fp32, bf16 or fp16");
}

DType precision_dtype(Precision p) {
  return p == Precision::fp32 ? DType::f32 : p == Precision::bf16 ? DType::bf16 : DType::f16;
}

}  // namespace strata
