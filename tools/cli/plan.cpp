// `strata plan`: where a model's training state would live on this machine (or on
// the one described by the flags), the bytes per tier, the pinned memory it needs,
// and a predicted step time from rates probed here.
// Invariant: nothing is allocated at the model's size; only the probes touch memory
// (256 MiB) and the NVMe paths (a scratch file, removed).
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "args.h"
#include "commands.h"
#include "model_source.h"
#include "strata/strata.h"
#include "strata/plan.h"

namespace {

// "24G", "512M", "1.5T", "123456" (bytes) -> bytes; -1 when malformed.
double parse_size(const std::string& s) {
  if (s.empty()) return -1;
  char* end = nullptr;
  double x = std::strtod(s.c_str(), &end);
  if (end == s.c_str()) return -1;
  const std::string unit(end);
  const double k = unit.empty() || unit == "B" ? 1 : unit == "K" || unit == "KiB" ? 1024.0 : unit == "M" || unit == "MiB" ? 1048576.0
                 : unit == "G" || unit == "GiB" ? 1073741824.0 : unit == "T" || unit == "TiB" ? 1099511627776.0 : -1;
  return k < 0 ? -1 : x * k;
}

// "1.5B", "13B", "350M" parameters.
int64_t parse_count(const std::string& s) {
  char* end = nullptr;
  double x = std::strtod(s.c_str(), &end);
  const std::string u(end ? end : "");
  const double k = u.empty() ? 1 : u == "K" ? 1e3 : u == "M" ? 1e6 : u == "B" ? 1e9 : u == "T" ? 1e12 : -1;
  return end == s.c_str() || k < 0 ? -1 : int64_t(x * k);
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

}  // namespace

int plan_main(int argc, char** argv) {
  std::string preset, config_file, params, ram, device_mem, placement, precision = "bf16", recompute = "none";
  std::vector<std::string> nvme;
  std::string nvme_list;
  int64_t batch = 8, seq = 1024, accum = 1, devices = 1, threads = 0;
  bool no_probe = false;
  cli::Args args("strata plan (--preset NAME | --model-config FILE | --params N) [options]",
                 "Prints the placement strata would choose for training a model here (or checks --placement),\n"
                 "bytes per tier, pinned memory, and a step time predicted from probed rates. Says which tier\n"
                 "is short, and by how much, when something cannot fit.");
  args.option("preset", &preset, "NAME", "model preset (gpt2-xl is 1.5B)");
  args.option("model-config", &config_file, "FILE", "a model config.json (as in a checkpoint)");
  args.option("params", &params, "N", "a parameter count: 1.5B, 13B, 350M (a GPT-2-like shape is assumed)");
  args.choice("precision", &precision, {"fp32", "bf16", "fp16"}, "precision");
  args.choice("recompute", &recompute, {"none", "selective", "full"}, "activation recompute (activation memory)");
  args.option("batch", &batch, "B", "sequences per micro-batch", 1, 1 << 20);
  args.option("seq", &seq, "T", "sequence length", 1, 1 << 24);
  args.option("accum", &accum, "K", "micro-batches per step", 1, 1 << 20);
  args.option("devices", &devices, "N", "devices (ZeRO-3 shards the device tier across them)", 1, 1024);
  args.option("device-memory", &device_mem, "SIZE", "memory per accelerator, e.g. 80G (default: a CPU device, which "
                                                    "is host RAM)");
  args.option("ram", &ram, "SIZE", "host RAM for the run (default: MemAvailable now)");
  args.option("nvme", &nvme_list, "DIRS", "comma-separated NVMe directories for swap files");
  args.choice("placement", &placement, {"device", "host", "nvme"}, "check this placement instead of choosing");
  args.option("threads", &threads, "N", "worker threads for the FLOP/s probe (0: all cores)", 0, 1024);
  args.flag("no-probe", &no_probe, "skip the probes (no step-time prediction)");
  if (int rc = args.parse(argc, argv); rc >= 0) return rc;
  if (int(!preset.empty()) + int(!config_file.empty()) + int(!params.empty()) != 1)
    return args.usage_error("give exactly one of --preset, --model-config, --params");
  if (batch < 1 || seq < 1 || accum < 1 || devices < 1) return args.usage_error("--batch, --seq, --accum, --devices must be at least 1");

  try {
    if (threads > 0) strata::set_num_threads(int(threads));
    strata::PlanRequest q;
    if (!preset.empty()) q.config = strata::ModelConfig::preset(preset);
    if (!config_file.empty()) {
      std::ifstream f(config_file);
      if (!f) return args.usage_error("cannot read --model-config " + config_file);
      std::stringstream ss;
      ss << f.rdbuf();
      q.config = strata::model_config_from_json(ss.str(), config_file);
    }
    if (!params.empty()) {
      q.parameters = parse_count(params);
      if (q.parameters <= 0) return args.usage_error("--params: expected a count like 1.5B or 350M, got '" + params + "'");
      q.config_known = false;
    }
    if (seq > q.config.max_seq) q.config.max_seq = seq;
    q.precision = strata::precision_from_string(precision);
    if (recompute != "none" && recompute != "selective" && recompute != "full")
      return args.usage_error("--recompute: none, selective or full, got '" + recompute + "'");
    q.recompute = recompute == "none" ? strata::Recompute::none
                  : recompute == "selective" ? strata::Recompute::selective : strata::Recompute::full;
    q.batch = batch;
    q.seq = seq;
    q.accum = accum;
    q.devices = int(devices);
    q.placement = placement;
    if (!device_mem.empty()) {
      const double b = parse_size(device_mem);
      if (b <= 0) return args.usage_error("--device-memory: expected a size like 80G, got '" + device_mem + "'");
      q.device_bytes = size_t(b);
      q.device_is_host = false;
    }
    if (!ram.empty()) {
      const double b = parse_size(ram);
      if (b <= 0) return args.usage_error("--ram: expected a size like 24G, got '" + ram + "'");
      q.ram_bytes = size_t(b);
    } else {
      q.ram_bytes = available_ram();
    }
    std::stringstream list(nvme_list);
    for (std::string p; std::getline(list, p, ',');)
      if (!p.empty()) {
        struct statvfs st;
        if (statvfs(p.c_str(), &st) != 0) return args.usage_error("--nvme: cannot stat " + p);
        q.nvme_free += size_t(st.f_bavail) * size_t(st.f_frsize);
        q.nvme_paths.push_back(p);
      }
    strata::Rates rates;
    if (!no_probe) {
      auto device = strata::Device::cpu(0);
      rates = strata::probe_rates(*device, q.precision, q.nvme_paths);
    }
    const strata::Plan plan = strata::make_plan(q, rates);
    std::printf("model: %s\n", q.config_known ? q.config.describe().c_str() : ("~" + params + " parameters").c_str());
    std::fputs(strata::format_plan(q, plan).c_str(), stdout);
    return plan.chosen >= 0 && plan.options[size_t(plan.chosen)].fits ? 0 : 1;
  } catch (const std::exception& e) {
    return cli::fail("plan", e);
  }
}
