// `strata plan`: where training state would live (device, pinned host, host, NVMe),
// how many bytes each tier needs, and a predicted step time from probed rates —
// without building the model. Also the peak FLOP/s table MFU is measured against.
// Invariant: the byte arithmetic is the Trainer's own (2 B/param bf16 working
// weights, 4 B f32 gradients, 12 B f32 master + moments; fp32: 4 + 4 + 8), so a
// plan that says "fits" is what Trainer::memory() reports for the same model.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "strata/device.h"
#include "strata/model.h"

namespace strata {

// Peak FLOP/s of the device at the precision's dtype, the figure MFU is measured
// against: for a GPU the table below by its CUDA product name (0 when the name is
// not there: MFU unknown); for a CPU device the FMA-loop peak on num_threads()
// threads (f32 FMAs, or vdpbf16ps for bf16; docs/performance.md), an upper bound of
// any kernel's rate, measured once per process (0.1 to 1 s).
double peak_flops(Device& device, Precision precision);
// The accelerator table (bf16/fp16 dense, fp32 without TF32), 0 for unknown names.
double peak_flops_table(const std::string& product, Precision precision);

// Rates the step-time prediction uses (bytes/s, FLOP/s). 0 = not probed.
struct Rates {
  double flops = 0;             // the matmul op's best rate (probed), for predictions
  double peak_flops = 0;        // peak_flops(): what `flops` is a fraction of
  double host_to_device = 0;    // one direction; a CPU device is host memory: memcpy
  double host_memcpy = 0;       // parallel memcpy (optimizer passes are memory-bound)
  double nvme_read = 0, nvme_write = 0;
};
// Probes the peak, the matmul FLOP/s and memcpy on `device` and, for each NVMe
// path, O_DIRECT write and read of a scratch file (removed afterwards); nvme rates
// are the sum over paths.
Rates probe_rates(Device& device, Precision precision, const std::vector<std::string>& nvme_paths,
                  size_t nvme_probe_bytes = size_t(256) << 20);

enum class Tier : uint8_t { device, host, nvme };
const char* tier_name(Tier t);

struct PlanRequest {
  ModelConfig config;
  int64_t parameters = 0;  // > 0: plan for this many parameters (config only for activations)
  bool config_known = true;  // false: activations from `parameters` with a GPT-2-like shape
  Precision precision = Precision::bf16;
  Recompute recompute = Recompute::none;
  int64_t batch = 8, seq = 1024, accum = 1;
  int devices = 1;
  size_t device_bytes = 0;  // per device; a CPU device shares host RAM (set 0)
  bool device_is_host = true;
  size_t ram_bytes = 0;     // host RAM available to the run
  std::vector<std::string> nvme_paths;
  size_t nvme_free = 0;     // statvfs of the paths (summed)
  std::string placement;    // "" = choose; "device", "host" (ZeRO-Offload), "nvme" (ZeRO-Infinity)
};

struct PlanOption {
  std::string name;       // device | host | nvme
  Tier params, grads, optimizer;
  size_t tier_bytes[3] = {0, 0, 0};  // device, host (incl. pinned), nvme
  size_t pinned = 0;      // staging buffers: a few units' worth
  bool fits = false;
  std::string why;        // when it does not fit: which tier, how much over
  double compute_s = 0, transfer_s = 0, optimizer_s = 0, step_s = 0;
};

struct Plan {
  int64_t parameters = 0;
  size_t bytes_params = 0, bytes_grads = 0, bytes_optimizer = 0, bytes_activations = 0;
  size_t largest_unit = 0;  // parameters of the largest unit (the embedding, usually)
  std::vector<PlanOption> options;  // device, host, nvme in that order
  int chosen = -1;                  // index into options, -1 when nothing fits
  Rates rates;
};

Plan make_plan(const PlanRequest& request, const Rates& rates);
// The human-readable report: the 16 B/param table, bytes per tier, the choice and why.
std::string format_plan(const PlanRequest& request, const Plan& plan);

}  // namespace strata
