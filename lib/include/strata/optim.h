// The optimizer: AdamW over a Model's units, its options, and learning-rate
// schedules. Below the state store and the Trainer, which both use it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "strata/model.h"

namespace strata {

struct AdamWOptions {
  float lr = 3e-4f;  // the peak rate; the schedule scales it per step
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
  // Weight decay reaches matrices only, unless these say otherwise.
  bool decay_embeddings = false;
  bool decay_norms_and_biases = false;
};

// Whether a parameter receives weight decay under these options: matrices do;
// embeddings, norms and biases only when asked.
bool adamw_decays(const AdamWOptions& options, const ParamInfo& p);

// AdamW over a Model's units: per unit, f32 master weights (the parameters
// themselves in fp32), first and second moments. Writes the new working
// parameters, rounded to the model's precision, in the same pass.
class AdamW {
 public:
  AdamW(Model& model, const AdamWOptions& options);
  // One update with learning rate lr; gradients are multiplied by grad_scale
  // (1 / loss scale times the clipping coefficient). t is the 1-based step.
  void step(float lr, float grad_scale, int64_t t);
  const AdamWOptions& options() const { return options_; }
  // Whether the named parameter receives weight decay.
  bool decays(const ParamInfo& p) const;
  TensorView master(int unit) const;
  TensorView exp_avg(int unit) const;
  TensorView exp_avg_sq(int unit) const;

 private:
  Model* model_;
  AdamWOptions options_;
  std::vector<Buffer> master_, m_, v_;
};

enum class ScheduleKind : uint8_t { constant, cosine, wsd };

struct LRSchedule {
  // Constant unless asked: cosine and wsd need the run's length in total_steps, and
  // a default length would decay a run that never set it to its floor at once.
  ScheduleKind kind = ScheduleKind::constant;
  int64_t warmup_steps = 0;   // linear from lr/warmup to lr (keep it below total_steps)
  int64_t total_steps = 1;    // cosine: decay ends here; wsd: the run's length
  float min_ratio = 0.1f;     // floor as a fraction of the peak
  int64_t decay_steps = 0;    // wsd: length of the final linear decay
  // Multiplier of the peak rate at 0-based optimizer step `step`.
  float factor(int64_t step) const;
};
ScheduleKind schedule_from_string(const std::string& name);

}  // namespace strata
