// The step loop of `strata train`, on one device or on several ranks (one thread
// each, ZeRO over dist::Comm), with or without offload: load or initialise, train,
// validate, checkpoint, and stop cleanly on a signal.
// Invariant: every rank runs the same steps and takes part in every collective,
// saves included; the decision to stop after a step is taken once for all ranks (a
// barrier's completion), so no rank saves or stops alone. Rank 0 alone prints and logs.
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "placement.h"
#include "stop_signal.h"
#include <optional>

#include "model_source.h"
#include "strata/run_log.h"
#include "strata/strata.h"

namespace cli {

struct TrainJob {
  strata::ModelConfig config;
  strata::Precision precision = strata::Precision::fp32;
  strata::TrainOptions options;
  Placement placement;
  std::string device = "cpu";  // --device of a single-rank run
  std::shared_ptr<strata::TokenDataset> train_data, val_data;
  int64_t steps = 0, batch = 0, seq = 0, accum = 1, seed = 0;
  int64_t save_every = 0, keep = 0, eval_every = 0, eval_batches = 0;
  std::string out, resume;
  std::optional<ModelSource> init;  // --init-from: weights to start from, read unit by unit into the Trainer
  strata::DType weights_dtype = strata::DType::f32;
  std::map<std::string, std::string> record;  // TrainingProgress::extra of each save
  // Opens the run log (rank 0, once its model exists; the header names its units).
  std::function<std::unique_ptr<strata::RunLog>(const strata::Model&)> make_log;
  Output* output = nullptr;
};

// Runs the job; returns the exit status (0, or 128 + the stop signal).
int run_training(TrainJob& job);

}  // namespace cli
