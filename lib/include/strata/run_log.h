// Run observability: a JSONL log per run (one header object with the full config,
// then one object per step) and the early warning of a diverging run.
// Invariant: every line of the file is one complete JSON object, written and
// flushed whole, so a log read during or after a crash parses up to its last step;
// every StepReport field appears in each step object under the same name. A write
// that fails (full disk) throws strata::Error.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "strata/model.h"
#include "strata/train.h"

namespace strata {

class RunLog {
 public:
  // Opens `path` for appending (a resumed run adds a new header and goes on) and
  // writes the header: model config, precision, train options, unit names, and the
  // `extra` key/value strings (command line, data, batch shape...). A statistic that
  // grows by more than growth_factor between two statistics steps is warned about.
  RunLog(const std::string& path, const Model& model, const TrainOptions& options,
         const std::vector<std::pair<std::string, std::string>>& extra = {}, double growth_factor = 10.0);
  ~RunLog();
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

  // Writes the step object; returns one warning line per unit statistic that grew
  // by more than the growth factor since the previous statistics step (also logged).
  std::vector<std::string> record(const StepReport& report);
  // A validation loss after `step`.
  void record_eval(int64_t step, float loss);
  const std::string& path() const { return path_; }

 private:
  void write_line(const std::string& line);
  std::string path_;
  std::FILE* file_ = nullptr;
  std::vector<std::string> unit_names_;
  std::vector<UnitStats> previous_;
  double growth_factor_;
};

// Cuts the log at `path` back to optimizer step `step`: drops the step and eval
// records after it and any line a crash cut short (what a run killed after its last
// checkpoint wrote), so that the resumed run's log reads as one run. Headers stay.
// Rewrites the file through a temporary and a rename; returns the lines removed
// (0, and the file untouched, when there are none or no file).
int64_t truncate_run_log(const std::string& path, int64_t step);

// "[########............] 40%  ETA 1m12s": a fixed-width progress bar for step
// `done` of `total` with the remaining time extrapolated from `elapsed` seconds.
std::string progress_bar(int64_t done, int64_t total, double elapsed_seconds, int width = 20);
// "1h02m", "3m05s", "42s".
std::string format_duration(double seconds);

}  // namespace strata
