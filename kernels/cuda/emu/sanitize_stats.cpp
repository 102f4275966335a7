// The sanitizer's per-kernel statistics: launches, checked launches and the bank
// counters of the checked ones, by kernel function, named on demand; the check
// budget is decided here at each launch and findings are thrown at its end.
// Invariant: every read or write of the table holds g_stats_mutex (kernels launch
// from several host threads: ZeRO ranks).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

#include "sanitize.h"

namespace strata::emu {

namespace {

// Kernel statistics since reset_stats(), by kernel function.
struct KernelEntry {
  uint64_t launches = 0, checked_launches = 0;
  sanitize::Counters counters;
};
std::mutex g_stats_mutex;
std::map<const void*, KernelEntry> g_stats;

struct ReportAtExit {
  ~ReportAtExit() {
    const char* v = std::getenv("STRATA_EMU_REPORT");
    if (v && std::strcmp(v, "1") == 0) std::fprintf(stderr, "%s", conflict_report().c_str());
  }
} g_report_at_exit;

}  // namespace

void reset_stats() {
  std::lock_guard lock(g_stats_mutex);
  g_stats.clear();
}

namespace {
KernelStats stats_of(const KernelEntry& e) {
  KernelStats k;
  k.launches = e.launches;
  k.checked_launches = e.checked_launches;
  k.shared_accesses = e.counters.accesses;
  k.instructions = e.counters.instructions;
  k.worst_degree = e.counters.worst;
  k.mean_degree = e.counters.instructions ? double(e.counters.degree_sum) / double(e.counters.instructions) : 0.0;
  return k;
}

// By name, with the instances of a template together under the name without <...>.
std::map<std::string, KernelEntry> stats_by_name(bool also_templates) {
  std::map<const void*, KernelEntry> copy;
  {
    std::lock_guard lock(g_stats_mutex);
    copy = g_stats;
  }
  std::map<std::string, KernelEntry> out;
  for (const auto& [kernel, e] : copy) {
    const std::string name = sanitize::kernel_name(kernel);
    std::vector<std::string> keys{name};
    if (also_templates && name.find('<') != std::string::npos) keys.push_back(name.substr(0, name.find('<')));
    for (const std::string& key : keys) {
      KernelEntry& o = out[key];
      o.launches += e.launches;
      o.checked_launches += e.checked_launches;
      o.counters.add(e.counters);
    }
  }
  return out;
}
}  // namespace

KernelStats kernel_stats(const std::string& name) {
  const auto all = stats_by_name(true);
  const auto it = all.find(name);
  return it == all.end() ? KernelStats{} : stats_of(it->second);
}

std::string conflict_report() {
  std::ostringstream s;
  char line[512];
  std::snprintf(line, sizeof line, "%-56s %9s %8s %13s %11s %6s %6s\n", "kernel (emulated shared-memory banks)",
                "launches", "checked", "accesses", "warp instr", "worst", "mean");
  s << line;
  for (const auto& [name, e] : stats_by_name(false)) {
    const KernelStats k = stats_of(e);
    std::snprintf(line, sizeof line, "%-56s %9llu %8llu %13llu %11llu %6d %6.2f\n", name.c_str(),
                  (unsigned long long)k.launches, (unsigned long long)k.checked_launches,
                  (unsigned long long)k.shared_accesses,
                  (unsigned long long)k.instructions, k.worst_degree, k.mean_degree);
    s << line;
  }
  return s.str();
}

namespace sanitize {

void Counters::add(const Counters& o) {
  accesses += o.accesses, instructions += o.instructions, degree_sum += o.degree_sum, dropped += o.dropped;
  worst = std::max(worst, o.worst);
}

void launch_begin(Launch& launch) {
  std::lock_guard lock(g_stats_mutex);
  launch.checked = g_stats[launch.kernel].counters.accesses < check_budget();
}

void launch_end(Launch& launch) {
  {
    std::lock_guard lock(g_stats_mutex);
    KernelEntry& e = g_stats[launch.kernel];
    ++e.launches;
    e.checked_launches += launch.checked;
    e.counters.add(launch.counters);
  }
  if (launch.error_count == 0) return;
  std::ostringstream m;
  m << "strata CUDA emulator: " << launch.error_count << " shared-memory finding(s)";
  for (const std::string& e : launch.errors) m << "\n  " << e;
  if (launch.error_count > launch.errors.size()) m << "\n  ... and " << launch.error_count - launch.errors.size() << " more";
  throw SanitizerError(m.str());
}

}  // namespace sanitize

}  // namespace strata::emu
