// JSON forms of ModelConfig, TrainOptions and the trainer state (state_json.cpp).
#pragma once
#include <string>

#include "json.h"
#include "strata/checkpoint.h"

namespace strata::io {

json::Value to_json(const ModelConfig& config);
ModelConfig model_config_from(const json::Value& v, const std::string& what);
json::Value to_json(const TrainOptions& options);
TrainOptions train_options_from(const json::Value& v, const std::string& what);
json::Value to_json(const TrainerState& state, const TrainingProgress& progress, const TrainOptions& options);
void trainer_state_from(const json::Value& v, const std::string& what, TrainerState& state,
                        TrainingProgress& progress, TrainOptions& options);

}  // namespace strata::io
