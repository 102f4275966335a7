// JSON forms of the configuration and state a checkpoint carries: ModelConfig,
// TrainOptions, TrainerState and TrainingProgress.
// Invariant: every field is written, and reading requires every field, so a config
// read back equals the one written (floats round-trip through 9 digits).
#include "state_json.h"

#include "strata/error.h"

namespace strata::io {

using json::Value;

namespace {
const char* norm_name(NormKind k) { return k == NormKind::layernorm ? "layernorm" : "rmsnorm"; }
const char* mlp_name(MlpKind k) { return k == MlpKind::gelu ? "gelu" : "swiglu"; }
const char* positions_name(PositionKind k) {
  return k == PositionKind::learned ? "learned" : k == PositionKind::rope ? "rope" : "sinusoidal";
}
const char* schedule_name(ScheduleKind k) {
  return k == ScheduleKind::constant ? "constant" : k == ScheduleKind::cosine ? "cosine" : "wsd";
}

float get_float(const Value& o, const char* key, const std::string& what) {
  return float(o.at(key, what).as_double(what + " " + key));
}
int64_t get_int(const Value& o, const char* key, const std::string& what) {
  return o.at(key, what).as_int(what + " " + key);
}
bool get_bool(const Value& o, const char* key, const std::string& what) {
  return o.at(key, what).as_bool(what + " " + key);
}
const std::string& get_string(const Value& o, const char* key, const std::string& what) {
  return o.at(key, what).as_string(what + " " + key);
}
}  // namespace

Value to_json(const ModelConfig& c) {
  Value v = Value::object();
  v.set("vocab_size", Value::integer(c.vocab_size));
  v.set("n_layers", Value::integer(c.n_layers));
  v.set("n_heads", Value::integer(c.n_heads));
  if (c.n_kv_heads != 0) v.set("n_kv_heads", Value::integer(c.n_kv_heads));  // absent: multi-head
  if (c.d_head != 0) v.set("d_head", Value::integer(c.d_head));              // absent: d_model / n_heads
  v.set("d_model", Value::integer(c.d_model));
  v.set("d_mlp", Value::integer(c.d_mlp));
  v.set("max_seq", Value::integer(c.max_seq));
  v.set("norm", Value::string(norm_name(c.norm)));
  v.set("mlp", Value::string(mlp_name(c.mlp)));
  v.set("positions", Value::string(positions_name(c.positions)));
  v.set("bias", Value::boolean(c.bias));
  if (c.qkv_bias) v.set("qkv_bias", Value::boolean(true));
  v.set("tied_embeddings", Value::boolean(c.tied_embeddings));
  v.set("causal", Value::boolean(c.causal));
  if (c.sliding_window != 0) v.set("sliding_window", Value::integer(c.sliding_window));  // absent: none
  if (!c.hf_model_type.empty()) v.set("hf_model_type", Value::string(c.hf_model_type));  // absent: from the shape
  v.set("dropout_embedding", Value::real(c.dropout_embedding));
  v.set("dropout_attention", Value::real(c.dropout_attention));
  v.set("dropout_residual", Value::real(c.dropout_residual));
  v.set("norm_eps", Value::real(c.norm_eps));
  v.set("rope_theta", Value::real(c.rope_theta));
  if (c.rope_scaling.kind != RopeScalingKind::none) {
    const RopeScaling& r = c.rope_scaling;
    Value sc = Value::object();
    sc.set("kind", Value::string(rope_scaling_name(r.kind)));
    sc.set("factor", Value::real(r.factor));
    sc.set("low_freq_factor", Value::real(r.low_freq_factor));
    sc.set("high_freq_factor", Value::real(r.high_freq_factor));
    sc.set("original_max_seq", Value::integer(r.original_max_seq));
    v.set("rope_scaling", sc);
  }
  return v;
}

ModelConfig model_config_from(const Value& v, const std::string& what) {
  ModelConfig c;
  c.vocab_size = get_int(v, "vocab_size", what);
  c.n_layers = get_int(v, "n_layers", what);
  c.n_heads = get_int(v, "n_heads", what);
  if (v.find("n_kv_heads")) c.n_kv_heads = get_int(v, "n_kv_heads", what);
  if (v.find("d_head")) c.d_head = get_int(v, "d_head", what);
  c.d_model = get_int(v, "d_model", what);
  c.d_mlp = get_int(v, "d_mlp", what);
  c.max_seq = get_int(v, "max_seq", what);
  const std::string& norm = get_string(v, "norm", what);
  STRATA_CHECK(norm == "layernorm" || norm == "rmsnorm", what << ": norm \"" << norm << "\" is not layernorm or rmsnorm");
  c.norm = norm == "layernorm" ? NormKind::layernorm : NormKind::rmsnorm;
  const std::string& mlp = get_string(v, "mlp", what);
  STRATA_CHECK(mlp == "gelu" || mlp == "swiglu", what << ": mlp \"" << mlp << "\" is not gelu or swiglu");
  c.mlp = mlp == "gelu" ? MlpKind::gelu : MlpKind::swiglu;
  const std::string& pos = get_string(v, "positions", what);
  STRATA_CHECK(pos == "learned" || pos == "rope" || pos == "sinusoidal",
               what << ": positions \"" << pos << "\" is not learned, rope or sinusoidal");
  c.positions = pos == "learned" ? PositionKind::learned : pos == "rope" ? PositionKind::rope : PositionKind::sinusoidal;
  c.bias = get_bool(v, "bias", what);
  if (v.find("qkv_bias")) c.qkv_bias = get_bool(v, "qkv_bias", what);
  c.tied_embeddings = get_bool(v, "tied_embeddings", what);
  c.causal = get_bool(v, "causal", what);
  if (v.find("sliding_window")) c.sliding_window = get_int(v, "sliding_window", what);
  if (v.find("hf_model_type")) c.hf_model_type = get_string(v, "hf_model_type", what);
  c.dropout_embedding = get_float(v, "dropout_embedding", what);
  c.dropout_attention = get_float(v, "dropout_attention", what);
  c.dropout_residual = get_float(v, "dropout_residual", what);
  c.norm_eps = get_float(v, "norm_eps", what);
  c.rope_theta = get_float(v, "rope_theta", what);
  if (const Value* sc = v.find("rope_scaling")) {  // absent in checkpoints without scaling
    const std::string& kind = get_string(*sc, "kind", what);
    STRATA_CHECK(kind == "linear" || kind == "llama3",
                 what << ": rope_scaling kind \"" << kind << "\" is not linear or llama3");
    c.rope_scaling.kind = kind == "linear" ? RopeScalingKind::linear : RopeScalingKind::llama3;
    c.rope_scaling.factor = get_float(*sc, "factor", what);
    c.rope_scaling.low_freq_factor = get_float(*sc, "low_freq_factor", what);
    c.rope_scaling.high_freq_factor = get_float(*sc, "high_freq_factor", what);
    c.rope_scaling.original_max_seq = get_int(*sc, "original_max_seq", what);
  }
  try {
    c.validate();
  } catch (const Error& e) {
    STRATA_FAIL(what << ": " << e.what());
  }
  return c;
}

Value to_json(const TrainOptions& o) {
  Value v = Value::object();
  v.set("grad_accum", Value::integer(o.grad_accum));
  Value a = Value::object();
  a.set("lr", Value::real(o.adamw.lr));
  a.set("beta1", Value::real(o.adamw.beta1));
  a.set("beta2", Value::real(o.adamw.beta2));
  a.set("eps", Value::real(o.adamw.eps));
  a.set("weight_decay", Value::real(o.adamw.weight_decay));
  a.set("decay_embeddings", Value::boolean(o.adamw.decay_embeddings));
  a.set("decay_norms_and_biases", Value::boolean(o.adamw.decay_norms_and_biases));
  v.set("adamw", std::move(a));
  Value s = Value::object();
  s.set("kind", Value::string(schedule_name(o.schedule.kind)));
  s.set("warmup_steps", Value::integer(o.schedule.warmup_steps));
  s.set("total_steps", Value::integer(o.schedule.total_steps));
  s.set("min_ratio", Value::real(o.schedule.min_ratio));
  s.set("decay_steps", Value::integer(o.schedule.decay_steps));
  v.set("schedule", std::move(s));
  v.set("clip_norm", Value::real(o.clip_norm));
  v.set("seed", Value::unsigned_integer(o.seed));
  v.set("loss_scale_init", Value::real(o.loss_scale_init));
  v.set("loss_scale_window", Value::integer(o.loss_scale_window));
  return v;
}

TrainOptions train_options_from(const Value& v, const std::string& what) {
  TrainOptions o;
  o.grad_accum = get_int(v, "grad_accum", what);
  const Value& a = v.at("adamw", what);
  const std::string aw = what + " adamw";
  o.adamw.lr = get_float(a, "lr", aw);
  o.adamw.beta1 = get_float(a, "beta1", aw);
  o.adamw.beta2 = get_float(a, "beta2", aw);
  o.adamw.eps = get_float(a, "eps", aw);
  o.adamw.weight_decay = get_float(a, "weight_decay", aw);
  o.adamw.decay_embeddings = get_bool(a, "decay_embeddings", aw);
  o.adamw.decay_norms_and_biases = get_bool(a, "decay_norms_and_biases", aw);
  const Value& s = v.at("schedule", what);
  const std::string sw = what + " schedule";
  o.schedule.kind = schedule_from_string(get_string(s, "kind", sw));
  o.schedule.warmup_steps = get_int(s, "warmup_steps", sw);
  o.schedule.total_steps = get_int(s, "total_steps", sw);
  o.schedule.min_ratio = get_float(s, "min_ratio", sw);
  o.schedule.decay_steps = get_int(s, "decay_steps", sw);
  o.clip_norm = get_float(v, "clip_norm", what);
  o.seed = v.at("seed", what).as_uint(what + " seed");
  o.loss_scale_init = get_float(v, "loss_scale_init", what);
  o.loss_scale_window = get_int(v, "loss_scale_window", what);
  return o;
}

Value to_json(const TrainerState& t, const TrainingProgress& p, const TrainOptions& o) {
  Value v = Value::object();
  v.set("step", Value::integer(t.step));
  v.set("loss_scale", Value::real(t.loss_scale));
  v.set("skipped_steps", Value::integer(t.skipped_steps));
  v.set("clean_steps", Value::integer(t.clean_steps));
  v.set("data_position", Value::integer(p.data_position));
  v.set("seed", Value::unsigned_integer(o.seed));
  v.set("options", to_json(o));
  Value extra = Value::object();
  for (const auto& [k, val] : p.extra) extra.set(k, Value::string(val));
  v.set("extra", std::move(extra));
  return v;
}

void trainer_state_from(const Value& v, const std::string& what, TrainerState& t, TrainingProgress& p,
                        TrainOptions& o) {
  t.step = get_int(v, "step", what);
  t.loss_scale = get_float(v, "loss_scale", what);
  t.skipped_steps = get_int(v, "skipped_steps", what);
  t.clean_steps = get_int(v, "clean_steps", what);
  p.data_position = get_int(v, "data_position", what);
  o = train_options_from(v.at("options", what), what + " options");
  p.extra.clear();
  for (const auto& [k, val] : v.at("extra", what).members(what + " extra"))
    p.extra[k] = val.as_string(what + " extra " + k);
}

}  // namespace strata::io

namespace strata {

std::string model_config_to_json(const ModelConfig& config) { return io::to_json(config).dump(2); }

ModelConfig model_config_from_json(const std::string& text, const std::string& what) {
  return io::model_config_from(json::parse(text, what), what);
}

}  // namespace strata
