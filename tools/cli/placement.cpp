// Placement flags of `strata train` and their checks (see placement.h).
#include "placement.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

namespace cli {

double parse_size(const std::string& s) {
  if (s.empty()) return -1;
  char* end = nullptr;
  double x = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || !std::isfinite(x) || x < 0) return -1;
  const std::string unit(end);
  const double k = unit.empty() || unit == "B" ? 1 : unit == "K" || unit == "KiB" ? 1024.0 : unit == "M" || unit == "MiB" ? 1048576.0
                 : unit == "G" || unit == "GiB" ? 1073741824.0 : unit == "T" || unit == "TiB" ? 1099511627776.0 : -1;
  return k < 0 ? -1 : x * k;
}

size_t available_ram() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  while (f >> key >> kb) {
    if (key == "MemAvailable:") return kb * 1024;
    f.ignore(256, '\n');
  }
  return size_t(sysconf(_SC_PHYS_PAGES)) * size_t(sysconf(_SC_PAGESIZE));
}

size_t nvme_free(const std::vector<std::string>& paths, std::string& error) {
  size_t total = 0;
  for (const std::string& p : paths) {
    struct statvfs st;
    if (statvfs(p.c_str(), &st) != 0) {
      error = "--nvme: cannot stat " + p;
      return 0;
    }
    total += size_t(st.f_bavail) * size_t(st.f_frsize);
  }
  return total;
}

bool offloaded(const Placement& p) { return p.params != "device" || p.grads != "device" || p.optimizer != "device"; }

std::string check_placement(const Placement& p, const std::string& device) {
  const bool nvme = p.params == "nvme" || p.grads == "nvme" || p.optimizer == "nvme";
  if (nvme && p.nvme.empty()) return "a tier on nvme needs --nvme DIR (a directory on a local drive)";
  if (!nvme && !p.nvme.empty()) return "--nvme is given but no tier is on nvme (--params / --grads / --optimizer nvme)";
  if (offloaded(p) && parse_size(p.pinned) <= 0) return "--pinned: expected a size like 256M or 2G, got '" + p.pinned + "'";
  if (!offloaded(p)) return "";
  if (p.zero_stage == 0 && p.devices == 1) return "";  // one device's OffloadStore: any placement
  if (p.zero_stage < 3 && p.params != "device")
    return "--params " + p.params + " needs --zero-stage 3 (only stage 3 shards the working parameters)";
  if (p.zero_stage < 2 && p.grads != "device")
    return "--grads " + p.grads + " needs --zero-stage 2 or 3 (stages 0 and 1 do not shard gradients)";
  if (p.zero_stage < 1 && p.optimizer != "device") return "--optimizer " + p.optimizer + " needs --zero-stage 1 to 3";
  return "";
}

strata::offload::OffloadOptions offload_options(const Placement& p) {
  auto tier = [](const std::string& s) {
    return s == "nvme" ? strata::offload::Tier::nvme
           : s == "host" ? strata::offload::Tier::host : strata::offload::Tier::device;
  };
  strata::offload::OffloadOptions o;
  o.params = tier(p.params);
  o.grads = tier(p.grads);
  o.optimizer = tier(p.optimizer);
  o.nvme_paths = p.nvme;
  o.pinned_bytes = size_t(parse_size(p.pinned));
  return o;
}

std::string apply_plan(Placement& p, const strata::ModelConfig& config, strata::Precision precision, int64_t batch,
                       int64_t seq, int64_t accum) {
  strata::PlanRequest q;
  q.config = config;
  q.precision = precision;
  q.batch = batch;
  q.seq = seq;
  q.accum = accum;
  q.devices = int(p.devices);
  q.ram_bytes = available_ram();
  if (!p.ram.empty()) {
    const double r = parse_size(p.ram);
    if (r <= 0) throw strata::Error("--ram: expected a size like 24G, got '" + p.ram + "'");
    q.ram_bytes = size_t(r);
  }
  q.nvme_paths = p.nvme;
  std::string error;
  q.nvme_free = nvme_free(p.nvme, error);
  if (!error.empty()) throw strata::Error(error);
  const strata::Plan plan = strata::make_plan(q, strata::Rates{});
  if (plan.chosen < 0)
    throw strata::Error("--plan auto: no placement fits this run here:\n" + strata::format_plan(q, plan));
  const strata::PlanOption& c = plan.options[size_t(plan.chosen)];
  p.params = strata::tier_name(c.params);
  p.grads = strata::tier_name(c.grads);
  p.optimizer = strata::tier_name(c.optimizer);
  p.zero_stage = c.name == "nvme" || p.devices > 1 ? 3 : c.name == "host" ? 2 : 0;
  if (offloaded(p)) {
    const double mib = std::ceil(double(std::max<size_t>(c.pinned, size_t(16) << 20)) / 1048576.0);
    p.pinned = std::to_string(int64_t(mib)) + "M";
  } else {
    p.nvme.clear();
  }
  return "--plan auto: placement " + c.name + " (params " + p.params + ", grads " + p.grads + ", optimizer " +
         p.optimizer + "), as strata plan chooses for this model here" +
         (offloaded(p) || p.devices > 1 ? ": " + placement_flags(c, int(p.devices), p.nvme) : "");
}

std::string placement_flags(const strata::PlanOption& c, int devices, const std::vector<std::string>& nvme) {
  const int stage = c.name == "nvme" || devices > 1 ? 3 : c.name == "host" ? 2 : 0;
  std::ostringstream s;
  if (devices > 1) s << "--devices " << devices << " ";
  if (stage) s << "--zero-stage " << stage << " ";
  if (c.name != "device") {
    s << "--params " << strata::tier_name(c.params) << " --grads " << strata::tier_name(c.grads) << " --optimizer "
      << strata::tier_name(c.optimizer);
    const double mib = std::ceil(double(std::max<size_t>(c.pinned, size_t(16) << 20)) / 1048576.0);
    s << " --pinned " << int64_t(mib) << "M";
    if (c.name == "nvme")
      for (const std::string& d : nvme) s << " --nvme " << d;
  }
  std::string out = s.str();
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace cli
