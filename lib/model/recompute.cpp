// Recompute policies: which blocks keep what for backward.
#include <cstdlib>

#include "strata/error.h"
#include "strata/model.h"

namespace strata {

const char* recompute_name(Recompute r) {
  switch (r) {
    case Recompute::none: return "none";
    case Recompute::selective: return "selective";
    case Recompute::full: return "full";
  }
  return "?";
}

RecomputePolicy RecomputePolicy::none(int64_t n) { return {std::vector<Recompute>(size_t(n), Recompute::none)}; }
RecomputePolicy RecomputePolicy::selective(int64_t n) {
  return {std::vector<Recompute>(size_t(n), Recompute::selective)};
}
RecomputePolicy RecomputePolicy::every_block(int64_t n) { return {std::vector<Recompute>(size_t(n), Recompute::full)}; }

RecomputePolicy RecomputePolicy::every_kth(int64_t n, int64_t k) {
  STRATA_CHECK(k >= 1, "RecomputePolicy::every_kth: k = " << k << " must be at least 1");
  RecomputePolicy p = none(n);
  for (int64_t l = k - 1; l < n; l += k) p.blocks[size_t(l)] = Recompute::full;
  return p;
}

RecomputePolicy RecomputePolicy::parse(const std::string& spec, int64_t n) {
  if (spec == "none") return none(n);
  if (spec == "selective") return selective(n);
  if (spec == "full" || spec == "every-block") return every_block(n);
  if (spec.rfind("every-", 0) == 0) {
    char* end = nullptr;
    long k = std::strtol(spec.c_str() + 6, &end, 10);
    if (end && !*end && k >= 1) return every_kth(n, k);
  }
  STRATA_FAIL("unknown recompute policy '" << spec << "': use none, selective, full (every block) or every-K");
}

}  // namespace strata
