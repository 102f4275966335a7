// Learning-rate schedules as multipliers of the peak rate.
#include <algorithm>
#include <cmath>

#include "strata/error.h"
#include "strata/optim.h"

namespace strata {

float LRSchedule::factor(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) return float(step + 1) / float(warmup_steps);
  switch (kind) {
    case ScheduleKind::constant: return 1.0f;
    case ScheduleKind::cosine: {
      const int64_t span = std::max<int64_t>(1, total_steps - warmup_steps);
      const double progress = std::min(1.0, double(step - warmup_steps) / double(span));
      return float(min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + std::cos(M_PI * progress)));
    }
    case ScheduleKind::wsd: {
      const int64_t decay_start = total_steps - decay_steps;
      if (decay_steps <= 0 || step < decay_start) return 1.0f;
      const double progress = std::min(1.0, double(step - decay_start + 1) / double(decay_steps));
      return float(1.0 - (1.0 - min_ratio) * progress);
    }
  }
  return 1.0f;
}

ScheduleKind schedule_from_string(const std::string& name) {
  if (name == "constant") return ScheduleKind::constant;
  if (name == "cosine") return ScheduleKind::cosine;
  if (name == "wsd") return ScheduleKind::wsd;
  STRATA_FAIL("unknown learning-rate schedule '" << name << "': use constant, cosine or wsd");
}

}  // namespace strata
