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
#include "placement.h"
#include "strata/strata.h"
#include "strata/plan.h"

namespace {

// "1.5B", "13B", "350M" parameters.
int64_t parse_count(const std::string& s) {
  char* end = nullptr;
  double x = std::strtod(s.c_str(), &end);
  const std::string u(end ? end : "");
  const double k = u.empty() ? 1 : u == "K" ? 1e3 : u == "M" ? 1e6 : u == "B" ? 1e9 : u == "T" ? 1e12 : -1;
  return end == s.c_str() || k < 0 ? -1 : int64_t(x * k);
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
      const double b = cli::parse_size(device_mem);
      if (b <= 0) return args.usage_error("--device-memory: expected a size like 80G, got '" + device_mem + "'");
      q.device_bytes = size_t(b);
      q.device_is_host = false;
    }
    if (!ram.empty()) {
      const double b = cli::parse_size(ram);
      if (b <= 0) return args.usage_error("--ram: expected a size like 24G, got '" + ram + "'");
      q.ram_bytes = size_t(b);
    } else {
      q.ram_bytes = cli::available_ram();
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
    if (plan.chosen >= 0 && plan.options[size_t(plan.chosen)].fits) {
      // The command that trains this model with the chosen placement (or --plan auto).
      // strata train names its model by a preset and size flags: a config file's
      // model has flags when it is a GPT-2-style preset with other sizes.
      std::string model_flags = preset.empty() ? "" : "--preset " + preset;
      if (!config_file.empty()) {
        strata::ModelConfig g = strata::ModelConfig::preset("gpt2-small");
        const strata::ModelConfig& c = q.config;
        g.n_layers = c.n_layers, g.n_heads = c.n_heads, g.d_model = c.d_model, g.d_mlp = c.d_mlp;
        g.vocab_size = c.vocab_size, g.max_seq = c.max_seq;
        if (strata::model_config_to_json(g) == strata::model_config_to_json(c))
          model_flags = "--preset gpt2-small --n-layers " + std::to_string(c.n_layers) + " --n-heads " +
                        std::to_string(c.n_heads) + " --d-model " + std::to_string(c.d_model) + " --d-mlp " +
                        std::to_string(c.d_mlp) + " --vocab-size " + std::to_string(c.vocab_size) + " --max-seq " +
                        std::to_string(c.max_seq);
        else
          std::printf("\n(%s is not a GPT-2-style model: strata train has no flags for it)\n", config_file.c_str());
      }
      if (!model_flags.empty()) {
        const std::string flags = cli::placement_flags(plan.options[size_t(plan.chosen)], int(devices), q.nvme_paths);
        std::printf("\nto train it so:\n  strata train --data GLOB --out DIR %s --precision %s --batch %lld --seq %lld "
                    "--accum %lld%s%s\n(or the same with --plan auto%s in place of the placement flags)\n",
                    model_flags.c_str(), precision.c_str(), (long long)batch, (long long)seq, (long long)accum,
                    flags.empty() ? "" : " ", flags.c_str(),
                    ((q.nvme_paths.empty() ? "" : " --nvme " + q.nvme_paths[0]) + (ram.empty() ? "" : " --ram " + ram)).c_str());
      }
    }
    return plan.chosen >= 0 && plan.options[size_t(plan.chosen)].fits ? 0 : 1;
  } catch (const std::exception& e) {
    return cli::fail("plan", e);
  }
}
