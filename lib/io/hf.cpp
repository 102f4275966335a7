// Hugging Face interop: GPT-2 and LLaMA safetensors layouts and config.json (model_type
// gpt2, llama, and the llama-shaped qwen2 and mistral; grouped-query k/v of Hkv heads).
// Every HF tensor is a "piece" of one strata parameter: the whole of it, a range of
// its rows (q/k/v of the fused qkv, gate/up of the SwiGLU fc), optionally
// transposed (GPT-2's Conv1D stores weights [in, out], strata stores [out, in]).
// Invariant: export and import walk the same piece table, so a round trip is the
// identity; import checks every name and shape before writing any parameter.
#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "file_io.h"
#include "lib/core/host_convert.h"
#include "json.h"
#include "strata/checkpoint.h"
#include "strata/error.h"
#include "strata/train.h"

namespace strata {

namespace {
namespace fs = std::filesystem;
using json::Value;

struct Piece {
  std::string hf, strata;
  int64_t row_begin = 0, row_end = -1;  // rows of the strata parameter (-1: all)
  bool transpose = false;
};

std::vector<Piece> pieces(const ModelConfig& c, HfLayout layout, const std::string& prefix) {
  std::vector<Piece> out;
  const int64_t H = c.d_mlp;
  auto add = [&](std::string hf, std::string st, bool transpose = false, int64_t b = 0, int64_t e = -1) {
    out.push_back({std::move(hf), std::move(st), b, e, transpose});
  };
  if (layout == HfLayout::gpt2) {
    add(prefix + "wte.weight", "embedding.wte.weight");
    add(prefix + "wpe.weight", "embedding.wpe.weight");
    for (int64_t i = 0; i < c.n_layers; ++i) {
      const std::string h = prefix + "h." + std::to_string(i) + ".", s = "blocks." + std::to_string(i) + ".";
      add(h + "ln_1.weight", s + "ln_1.weight");
      add(h + "ln_1.bias", s + "ln_1.bias");
      add(h + "attn.c_attn.weight", s + "attn.qkv.weight", true);
      add(h + "attn.c_attn.bias", s + "attn.qkv.bias");
      add(h + "attn.c_proj.weight", s + "attn.proj.weight", true);
      add(h + "attn.c_proj.bias", s + "attn.proj.bias");
      add(h + "ln_2.weight", s + "ln_2.weight");
      add(h + "ln_2.bias", s + "ln_2.bias");
      add(h + "mlp.c_fc.weight", s + "mlp.fc.weight", true);
      add(h + "mlp.c_fc.bias", s + "mlp.fc.bias");
      add(h + "mlp.c_proj.weight", s + "mlp.proj.weight", true);
      add(h + "mlp.c_proj.bias", s + "mlp.proj.bias");
    }
    add(prefix + "ln_f.weight", "head.ln_f.weight");
    add(prefix + "ln_f.bias", "head.ln_f.bias");
    if (!c.tied_embeddings) add("lm_head.weight", "head.lm_head.weight");
    return out;
  }
  add("model.embed_tokens.weight", "embedding.wte.weight");
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string h = "model.layers." + std::to_string(i) + ".", s = "blocks." + std::to_string(i) + ".";
    add(h + "input_layernorm.weight", s + "ln_1.weight");
    const char* qkv[3] = {"q_proj", "k_proj", "v_proj"};
    // Rows of the fused qkv: q [0, Cq), then k and v of kv_heads() * head_dim() each.
    const int64_t Cq = c.attention_width(), Ckv = c.kv_heads() * c.head_dim();
    const int64_t bounds[4] = {0, Cq, Cq + Ckv, Cq + 2 * Ckv};
    // Pieces of one strata parameter stay adjacent: import assembles them in order.
    for (int k = 0; k < 3; ++k)
      add(h + "self_attn." + qkv[k] + ".weight", s + "attn.qkv.weight", false, bounds[k], bounds[k + 1]);
    for (int k = 0; k < 3 && (c.bias || c.qkv_bias); ++k)
      add(h + "self_attn." + qkv[k] + ".bias", s + "attn.qkv.bias", false, bounds[k], bounds[k + 1]);
    add(h + "self_attn.o_proj.weight", s + "attn.proj.weight");
    if (c.bias) add(h + "self_attn.o_proj.bias", s + "attn.proj.bias");
    add(h + "post_attention_layernorm.weight", s + "ln_2.weight");
    add(h + "mlp.gate_proj.weight", s + "mlp.fc.weight", false, 0, H);
    add(h + "mlp.up_proj.weight", s + "mlp.fc.weight", false, H, 2 * H);
    if (c.bias) {
      add(h + "mlp.gate_proj.bias", s + "mlp.fc.bias", false, 0, H);
      add(h + "mlp.up_proj.bias", s + "mlp.fc.bias", false, H, 2 * H);
    }
    add(h + "mlp.down_proj.weight", s + "mlp.proj.weight");
    if (c.bias) add(h + "mlp.down_proj.bias", s + "mlp.proj.bias");
  }
  add("model.norm.weight", "head.ln_f.weight");
  if (!c.tied_embeddings) add("lm_head.weight", "head.lm_head.weight");
  return out;
}

// Shape of a piece in the HF file, given the strata parameter's shape.
std::vector<int64_t> piece_shape(const Piece& p, const std::vector<int64_t>& shape) {
  std::vector<int64_t> s = shape;
  if (p.row_end >= 0) s[0] = p.row_end - p.row_begin;
  if (p.transpose) std::swap(s[0], s[1]);
  return s;
}

// Rows [b, e) of a row-major (rows, cols) f32 array, transposed or not.
std::vector<float> extract(const std::vector<float>& full, int64_t cols, const Piece& p, int64_t rows) {
  const int64_t b = p.row_end >= 0 ? p.row_begin : 0, e = p.row_end >= 0 ? p.row_end : rows;
  std::vector<float> out(size_t((e - b) * cols));
  for (int64_t r = b; r < e; ++r)
    for (int64_t k = 0; k < cols; ++k) {
      const float x = full[size_t(r * cols + k)];
      if (p.transpose) out[size_t(k * (e - b) + (r - b))] = x;
      else out[size_t((r - b) * cols + k)] = x;
    }
  return out;
}

void insert(std::vector<float>& full, int64_t cols, const Piece& p, int64_t rows, const std::vector<float>& part) {
  const int64_t b = p.row_end >= 0 ? p.row_begin : 0, e = p.row_end >= 0 ? p.row_end : rows;
  for (int64_t r = b; r < e; ++r)
    for (int64_t k = 0; k < cols; ++k)
      full[size_t(r * cols + k)] = p.transpose ? part[size_t(k * (e - b) + (r - b))] : part[size_t((r - b) * cols + k)];
}

int64_t cols_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

std::vector<float> param_f32(const Model& m, const ParamInfo& p) { return copy_to_host_f32(m.parameter(p.name)); }

// The model_type export writes: the imported one (a Mistral without a window has
// llama's shape, so the shape alone would say llama), else the shape's: q/k/v bias
// without other biases is Qwen2's, a sliding window Mistral's. Refused where that
// architecture cannot express the model's shape.
std::string export_model_type(const ModelConfig& c, HfLayout layout) {
  const std::string& imported = c.hf_model_type;
  if (layout == HfLayout::gpt2) {
    STRATA_CHECK(imported.empty() || imported == "gpt2",
                 "export_hf: the model was imported as model_type " << imported << " but has GPT-2's shape");
    return "gpt2";
  }
  STRATA_CHECK(imported != "gpt2", "export_hf: the model was imported as model_type gpt2 but has llama's shape");
  const bool qwen2_shape = c.qkv_bias && !c.bias;
  const std::string type =
      !imported.empty() ? imported : qwen2_shape ? "qwen2" : c.sliding_window > 0 ? "mistral" : "llama";
  STRATA_CHECK(type != "qwen2" || qwen2_shape,
               "export_hf: model_type qwen2 has biases on q/k/v only; this model has bias = "
                   << c.bias << ", qkv_bias = " << c.qkv_bias << " (clear hf_model_type to export by shape)");
  STRATA_CHECK(type != "mistral" || (!c.bias && !c.qkv_bias),
               "export_hf: model_type mistral has no biases; this model has some (clear hf_model_type to export "
               "by shape)");
  STRATA_CHECK(type != "llama" || (!qwen2_shape && c.sliding_window == 0),
               "export_hf: model_type llama has neither q/k/v-only biases nor a sliding window; this model has "
                   << (qwen2_shape ? "q/k/v-only biases" : "a sliding window")
                   << " (clear hf_model_type to export by shape)");
  return type;
}

Value hf_config(const ModelConfig& c, HfLayout layout, DType dtype) {
  Value v = Value::object();
  const char* torch_dtype = dtype == DType::bf16 ? "bfloat16" : "float32";
  if (layout == HfLayout::gpt2) {
    Value arch = Value::array();
    arch.push(Value::string("GPT2LMHeadModel"));
    v.set("architectures", std::move(arch));
    v.set("model_type", Value::string("gpt2"));
    v.set("vocab_size", Value::integer(c.vocab_size));
    v.set("n_positions", Value::integer(c.max_seq));
    v.set("n_ctx", Value::integer(c.max_seq));
    v.set("n_embd", Value::integer(c.d_model));
    v.set("n_layer", Value::integer(c.n_layers));
    v.set("n_head", Value::integer(c.n_heads));
    v.set("n_inner", Value::integer(c.d_mlp));
    v.set("activation_function", Value::string("gelu_new"));
    v.set("layer_norm_epsilon", Value::real(c.norm_eps));
    v.set("resid_pdrop", Value::real(c.dropout_residual));
    v.set("embd_pdrop", Value::real(c.dropout_embedding));
    v.set("attn_pdrop", Value::real(c.dropout_attention));
    v.set("scale_attn_weights", Value::boolean(true));
  } else {
    const std::string type = export_model_type(c, layout);
    const bool qwen2 = type == "qwen2", mistral = type == "mistral";
    Value arch = Value::array();
    arch.push(Value::string(qwen2 ? "Qwen2ForCausalLM" : mistral ? "MistralForCausalLM" : "LlamaForCausalLM"));
    v.set("architectures", std::move(arch));
    v.set("model_type", Value::string(type));
    v.set("vocab_size", Value::integer(c.vocab_size));
    v.set("hidden_size", Value::integer(c.d_model));
    v.set("intermediate_size", Value::integer(c.d_mlp));
    v.set("num_hidden_layers", Value::integer(c.n_layers));
    v.set("num_attention_heads", Value::integer(c.n_heads));
    v.set("num_key_value_heads", Value::integer(c.kv_heads()));
    v.set("head_dim", Value::integer(c.head_dim()));
    v.set("max_position_embeddings", Value::integer(c.max_seq));
    v.set("rms_norm_eps", Value::real(c.norm_eps));
    v.set("rope_theta", Value::real(c.rope_theta));
    if (c.rope_scaling.kind != RopeScalingKind::none) {  // transformers' rope_scaling spelling
      const RopeScaling& r = c.rope_scaling;
      Value sc = Value::object();
      sc.set("rope_type", Value::string(rope_scaling_name(r.kind)));
      sc.set("factor", Value::real(r.factor));
      if (r.kind == RopeScalingKind::llama3) {
        sc.set("low_freq_factor", Value::real(r.low_freq_factor));
        sc.set("high_freq_factor", Value::real(r.high_freq_factor));
        sc.set("original_max_position_embeddings", Value::integer(r.original_max_seq));
      }
      v.set("rope_scaling", std::move(sc));
    }
    v.set("hidden_act", Value::string("silu"));
    if (qwen2) {  // max_window_layers 0: every layer windowed, as strata's blocks are
      v.set("use_sliding_window", Value::boolean(c.sliding_window > 0));
      if (c.sliding_window > 0) {
        v.set("sliding_window", Value::integer(c.sliding_window));
        v.set("max_window_layers", Value::integer(0));
      }
    } else if (mistral) {  // null: no window, as Mistral v0.3 says it
      v.set("sliding_window", c.sliding_window > 0 ? Value::integer(c.sliding_window) : Value());
    } else {
      v.set("attention_bias", Value::boolean(c.bias));
      v.set("mlp_bias", Value::boolean(c.bias));
    }
    v.set("attention_dropout", Value::real(c.dropout_attention));
  }
  v.set("tie_word_embeddings", Value::boolean(c.tied_embeddings));
  v.set("torch_dtype", Value::string(torch_dtype));
  return v;
}

int64_t get_int(const Value& v, const char* key, const std::string& what) { return v.at(key, what).as_int(what + " " + key); }
float get_float_or(const Value& v, const char* key, float fallback, const std::string& what) {
  const Value* x = v.find(key);
  return x && !x->is_null() ? float(x->as_double(what + " " + key)) : fallback;
}
bool get_bool_or(const Value& v, const char* key, bool fallback, const std::string& what) {
  const Value* x = v.find(key);
  return x && !x->is_null() ? x->as_bool(what + " " + key) : fallback;
}

// Tensors an HF file may carry that strata has no use for (buffers, tied copies).
bool ignorable(const std::string& name, const ModelConfig& c) {
  auto ends = [&](const char* s) {
    const std::string t = s;
    return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
  };
  return ends(".attn.bias") || ends(".attn.masked_bias") || ends("rotary_emb.inv_freq") ||
         (c.tied_embeddings && name == "lm_head.weight");
}
}  // namespace

const char* hf_layout_name(HfLayout layout) { return layout == HfLayout::gpt2 ? "gpt2" : "llama"; }

HfLayout hf_layout_from_string(const std::string& name) {
  if (name == "gpt2") return HfLayout::gpt2;
  if (name == "llama") return HfLayout::llama;
  STRATA_FAIL("unknown Hugging Face layout '" << name << "': use gpt2 or llama");
}

HfLayout hf_layout_for(const ModelConfig& c) {
  if (c.norm == NormKind::layernorm && c.mlp == MlpKind::gelu && c.positions == PositionKind::learned && c.bias &&
      c.causal)
    return HfLayout::gpt2;
  if (c.norm == NormKind::rmsnorm && c.mlp == MlpKind::swiglu && c.positions == PositionKind::rope && c.causal)
    return HfLayout::llama;
  STRATA_FAIL("this model (" << c.describe()
                             << ") fits neither Hugging Face layout: gpt2 needs LayerNorm, GELU, learned positions "
                                "and biases; llama needs RMSNorm, SwiGLU and RoPE");
}

void export_hf(const Model& model, const std::string& dir, HfLayout layout, DType dtype,
               uint64_t max_shard_bytes) {
  const ModelConfig& c = model.config();
  STRATA_CHECK(hf_layout_for(c) == layout, "export_hf: this model is a " << hf_layout_name(hf_layout_for(c))
                                                                         << " model, not " << hf_layout_name(layout));
  STRATA_CHECK(dtype == DType::f32 || dtype == DType::bf16, "export_hf: dtype must be f32 or bf16");
  STRATA_CHECK(layout != HfLayout::llama || c.sliding_window == 0 || !c.bias,
               "export_hf: a sliding-window model with biases has no transformers architecture (mistral has no "
               "biases, qwen2 only q/k/v biases); train it with bias = false or qkv_bias");
  export_model_type(c, layout);  // refuses before anything is written
  std::error_code ec;
  fs::create_directories(dir, ec);
  STRATA_CHECK(!ec, "export_hf: cannot create " << dir << ": " << ec.message());
  const std::vector<Piece> table = pieces(c, layout, "transformer.");
  std::map<std::string, const ParamInfo*> info;
  for (const ParamInfo& p : model.parameters()) info[p.name] = &p;
  std::vector<SafetensorsEntry> entries;
  for (const Piece& p : table)
    entries.push_back({p.hf, safetensors_dtype_name(dtype), piece_shape(p, info.at(p.strata)->shape), 0, 0});
  // config.json first: a directory with weights but no config is useless to transformers.
  const std::string config = hf_config(c, layout, dtype).dump(2) + "\n";
  const std::string temp = dir + "/config.json.partial";
  fs::remove(temp, ec);
  io::write_file_synced(temp, config);
  fs::rename(temp, dir + "/config.json", ec);
  STRATA_CHECK(!ec, "export_hf: cannot write " << dir << "/config.json: " << ec.message());
  SafetensorsShardedWriter w(dir, std::move(entries), {{"format", "pt"}}, max_shard_bytes);
  std::string cached_name;
  std::vector<float> cached;
  for (const Piece& p : table) {
    const ParamInfo& pi = *info.at(p.strata);
    if (cached_name != p.strata) cached = param_f32(model, pi), cached_name = p.strata;
    std::vector<float> part = extract(cached, cols_of(pi.shape), p, pi.shape[0]);
    w.write_converted(TensorView(part.data(), DType::f32, {int64_t(part.size())}));
  }
  w.finish();
}

namespace {

// transformers' rope settings in either spelling: v4's top-level rope_theta plus an
// optional rope_scaling object, or v5's rope_parameters object holding both. Every
// rope type or key strata does not implement is refused by name.
void read_rope(const Value& v, const std::string& path, ModelConfig& c) {
  c.rope_theta = get_float_or(v, "rope_theta", 10000.0f, path);
  const Value* params = v.find("rope_parameters");
  const Value* scaling = v.find("rope_scaling");
  STRATA_CHECK(!(params && !params->is_null() && scaling && !scaling->is_null()),
               path << ": both rope_parameters and rope_scaling are set; give one");
  const Value* r = params && !params->is_null() ? params : scaling && !scaling->is_null() ? scaling : nullptr;
  if (r == nullptr) return;
  const std::string where = path + (r == params ? " rope_parameters" : " rope_scaling");
  STRATA_CHECK(r->is_object(), where << " must be an object");
  static const std::set<std::string> known = {"rope_type", "type", "rope_theta", "factor", "low_freq_factor",
                                              "high_freq_factor", "original_max_position_embeddings"};
  for (const auto& [key, value] : r->members(where))
    STRATA_CHECK(known.count(key) || (key == "partial_rotary_factor" && value.as_double(where) == 1.0),
                 where << ": key \"" << key << "\" is not implemented by strata (it implements rope types "
                       "default, linear and llama3); loading the model would change its numerics");
  if (const Value* theta = r->find("rope_theta")) c.rope_theta = float(theta->as_double(where + " rope_theta"));
  const Value* type_value = r->find("rope_type") ? r->find("rope_type") : r->find("type");
  const std::string type = type_value ? type_value->as_string(where + " rope_type") : "default";
  auto number = [&](const char* key) {
    return float(r->at(key, where).as_double(where + " " + key));
  };
  if (type == "default") {
    c.rope_scaling = {};
  } else if (type == "linear") {
    c.rope_scaling.kind = RopeScalingKind::linear;
    c.rope_scaling.factor = number("factor");
  } else if (type == "llama3") {
    c.rope_scaling.kind = RopeScalingKind::llama3;
    c.rope_scaling.factor = number("factor");
    c.rope_scaling.low_freq_factor = number("low_freq_factor");
    c.rope_scaling.high_freq_factor = number("high_freq_factor");
    c.rope_scaling.original_max_seq = r->at("original_max_position_embeddings", where).as_int(where);
  } else {
    STRATA_FAIL(where << ": rope_type \"" << type << "\" is not implemented by strata (it implements default, "
                         "linear and llama3); loading the model would change its numerics");
  }
}

// config.json keys that change no numerics strata computes (metadata, generation and
// tokenizer ids), or that read_hf_config reads itself.
bool known_config_key(const std::string& type, const std::string& key) {
  static const std::set<std::string> common = {
      "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "_name_or_path",
      "bos_token_id", "eos_token_id", "pad_token_id", "initializer_range", "use_cache", "vocab_size",
      "tie_word_embeddings", "output_attentions", "output_hidden_states", "return_dict", "id2label",
      "label2id", "task_specific_params", "problem_type", "tokenizer_class", "prefix", "sep_token_id",
      "decoder_start_token_id", "is_encoder_decoder", "add_cross_attention", "chunk_size_feed_forward",
      "torchscript", "use_return_dict"};
  static const std::set<std::string> gpt2 = {
      "n_positions", "n_ctx", "n_embd", "n_layer", "n_head", "n_inner", "activation_function",
      "layer_norm_epsilon", "resid_pdrop", "embd_pdrop", "attn_pdrop", "scale_attn_weights",
      "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "summary_type", "summary_use_proj",
      "summary_activation", "summary_proj_to_labels", "summary_first_dropout"};
  static const std::set<std::string> llama = {
      "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
      "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters",
      "hidden_act", "attention_bias", "mlp_bias", "attention_dropout", "pretraining_tp"};
  // qwen2 / mistral: sliding-window keys, read by read_hf_config (a window over only some
  // layers is refused there).
  static const std::set<std::string> windowed = {"sliding_window", "use_sliding_window", "max_window_layers",
                                                 "layer_types"};
  if (type != "gpt2" && type != "llama" && windowed.count(key)) return true;
  return common.count(key) || (type == "gpt2" ? gpt2 : llama).count(key);
}

// The sliding window of a qwen2 / mistral config.json (0: none), in transformers'
// reading: mistral windows every layer when sliding_window is set; qwen2 only with
// use_sliding_window, and then layers from max_window_layers on (default 28), or as
// layer_types lists. strata windows all blocks or none, so a mixed model is refused.
// A window of at least max_position_embeddings masks nothing and reads as 0.
int64_t read_sliding_window(const Value& v, const std::string& type, const std::string& path, const ModelConfig& c) {
  if (type != "qwen2" && type != "mistral") return 0;
  const Value* w = v.find("sliding_window");
  int64_t window = w && !w->is_null() ? w->as_int(path + " sliding_window") : 0;
  STRATA_CHECK(window >= 0, path << ": sliding_window " << window << " must be positive (or null)");
  if (type == "qwen2" && !get_bool_or(v, "use_sliding_window", false, path)) window = 0;
  int64_t first_windowed = 0;  // layers [first_windowed, n_layers) are windowed
  if (type == "qwen2" && window > 0) {
    const Value* m = v.find("max_window_layers");
    first_windowed = m && !m->is_null() ? m->as_int(path + " max_window_layers") : 28;
    first_windowed = std::clamp<int64_t>(first_windowed, 0, c.n_layers);
  }
  if (window == 0) first_windowed = c.n_layers;
  if (const Value* types = v.find("layer_types"); types && !types->is_null()) {
    const auto& items = types->items(path + " layer_types");
    STRATA_CHECK(int64_t(items.size()) == c.n_layers,
                 path << ": layer_types lists " << items.size() << " layers for num_hidden_layers " << c.n_layers);
    int64_t sliding = 0;
    for (const Value& t : items) {
      const std::string& name = t.as_string(path + " layer_types");
      STRATA_CHECK(name == "full_attention" || name == "sliding_attention",
                   path << ": layer_types entry \"" << name << "\" is not implemented by strata (it implements "
                                                       "full_attention and sliding_attention)");
      sliding += name == "sliding_attention";
    }
    STRATA_CHECK(sliding == 0 || window > 0,
                 path << ": layer_types has sliding_attention layers but no active sliding_window");
    first_windowed = sliding == 0 ? c.n_layers : sliding == c.n_layers ? 0 : -1;
    STRATA_CHECK(first_windowed >= 0, path << ": layer_types mixes sliding_attention and full_attention layers; "
                                              "strata windows every block or none");
  }
  STRATA_CHECK(first_windowed == 0 || first_windowed == c.n_layers,
               path << ": max_window_layers " << first_windowed << " windows only layers " << first_windowed
                    << " to " << c.n_layers - 1 << "; strata windows every block or none (max_window_layers 0 or >= "
                    << c.n_layers << ")");
  if (first_windowed == c.n_layers || window >= c.max_seq) return 0;
  return window;
}

}  // namespace

ModelConfig read_hf_config(const std::string& dir, HfLayout* layout_out) {
  const std::string path = dir + "/config.json";
  const Value v = json::parse(io::read_file(path), path);
  const std::string type = v.at("model_type", path).as_string(path + " model_type");
  ModelConfig c;
  c.causal = true;
  const bool llama_family = type == "llama" || type == "qwen2" || type == "mistral";
  if (type == "gpt2" || llama_family)
    for (const auto& [key, value] : v.members(path))
      STRATA_CHECK(known_config_key(type, key),
                   path << ": key \"" << key << "\" is not implemented by strata for model_type " << type
                        << "; loading the model could change its numerics, so it is refused (remove the "
                           "key if it does not matter)");
  if (type == "gpt2") {
    c.vocab_size = get_int(v, "vocab_size", path);
    c.max_seq = get_int(v, "n_positions", path);
    c.d_model = get_int(v, "n_embd", path);
    c.n_layers = get_int(v, "n_layer", path);
    c.n_heads = get_int(v, "n_head", path);
    const Value* inner = v.find("n_inner");
    c.d_mlp = inner && !inner->is_null() ? inner->as_int(path + " n_inner") : 4 * c.d_model;
    const Value* act = v.find("activation_function");
    const std::string a = act ? act->as_string(path + " activation_function") : "gelu_new";
    STRATA_CHECK(a == "gelu_new" || a == "gelu_pytorch_tanh",
                 path << ": activation_function \"" << a << "\"; strata's GELU is the tanh form (gelu_new)");
    c.norm_eps = get_float_or(v, "layer_norm_epsilon", 1e-5f, path);
    c.dropout_residual = get_float_or(v, "resid_pdrop", 0.1f, path);
    c.dropout_embedding = get_float_or(v, "embd_pdrop", 0.1f, path);
    c.dropout_attention = get_float_or(v, "attn_pdrop", 0.1f, path);
    c.tied_embeddings = get_bool_or(v, "tie_word_embeddings", true, path);
    STRATA_CHECK(get_bool_or(v, "scale_attn_weights", true, path) &&
                     !get_bool_or(v, "scale_attn_by_inverse_layer_idx", false, path) &&
                     !get_bool_or(v, "reorder_and_upcast_attn", false, path),
                 path << ": only GPT-2's standard 1/sqrt(head_dim) attention scaling is supported");
    c.hf_model_type = type;
    if (layout_out) *layout_out = HfLayout::gpt2;
  } else if (llama_family) {
    c.vocab_size = get_int(v, "vocab_size", path);
    c.d_model = get_int(v, "hidden_size", path);
    c.d_mlp = get_int(v, "intermediate_size", path);
    c.n_layers = get_int(v, "num_hidden_layers", path);
    c.n_heads = get_int(v, "num_attention_heads", path);
    c.max_seq = get_int(v, "max_position_embeddings", path);
    const Value* kv = v.find("num_key_value_heads");
    const int64_t n_kv = kv && !kv->is_null() ? kv->as_int(path + " num_key_value_heads") : c.n_heads;
    STRATA_CHECK(n_kv >= 1 && c.n_heads % n_kv == 0,
                 path << ": num_key_value_heads " << n_kv << " must divide num_attention_heads " << c.n_heads);
    c.n_kv_heads = n_kv == c.n_heads ? 0 : n_kv;  // 0: multi-head, as strata's own configs say it
    const Value* hd = v.find("head_dim");
    if (hd && !hd->is_null()) {
      const int64_t d = hd->as_int(path + " head_dim");
      STRATA_CHECK(d >= 1, path << ": head_dim " << d << " must be at least 1");
      if (c.n_heads * d != c.d_model) c.d_head = d;  // else the default, as strata's own configs say it
    }
    c.sliding_window = read_sliding_window(v, type, path, c);
    const Value* act = v.find("hidden_act");
    STRATA_CHECK(!act || act->as_string(path) == "silu", path << ": hidden_act must be silu (SwiGLU)");
    c.norm = NormKind::rmsnorm;
    c.mlp = MlpKind::swiglu;
    c.positions = PositionKind::rope;
    c.norm_eps = get_float_or(v, "rms_norm_eps", 1e-6f, path);
    read_rope(v, path, c);
    if (type == "qwen2") {  // q/k/v projections carry biases, nothing else does
      c.qkv_bias = true;
      c.bias = false;
    } else {
      const bool attn_bias = get_bool_or(v, "attention_bias", false, path);
      STRATA_CHECK(attn_bias == get_bool_or(v, "mlp_bias", false, path),
                   path << ": attention_bias and mlp_bias must agree (strata has one bias switch; llama's "
                           "attention_bias also biases o_proj, so it is not strata's q/k/v-only qkv_bias)");
      c.bias = attn_bias;
    }
    const Value* tp = v.find("pretraining_tp");
    STRATA_CHECK(!tp || tp->is_null() || tp->as_int(path) == 1,
                 path << ": pretraining_tp " << tp->as_int(path) << " (a sliced linear layer) is not implemented; "
                         "only 1");
    c.tied_embeddings = get_bool_or(v, "tie_word_embeddings", false, path);
    c.dropout_attention = get_float_or(v, "attention_dropout", 0.0f, path);
    c.dropout_residual = c.dropout_embedding = 0.0f;
    c.hf_model_type = type;
    if (layout_out) *layout_out = HfLayout::llama;
  } else {
    STRATA_FAIL(path << ": model_type \"" << type << "\"; strata reads gpt2, llama, qwen2 and mistral");
  }
  c.validate();
  return c;
}

void import_hf(Model& model, const std::string& dir_or_file, HfLayout layout, Trainer* trainer) {
  const ModelConfig& c = model.config();
  STRATA_CHECK(trainer || model.params_resident(),
               "import_hf: the model's parameters live in its store (offloaded, ZeRO-3, or built Init::deferred); "
               "import with the model's Trainer: import_hf(model, path, layout, &trainer)");
  if (trainer) trainer->state();  // throws mid-accumulation, before anything is read
  STRATA_CHECK(hf_layout_for(c) == layout, "import_hf: the model is a " << hf_layout_name(hf_layout_for(c))
                                                                        << " model, the file is " << hf_layout_name(layout));
  const SafetensorsCheckpoint r(dir_or_file);  // one file, or a sharded index
  const std::string& path = r.path();
  // GPT-2 files come with ("transformer.wte.weight") or without ("wte.weight") the prefix.
  const std::string prefix = layout == HfLayout::gpt2 && !r.find("transformer.wte.weight") && r.find("wte.weight")
                                 ? ""
                                 : "transformer.";
  std::vector<Piece> table = pieces(c, layout, prefix);
  std::map<std::string, const ParamInfo*> info;
  for (const ParamInfo& p : model.parameters()) info[p.name] = &p;
  // Unit by unit (a parameter's pieces stay together, in order).
  std::stable_sort(table.begin(), table.end(),
                   [&](const Piece& a, const Piece& b) { return info.at(a.strata)->unit < info.at(b.strata)->unit; });
  std::set<std::string> used;
  for (const Piece& p : table) {
    const SafetensorsEntry* e = r.find(p.hf);
    STRATA_CHECK(e, path << ": missing tensor \"" << p.hf << "\" (strata's " << p.strata << ")");
    const std::vector<int64_t> want = piece_shape(p, info.at(p.strata)->shape);
    STRATA_CHECK(e->shape == want, path << ": tensor \"" << p.hf << "\" has the wrong shape for this model's config");
    used.insert(p.hf);
  }
  for (const SafetensorsEntry& e : r.tensors())
    STRATA_CHECK(used.count(e.name) || ignorable(e.name, c),
                 path << ": tensor \"" << e.name << "\" has no place in a strata " << hf_layout_name(layout)
                      << " model with this config");
  // One parameter at a time (resident), or one unit at a time through the trainer.
  std::vector<float> full, unit;
  int staged = -1;  // the unit `unit` holds
  auto flush = [&] {
    if (staged >= 0) trainer->start_from_parameters(staged, unit.data());
  };
  for (size_t i = 0; i < table.size();) {
    const ParamInfo& pi = *info.at(table[i].strata);
    full.assign(size_t(pi.numel()), 0.0f);
    for (; i < table.size() && table[i].strata == pi.name; ++i) {
      const std::vector<float> piece = r.read_f32(table[i].hf);
      io::require_finite(piece.data(), piece.size(), path + ": tensor \"" + table[i].hf + "\"");
      insert(full, cols_of(pi.shape), table[i], pi.shape[0], piece);
    }
    if (!trainer) {
      copy_from_host_f32(model.parameter(pi.name), full.data());
      continue;
    }
    if (pi.unit != staged) {
      flush();
      staged = pi.unit;
      unit.assign(size_t(model.unit_numel(pi.unit)), 0.0f);  // the padding stays 0
    }
    std::copy(full.begin(), full.end(), unit.begin() + pi.offset);
  }
  if (trainer) flush();
}

}  // namespace strata
