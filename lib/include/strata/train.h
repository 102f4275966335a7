// Training: the Trainer that runs accumulation, precision (fp32 / bf16 / fp16 with
// dynamic loss scaling), clipping and the non-finite guard around a Model; its
// optimizer and schedules are strata/optim.h.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "strata/model.h"
#include "strata/offload.h"
#include "strata/optim.h"
#include "strata/state.h"

namespace strata {

struct TrainOptions {
  int64_t grad_accum = 1;
  // ZeRO stage 0-3 when the Trainer is given a communicator (see lib/train/zero.h).
  int zero_stage = 0;
  AdamWOptions adamw;
  LRSchedule schedule;
  float clip_norm = 1.0f;  // 0 disables clipping
  uint64_t seed = 1234;    // dropout masks (init is seeded by the Model)
  // fp16 dynamic loss scaling.
  float loss_scale_init = 65536.0f;
  int64_t loss_scale_window = 2000;  // clean steps before the scale doubles
  // Observability: per-unit activation / gradient statistics every N steps (0: off),
  // and the peak FLOP/s that MFU is measured against (0: MFU not reported).
  int64_t stats_every = 0;
  double peak_flops = 0;
};

// One unit's health on a statistics step: RMS and max |x| of its output (the
// residual stream after it; 0 for the head, whose output is the loss) over the last
// micro-batch, and the RMS of its accumulated, unscaled gradient (0 where the
// gradients are not resident: ZeRO, offload, a frozen LoRA base).
struct UnitStats {
  int unit = 0;
  float act_rms = 0;
  float act_max_abs = 0;
  float grad_rms = 0;
};

struct StepReport {
  int64_t step = 0;  // optimizer steps taken after this one (1-based)
  float loss = 0;    // mean over the micro-batches
  float lr = 0;
  float grad_norm = 0;  // before clipping, unscaled
  bool skipped = false;  // non-finite gradients: the weights were not touched
  int64_t skipped_steps = 0;
  float loss_scale = 1;
  int64_t tokens = 0;
  double step_seconds = 0;
  double tokens_per_second = 0;
  // Where the step's time went. The parts need not sum to step_seconds (batch
  // loading between micro-batches is in none of them).
  double compute_seconds = 0;    // forward + backward (ZeRO-2/3 per-unit collectives included)
  double comm_seconds = 0;       // ZeRO gradient reduction and norm all-reduce after backward
  double comm_wait_seconds = 0;  // ZeRO: this rank blocked on collectives, in backward and after
                                 // (all of the communication while it does not overlap compute)
  double io_stall_seconds = 0;   // waiting for offload transfers (set by offload; 0 otherwise)
  // Single-device offload: the step's transfer time (NVMe busy time + tier copies on the
  // copy streams) and the share of it compute did not wait for, 1 - stall / transfer
  // (0 when nothing moved; not yet measured under ZeRO with offload).
  double transfer_seconds = 0;
  double overlap_fraction = 0;
  double optimizer_seconds = 0;  // norm, AdamW and zeroing the gradients
  double model_flops = 0;        // flops_per_token(T) x tokens (PaLM accounting, no recompute)
  double mfu = 0;                // model_flops / step_seconds / peak_flops; 0 when no peak is given
  // Bytes live per memory tier after the step. On a CPU device the device tier is
  // the arena and host is the rest of the process's resident memory.
  size_t device_bytes = 0;
  size_t pinned_bytes = 0;  // offload's pinned pool (0 without offload)
  size_t host_bytes = 0;
  size_t nvme_bytes = 0;    // offload's swap files (0 without offload)
  // Offload: host memory the store's construction held at its peak (host tiers, one
  // unit's staging, the pinned pool then): set by the largest unit, not the model.
  size_t host_setup_peak_bytes = 0;
  double nvme_read_gbps = 0, nvme_write_gbps = 0;  // offload's NVMe traffic this step
  double norm_seconds = 0;  // offload: the gradient-norm pass before the update (in optimizer_seconds)
  // offload: the optimizer steps that ran in the background and finished during this
  // step (usually the previous step's, behind this forward): wall time and the NVMe
  // GB/s of their own streaming.
  double update_seconds = 0;
  double update_read_gbps = 0, update_write_gbps = 0;
  std::vector<UnitStats> unit_stats;  // on steps that are multiples of stats_every; else empty
  // LoRA (frozen base): gradient and optimizer bytes the base does not hold.
  size_t frozen_bytes_saved = 0;
};

namespace dist {
class Comm;
}

// Where a Trainer's state lives. Without offload: on the model's device (the model's
// own buffers on one device, the ranks' shards under ZeRO). With offload
// (ZeRO-Infinity style) each array is on the tier it names: one device's units are
// paged through the store; under ZeRO every rank pages its own shards, NVMe files
// under <path>/rank<r>.
struct Placement {
  std::optional<offload::OffloadOptions> offload;
};

// The Trainer's own state between optimizer steps: what a checkpoint saves so that a
// resumed run continues bit for bit (dropout keys and the schedule depend on step).
struct TrainerState {
  int64_t step = 0;  // optimizer steps taken
  float loss_scale = 1.0f;
  int64_t skipped_steps = 0;
  int64_t clean_steps = 0;  // finite steps since the fp16 loss scale last changed
};

class Trainer {
 public:
  // The one construction path: the store `placement` and `comm` name (resident, ZeRO
  // stage options.zero_stage over comm, offloaded, or both), with a Lora attached
  // first as a parameter group of it. Every bad combination throws here.
  Trainer(Model& model, const TrainOptions& options, const Placement& placement, dist::Comm* comm = nullptr);
  // Shorthands for it. Resident on one device:
  Trainer(Model& model, const TrainOptions& options);
  // Data parallel over `comm` (one Trainer per rank, each with its own Model replica
  // built with the same seed), ZeRO stage options.zero_stage. Each rank feeds its own
  // micro-batches; the global batch is ranks x micro-batch x grad_accum.
  Trainer(Model& model, const TrainOptions& options, dist::Comm& comm);
  // One device with the state placed per `offload` (ZeRO-Infinity style): the model's
  // resident buffers are released and every unit is paged through the store. With a
  // Lora attached first, only the frozen base's params are stored (no gradients or
  // optimizer state anywhere) and the adapters train resident.
  Trainer(Model& model, const TrainOptions& options, const offload::OffloadOptions& offload);
  // Both (ZeRO-Infinity): every rank pages its own shards per `offload` — optimizer
  // state on offload.optimizer, the gradient shard (stage 2+) on offload.grads, the
  // working-parameter shard (stage 3) on offload.params; a tier the stage does not
  // shard must be device. NVMe files go to <path>/rank<r>; pinned_bytes is per rank.
  Trainer(Model& model, const TrainOptions& options, dist::Comm& comm, const offload::OffloadOptions& offload);
  ~Trainer();

  // Forward and backward of one micro-batch, gradients accumulating; returns its loss.
  float forward_backward(const Batch& batch);
  // The optimizer step over the gradients accumulated since the last one.
  StepReport step();
  // grad_accum micro-batches, then step().
  StepReport train_step(const std::vector<Batch>& micro_batches);
  // Mean loss of a batch without dropout or gradients.
  float evaluate(const Batch& batch);

  int64_t step_count() const { return step_; }
  float loss_scale() const { return loss_scale_; }
  int64_t skipped_steps() const { return skipped_; }
  const TrainOptions& options() const { return options_; }
  // The resident optimizer (throws for a data-parallel or offloaded Trainer, whose
  // state is in its store: optimizer_state reads it).
  AdamW& optimizer();
  const AdamW& optimizer() const;
  // Bytes held per kind and tier, for every store (docs/observability.md).
  ZeroMemory memory() const;
  // Unit u's working parameters as f32 (gathered from every rank's shard under
  // ZeRO-3, so every rank must call it together).
  std::vector<float> unit_parameters(int u) const;
  // Checkpoint access: unit u's optimizer state as full flat f32 arrays (master, Adam
  // m, v), whatever the sharding or tier. Under ZeRO every rank calls optimizer_state
  // together (it gathers the shards); the loads take full arrays and keep each rank's
  // shard. Offloaded, they move one unit between its tiers and host memory, after the
  // background optimizer step has landed.
  void optimizer_state(int u, std::vector<float>& master, std::vector<float>& exp_avg,
                       std::vector<float>& exp_avg_sq) const;
  void load_optimizer_state(int u, const float* master, const float* exp_avg, const float* exp_avg_sq);
  // Sets unit u's working parameters from a full flat f32 array (rounded to the
  // precision); the optimizer state is untouched (load_optimizer_state sets it).
  void load_unit_parameters(int u, const float* values);
  // Starts training from unit u's parameters `values` (a full flat f32 array): the
  // working parameters rounded to the precision, the f32 master equal to them, Adam
  // m and v zero (a frozen base: the parameters only) — bitwise what a Trainer made
  // over a model holding these weights starts from. How weights enter a store unit
  // by unit, whatever its tiers (import_hf, load_checkpoint with LoadScope::weights).
  // Between steps only.
  void start_from_parameters(int u, const float* values);
  // The communicator of a data-parallel Trainer; nullptr otherwise.
  dist::Comm* comm() const { return comm_; }
  // Between steps only (no micro-batch accumulated): throws otherwise.
  TrainerState state() const;
  void load_state(const TrainerState& state);

 private:
  Model* model_;
  TrainOptions options_;
  dist::Comm* comm_ = nullptr;
  std::unique_ptr<StateStore> store_;  // every parameter group: the model's units and its Lora's adapters
  int64_t step_ = 0;
  int64_t micro_ = 0;
  int64_t tokens_ = 0;
  double loss_sum_ = 0;
  int64_t skipped_ = 0;
  float loss_scale_ = 1.0f;
  int64_t clean_steps_ = 0;
  double t_start_ = -1;
  double compute_seconds_ = 0;
  int64_t seq_ = 0;
  std::vector<UnitStats> stats_;  // activation statistics of this step's last micro-batch
};

}  // namespace strata
