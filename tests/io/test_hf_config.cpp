// Hugging Face config.json: RoPE scaling in both of transformers' spellings (v4's
// rope_theta + rope_scaling, v5's rope_parameters), and refusal by name of every rope
// type and config key strata does not implement; head_dim and sliding-window keys.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "io_support.h"

using namespace strata;
using strata::test::TempDir;
using Catch::Contains;

namespace {

// A small Llama config.json with `extra` spliced in before the closing brace.
ModelConfig read_llama(const TempDir& dir, const std::string& extra) {
  std::ofstream(dir.file("config.json"))
      << R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 64,
             "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 128,
             "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": true,
             "bos_token_id": 1, "torch_dtype": "float32")"
      << extra << "}";
  return read_hf_config(dir.path());
}

}  // namespace

TEST_CASE("HF config: rope_parameters and rope_scaling give the same llama3 scaling", "[io][cpu]") {
  TempDir dir;
  const ModelConfig v5 = read_llama(dir, R"(, "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0,
      "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
  CHECK(v5.rope_theta == 500000.0f);
  CHECK(v5.rope_scaling.kind == RopeScalingKind::llama3);
  CHECK(v5.rope_scaling.factor == 32.0f);
  CHECK(v5.rope_scaling.low_freq_factor == 1.0f);
  CHECK(v5.rope_scaling.high_freq_factor == 4.0f);
  CHECK(v5.rope_scaling.original_max_seq == 8192);
  CHECK(v5.norm_eps == 1e-5f);
  const ModelConfig v4 = read_llama(dir, R"(, "rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3",
      "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
  CHECK(model_config_to_json(v4) == model_config_to_json(v5));
  const ModelConfig linear = read_llama(dir, R"(, "rope_scaling": {"type": "linear", "factor": 2.0})");
  CHECK(linear.rope_scaling.kind == RopeScalingKind::linear);
  CHECK(linear.rope_scaling.factor == 2.0f);
  const ModelConfig plain = read_llama(dir, R"(, "rope_parameters": {"rope_type": "default", "rope_theta": 1000.0})");
  CHECK(plain.rope_scaling.kind == RopeScalingKind::none);
  CHECK(plain.rope_theta == 1000.0f);
}

TEST_CASE("HF config: rope types, rope keys and config keys strata lacks are refused by name",
          "[io][cpu]") {
  TempDir dir;
  CHECK_THROWS_WITH(read_llama(dir, R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4.0})"),
                    Contains("rope_type \"yarn\" is not implemented"));
  CHECK_THROWS_WITH(read_llama(dir, R"(, "rope_parameters": {"rope_type": "dynamic", "factor": 4.0})"),
                    Contains("rope_type \"dynamic\""));
  CHECK_THROWS_WITH(read_llama(dir, R"(, "rope_scaling": {"rope_type": "linear", "factor": 2.0, "attention_factor": 1.5})"),
                    Contains("key \"attention_factor\""));
  CHECK_THROWS_WITH(read_llama(dir, R"(, "rope_scaling": {"rope_type": "llama3", "factor": 8.0})"),
                    Contains("low_freq_factor"));
  CHECK_THROWS_WITH(read_llama(dir, R"(, "rope_scaling": {"type": "linear", "factor": 2.0},
                                       "rope_parameters": {"rope_type": "linear", "factor": 2.0})"),
                    Contains("both rope_parameters and rope_scaling"));
  CHECK_THROWS_WITH(read_llama(dir, R"(, "sliding_window": 4096)"), Contains("key \"sliding_window\" is not implemented"));
  CHECK_THROWS_WITH(read_llama(dir, R"(, "pretraining_tp": 2)"), Contains("pretraining_tp 2"));
  CHECK_NOTHROW(read_llama(dir, R"(, "pretraining_tp": 1, "use_cache": true, "eos_token_id": [2, 3])"));
}

TEST_CASE("HF config: llama3 scaling survives export, import and checkpoint configs", "[io][cpu]") {
  TempDir dir;
  ModelConfig c = strata::test::tiny_config("llama");
  c.rope_scaling = {RopeScalingKind::llama3, 8.0f, 1.0f, 4.0f, 64};
  Model model(c, strata::test::cpu(), Precision::fp32, 3);
  export_hf(model, dir.path(), hf_layout_for(c), DType::f32);
  ModelConfig back = read_hf_config(dir.path());
  CHECK(back.rope_scaling == c.rope_scaling);
  CHECK(back.hf_model_type == "llama");
  back.hf_model_type.clear();  // c was not imported
  CHECK(model_config_to_json(back) == model_config_to_json(c));
  CHECK(model_config_to_json(c).find("\"rope_scaling\"") != std::string::npos);
  ModelConfig bad = c;
  bad.rope_scaling.high_freq_factor = 0.5f;
  CHECK_THROWS_WITH(bad.validate(), Contains("high_freq_factor > low_freq_factor"));
  ModelConfig learned = strata::test::tiny_config("gpt");
  learned.rope_scaling.kind = RopeScalingKind::linear;
  CHECK_THROWS_WITH(learned.validate(), Contains("needs RoPE positions"));
}

namespace {

// A small llama-family config.json of `type` with 4 query heads and `extra` spliced in.
ModelConfig read_family(const TempDir& dir, const std::string& type, const std::string& extra) {
  std::ofstream(dir.file("config.json"))
      << R"({"model_type": ")" << type << R"(", "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48,
             "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 128,
             "rms_norm_eps": 1e-05, "rope_theta": 50000.0, "hidden_act": "silu")"
      << extra << "}";
  return read_hf_config(dir.path());
}

}  // namespace

TEST_CASE("HF config: grouped-query llama and qwen2 and mistral configs read or are refused by key", "[io][cpu]") {
  TempDir dir;
  ModelConfig c = read_family(dir, "llama", R"(, "num_key_value_heads": 1, "head_dim": 8)");
  CHECK(c.n_kv_heads == 1);
  CHECK(c.kv_heads() == 1);
  CHECK(c.norm_eps == 1e-5f);
  CHECK(c.rope_theta == 50000.0f);
  CHECK(read_family(dir, "llama", R"(, "num_key_value_heads": 4)").n_kv_heads == 0);  // multi-head
  CHECK_THROWS_WITH(read_family(dir, "llama", R"(, "num_key_value_heads": 3)"),
                    Contains("num_key_value_heads 3 must divide num_attention_heads 4"));
  // head_dim other than hidden / heads (Qwen3, Gemma, some Mistral shapes) reads as d_head.
  ModelConfig wide = read_family(dir, "llama", R"(, "num_key_value_heads": 2, "head_dim": 16)");
  CHECK(wide.d_head == 16);
  CHECK(wide.qkv_width() == (4 + 2 * 2) * 16);
  CHECK(c.d_head == 0);  // 8 = 32 / 4: the default, said as 0
  CHECK_THROWS_WITH(read_family(dir, "llama", R"(, "head_dim": 0)"), Contains("head_dim 0 must be at least 1"));
  CHECK_THROWS_WITH(read_family(dir, "llama", R"(, "head_dim": 7)"), Contains("RoPE needs an even head dimension"));
  ModelConfig q = read_family(dir, "qwen2", R"(, "num_key_value_heads": 2, "sliding_window": 32,
                                              "use_sliding_window": false, "max_window_layers": 2)");
  CHECK(q.n_kv_heads == 2);
  CHECK(q.qkv_bias);
  CHECK_FALSE(q.bias);
  CHECK(q.sliding_window == 0);  // use_sliding_window false
  // qwen2 windows layers from max_window_layers on (default 28: none of these 2 layers).
  CHECK(read_family(dir, "qwen2", R"(, "sliding_window": 32, "use_sliding_window": true)").sliding_window == 0);
  CHECK(read_family(dir, "qwen2", R"(, "sliding_window": 32, "use_sliding_window": true, "max_window_layers": 0)")
            .sliding_window == 32);
  CHECK_THROWS_WITH(
      read_family(dir, "qwen2", R"(, "sliding_window": 32, "use_sliding_window": true, "max_window_layers": 1)"),
      Contains("max_window_layers 1") && Contains("every block or none"));
  CHECK(read_family(dir, "qwen2", R"(, "sliding_window": 32, "use_sliding_window": true,
                                     "layer_types": ["sliding_attention", "sliding_attention"])")
            .sliding_window == 32);
  CHECK_THROWS_WITH(read_family(dir, "qwen2", R"(, "sliding_window": 32, "use_sliding_window": true,
                                                 "layer_types": ["full_attention", "sliding_attention"])"),
                    Contains("layer_types mixes"));
  CHECK_THROWS_WITH(read_family(dir, "mistral", R"(, "sliding_window": 32, "layer_types": ["chunked", "chunked"])"),
                    Contains("layer_types entry \"chunked\""));
  // transformers 5 writes layer_types into qwen2/mistral configs: inert when every layer is full attention
  CHECK(read_family(dir, "qwen2", R"(, "layer_types": ["full_attention", "full_attention"])").sliding_window == 0);
  CHECK(read_family(dir, "mistral", R"(, "num_key_value_heads": 2, "sliding_window": null)").n_kv_heads == 2);
  CHECK(read_family(dir, "mistral", R"(, "sliding_window": 128)").sliding_window == 0);  // masks nothing at 128
  CHECK(read_family(dir, "mistral", R"(, "sliding_window": 64)").sliding_window == 64);
  CHECK_THROWS_WITH(read_family(dir, "mistral", R"(, "sliding_window": -3)"), Contains("sliding_window -3"));
  CHECK_THROWS_WITH(read_family(dir, "qwen3", ""), Contains("model_type \"qwen3\""));
}

TEST_CASE("checkpoint config JSON: d_head and sliding_window round-trip, absent when 0", "[io][cpu]") {
  ModelConfig c = strata::test::tiny_config("llama-gqa");
  CHECK(model_config_to_json(c).find("d_head") == std::string::npos);  // old checkpoints read unchanged
  CHECK(model_config_to_json(c).find("sliding_window") == std::string::npos);
  c.d_head = 10;
  c.sliding_window = 7;
  const std::string text = model_config_to_json(c);
  const ModelConfig back = model_config_from_json(text, "config.json");
  CHECK(back.d_head == 10);
  CHECK(back.sliding_window == 7);
  CHECK(model_config_to_json(back) == text);
  std::string bad = text;
  bad.replace(bad.find("\"sliding_window\": 7"), 19, "\"sliding_window\": -7");
  CHECK_THROWS_WITH(model_config_from_json(bad, "config.json"), Contains("config.json") && Contains("sliding_window -7"));
}

TEST_CASE("HF export writes the imported model_type: a windowless Mistral stays mistral", "[io][cpu]") {
  TempDir dir, out;
  // Mistral v0.3's shape (sliding_window null, GQA, untied head): llama's shape exactly.
  const ModelConfig c = read_family(dir, "mistral", R"(, "num_key_value_heads": 2, "sliding_window": null,
                                                      "tie_word_embeddings": false)");
  CHECK(c.hf_model_type == "mistral");
  CHECK(c.sliding_window == 0);
  Model model(c, strata::test::cpu(), Precision::fp32, 5);
  export_hf(model, out.path(), hf_layout_for(c), DType::f32);
  const std::string exported = strata::test::read_file(out.file("config.json"));
  CHECK(exported.find("\"model_type\": \"mistral\"") != std::string::npos);
  CHECK(exported.find("\"MistralForCausalLM\"") != std::string::npos);
  CHECK(exported.find("\"sliding_window\": null") != std::string::npos);
  CHECK(exported.find("llama") == std::string::npos);
  const ModelConfig back = read_hf_config(out.path());
  CHECK(back.hf_model_type == "mistral");
  CHECK(model_config_to_json(back) == model_config_to_json(c));
  // A strata checkpoint's config carries it, so a fine-tuned model exports as it came.
  const std::string text = model_config_to_json(c);
  CHECK(text.find("\"hf_model_type\": \"mistral\"") != std::string::npos);
  CHECK(model_config_from_json(text, "config.json").hf_model_type == "mistral");
  CHECK(model_config_to_json(strata::test::tiny_config("llama")).find("hf_model_type") == std::string::npos);
  // An imported llama stays llama; a model built here exports by its shape.
  CHECK(read_family(dir, "llama", "").hf_model_type == "llama");
  // A type that cannot express the shape is refused before anything is written.
  ModelConfig biased = c;
  biased.qkv_bias = true;
  Model biased_model(biased, strata::test::cpu(), Precision::fp32, 5);
  CHECK_THROWS_WITH(export_hf(biased_model, out.file("no"), HfLayout::llama, DType::f32),
                    Contains("model_type mistral has no biases"));
  CHECK_FALSE(std::filesystem::exists(out.file("no")));
  ModelConfig unknown = c;
  unknown.hf_model_type = "gemma";
  CHECK_THROWS_WITH(unknown.validate(), Contains("hf_model_type \"gemma\""));
}
