// The training-state store: where a model's working parameters, gradients and
// optimizer state live (resident, ZeRO-sharded, offloaded to host RAM or NVMe) and
// the operations the Trainer's step runs on them, one interface for every placement.
// A store holds parameter groups: the model's units (the base) and, with a Lora
// attached, its adapters; the step's norm, update and zeroing cover every group.
// Invariant: the weights change only in update(), and results never depend on which
// store holds them (the bitwise suites compare every placement).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace strata {

// Bytes this rank holds for training state (the ZeRO arithmetic: with Ψ parameters
// and N ranks, stage 0 holds 2Ψ + 4Ψ + 12Ψ in bf16, stage 3 about (2Ψ + 4Ψ + 12Ψ)/N
// plus one unit's gathered buffers).
struct ZeroMemory {
  size_t params = 0;     // working parameters (full replicas, shards, gather buffers)
  size_t grads = 0;      // f32 gradient accumulators and staging buffers
  size_t optimizer = 0;  // f32 master weights and moments
  // With offload (ZeRO-Infinity), where the shards above live: bytes on host RAM and
  // on NVMe (the rest is on the device), and the pinned staging pool's high water.
  size_t host_bytes = 0;
  size_t nvme_bytes = 0;
  size_t pinned_bytes = 0;
  // Offload: the host memory the store's construction held at its peak (host tiers,
  // one unit's staging, the pinned pool's high water then); see docs/offload.md.
  size_t host_construction_peak = 0;
};

// What a store measured since the last take_stats (the StepReport fields of the same
// names; 0 where the store does not move or communicate).
struct StoreStats {
  double comm_seconds = 0;       // reduce_gradients and the norm's all-reduce
  double comm_wait_seconds = 0;  // blocked on collectives
  double io_stall_seconds = 0;
  double transfer_seconds = 0;
  double overlap_fraction = 0;
  size_t pinned_bytes = 0;
  size_t nvme_bytes = 0;
  size_t host_setup_peak_bytes = 0;
  double nvme_read_gbps = 0, nvme_write_gbps = 0;
  double norm_seconds = 0;
  double update_seconds = 0;
  double update_read_gbps = 0, update_write_gbps = 0;
};

class AdamW;

class StateStore {
 public:
  virtual ~StateStore() = default;

  // The step, in the order the Trainer calls it. set_final_micro before each
  // backward says whether it is the step's last.
  virtual void set_final_micro(bool final) = 0;
  // Whether each micro-batch's gradient is already formed from zero by the store
  // (ZeRO stages 2, 3 stage it); otherwise the Trainer forms it so and adds it.
  virtual bool stages_micro_grads() const = 0;
  // After the micro-batches: make this rank's gradients final (a no-op on one rank).
  virtual void reduce_gradients() = 0;
  // Global L2 norm of every trained group's gradients (as scaled by the loss scale),
  // identical on every rank.
  virtual float grad_norm() = 0;
  // AdamW on every trained group; grad_scale = clip coefficient / loss scale.
  virtual void update(float lr, float grad_scale, int64_t t) = 0;
  virtual void zero_grad() = 0;
  virtual StoreStats take_stats() = 0;
  virtual ZeroMemory memory() const = 0;

  // Whether the base (the model's units) is trained: false for a frozen LoRA base,
  // which has no gradients and no optimizer state.
  virtual bool trains_base() const = 0;
  // Whether the base's gradients are the model's own resident buffers (per-unit
  // gradient statistics read them).
  virtual bool grads_in_model() const = 0;
  // The resident optimizer, or nullptr when the state lives elsewhere.
  virtual AdamW* resident_optimizer() { return nullptr; }

  // Checkpoints, unit by unit as full flat f32 arrays (the single-device layout).
  // Under ZeRO every rank calls unit_parameters and read_state together.
  virtual std::vector<float> unit_parameters(int u) = 0;
  virtual void read_state(int u, std::vector<float>& master, std::vector<float>& exp_avg,
                          std::vector<float>& exp_avg_sq) = 0;
  virtual void load_state(int u, const float* master, const float* exp_avg, const float* exp_avg_sq) = 0;
  virtual void load_params(int u, const float* values) = 0;
};

}  // namespace strata
