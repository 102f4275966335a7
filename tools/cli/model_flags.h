// The model-configuration options of `strata train` (also settable from --config):
// a preset, then one option per ModelConfig field, each overriding the preset's value
// only when given. Invariant: every ModelConfig field has an option here, so a config
// file can describe any model strata builds; unknown names are refused by cli::Args.
#pragma once
#include <cstdint>
#include <string>

#include "args.h"
#include "strata/model.h"

namespace cli {

struct ModelFlags {
  std::string preset = "demo";
  int64_t n_layers = 0, n_heads = 0, n_kv_heads = 0, d_head = 0, d_model = 0, d_mlp = 0, max_seq = 0, vocab_size = 0;
  int64_t sliding_window = -1, rope_original_max_seq = 0;
  std::string norm, mlp, positions, bias, qkv_bias, tied_embeddings, causal, rope_scaling;
  double dropout = -1, dropout_embedding = -1, norm_eps = 0, rope_theta = 0;
  double rope_factor = 0, rope_low_freq_factor = 0, rope_high_freq_factor = 0;
};

// Declares the options (their --help lines) on args.
void add_model_flags(Args& args, ModelFlags* flags);

// The preset with every given option applied; at least `seq` positions. Throws
// strata::Error naming the field when the result is inconsistent (ModelConfig::validate).
strata::ModelConfig model_config_from_flags(const ModelFlags& flags, int64_t seq);

// "" when the values one range per option cannot check hold, else the problem.
std::string check_model_flags(const ModelFlags& flags);

}  // namespace cli
