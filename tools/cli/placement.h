// Where `strata train` puts the training state: one device or several (ZeRO stage
// S over CPU devices), each of params / grads / optimizer on device, host or NVMe,
// and `--plan auto`, which takes the placement `strata plan` chooses for the same
// model and batch. Also the size and RAM helpers `strata plan` shares.
// Invariant: every combination is checked here, before any model is built, with a
// message naming the flags; what passes is what the Trainer and checkpoints accept.
#pragma once
#include <string>
#include <vector>

#include "strata/offload.h"
#include "strata/plan.h"
#include "strata/strata.h"

namespace cli {

struct Placement {
  int64_t devices = 1;
  int64_t zero_stage = 0;
  std::string params = "device", grads = "device", optimizer = "device";
  std::vector<std::string> nvme;
  std::string pinned = "256M";
  std::string plan;  // "" or "auto"
  std::string ram;   // --plan auto's host RAM budget ("": MemAvailable now)
};

// "24G", "512M", "1.5T", "123456" (bytes) -> bytes; -1 when malformed.
double parse_size(const std::string& s);
// MemAvailable (or physical memory where /proc has none).
size_t available_ram();
// Free bytes of the filesystems of `paths` (each counted once per path).
size_t nvme_free(const std::vector<std::string>& paths, std::string& error);

bool offloaded(const Placement& p);
// "" when the placement is one the Trainer runs and checkpoints; else the message.
std::string check_placement(const Placement& p, const std::string& device);
// The offload options of an offloaded placement (pinned parsed by check_placement).
strata::offload::OffloadOptions offload_options(const Placement& p);

// --plan auto: the placement make_plan chooses for this run (tiers, and the ZeRO
// stage that shards them), written into p; returns the line that says so. Throws
// when nothing fits, with the plan's reasons.
std::string apply_plan(Placement& p, const strata::ModelConfig& config, strata::Precision precision, int64_t batch,
                       int64_t seq, int64_t accum);

// The `strata train` placement flags that run `option` ("--params nvme ...").
std::string placement_flags(const strata::PlanOption& option, int devices, const std::vector<std::string>& nvme);

}  // namespace cli
