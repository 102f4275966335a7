// What `strata train` does when --out already holds a checkpoint: every setting
// the checkpoint recorded is compared with the command line before anything loads.
// A change that keeps the run exact up to now (--steps; the files and cadence
// options, which the checkpoint does not constrain) is applied with a line saying
// what it changes; any other change (model, precision, batch, seq, data, lr and the
// other optimizer and schedule settings, seed) is refused naming the setting and
// both values, unless --allow-change names it.
// Invariant: a resume that prints no "changed" line continues the checkpointed run
// bit for bit.
#pragma once
#include <map>
#include <set>
#include <string>
#include <vector>

#include "strata/strata.h"

namespace cli {

// The run the command line describes.
struct RunSettings {
  strata::ModelConfig config;
  strata::Precision precision = strata::Precision::fp32;
  strata::TrainOptions train;  // schedule.total_steps is --steps
  int64_t batch = 0, seq = 0;
  std::string data;
  int64_t devices = 1;  // ranks: the global batch is devices x batch x accum
};

// The names --allow-change accepts.
const std::vector<std::string>& changeable_settings();

// The checkpoint's record of the run (TrainingProgress::extra) for the settings the
// Trainer does not store itself.
std::map<std::string, std::string> run_record(const RunSettings& run);

// Compares; returns the lines to print (applied and allowed changes) or throws
// strata::Error naming the first refused setting with both values.
std::vector<std::string> check_resume(const strata::CheckpointInfo& saved, const RunSettings& now,
                                      const std::set<std::string>& allowed);

}  // namespace cli
