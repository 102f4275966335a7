// ZeRO data parallelism over a dist::Comm: one Model replica per rank, each unit's
// flat buffers split into N equal shards (shard r = elements [r*s, (r+1)*s)).
//   stage 0  replicated; gradients all-reduced; every rank updates everything
//   stage 1  optimizer state sharded: gradients reduce-scattered after accumulation,
//            each rank updates its shard, parameters all-gathered
//   stage 2  gradients sharded too: each unit's gradient is reduce-scattered into the
//            rank's f32 shard as soon as its backward ends (one staging buffer)
//   stage 3  working parameters sharded too: gathered into a pooled buffer just
//            before a unit runs and dropped after; the update writes the shard
// With OffloadOptions every rank pages its own shards (ZeRO-Infinity): optimizer
// state on options.optimizer, the gradient shard (stage 2+) on options.grads, the
// working shard (stage 3) on options.params; NVMe files under <path>/rank<r>.
// Without, the same arrays sit on the device. On a CUDA device, ops on host or NVMe
// shards run on the tiers' host CPU device and bytes cross only by Stream::copy.
// Invariant: every rank takes the same decisions (skip, clip) from all-reduced
// scalars, so replicas never diverge.
#pragma once
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <vector>

#include "../model/store.h"
#include "offload/tiered_adam.h"
#include "strata/dist.h"
#include "strata/state.h"
#include "strata/train.h"

namespace strata {

class ZeroEngine final : public ParamStore {
 public:
  // offload: nullptr keeps every shard on the device.
  ZeroEngine(Model& model, dist::Comm& comm, int stage, const AdamWOptions& options,
             const offload::OffloadOptions* offload = nullptr);
  ~ZeroEngine() override;

  // After the micro-batches of a step: make this rank's gradient shard final.
  void reduce_gradients();
  // Global L2 norm of the (unscaled-by-clip) gradients, identical on every rank.
  float grad_norm();
  // AdamW on this rank's shards, then the parameters every rank needs are gathered.
  void update(float lr, float grad_scale, int64_t t);
  void zero_grad();
  ZeroMemory memory() const;
  // Whether the coming backward is the step's last: a gradient shard on NVMe then
  // yields its sum of squares as it is written (the norm needs no read-back).
  void set_final_micro(bool final) { final_micro_ = final; }
  double take_stall_seconds();  // waiting on NVMe since the last call
  size_t take_pinned_high_water();  // the pinned pool's high water since the last call
  double take_comm_wait_seconds();  // blocked on collectives since the last call

  // Checkpoints, unit by unit as full flat f32 arrays (the single-device layout):
  // gather_state all-gathers the shards (every rank calls it together); load_state and
  // load_params keep this rank's slice of full arrays every rank holds. fp32: master
  // is the working parameters.
  void gather_state(int u, std::vector<float>& master, std::vector<float>& exp_avg, std::vector<float>& exp_avg_sq);
  void load_state(int u, const float* master, const float* exp_avg, const float* exp_avg_sq);
  void load_params(int u, const float* values);

  // ParamStore (every stage: stages 0, 1 start reductions from it).
  void* acquire_params(int unit) override;
  void release_params(int unit) override;
  void* acquire_grads(int unit) override;
  void release_grads(int unit) override;

 private:
  struct Unit;
  TensorView shard_grads(int u);
  TensorView shard_params(int u);  // the working-dtype shard AdamW writes
  Buffer take(std::vector<Buffer>& pool, size_t bytes, const char* what);
  void init_array(offload::TierArray& a, const std::function<void(void*)>& fill);
  void start_gather(int u);
  void finish_gather(Unit& x);
  void prefetch_after(int u);
  void drop_prefetched();
  void start_reduce(int u);
  void read_shard(const offload::TierArray& a, void* dst);
  void write_shard(offload::TierArray& a, const void* src);
  void gather_f32(int u, const offload::TierArray& shard, std::vector<float>& full);
  void finish_reduce();
  bool grads_on_nvme() const;

  Model* model_;
  dist::Comm* comm_;
  int stage_;
  size_t construction_host_peak_ = 0;  // host tiers + one drawn unit (deferred) + pinned, at setup
  AdamWOptions options_;
  std::unique_ptr<offload::TieredArrays> tiers_;  // this rank's shards, on their tiers
  std::vector<Unit> units_;
  std::vector<Buffer> param_pool_, grad_pool_;  // free full-unit buffers (stages 3, 2+)
  // Reductions in flight, oldest first (finished in this order, so every shard adds
  // its micro-batches in the order they ran). Stages 2, 3 carry the staging buffer.
  struct Reduction {
    int unit;
    dist::Work work;
    Buffer staging;
    bool final_micro;
    // Stages 2, 3 with the gradient shard on NVMe: its stored sum, read while the
    // reduction runs (none on the step's first micro-batch, whose shard reads as 0).
    offload::PinnedBuffer acc;
    std::future<void> acc_read;
  };
  std::deque<Reduction> reducing_;
  int primary_ = -1;             // the unit whose backward is running
  int last_primary_ = -1;  // stage 3: the unit that ran last (read-ahead direction)
  bool final_micro_ = true;
  double stall_at_ = 0;
  double comm_wait_ = 0;
  Event gathered_free_;  // stage 3 with NVMe shards: compute has let go of a pooled buffer
};

// The ZeRO-sharded store (zero_state.cpp): a ZeroEngine over `comm` behind
// strata/state.h, offload: nullptr keeping every shard on the device. Refuses what
// the engine does not support (fp16 or LoRA with offload, a frozen base) first.
std::unique_ptr<StateStore> make_zero_store(Model& model, dist::Comm& comm, int stage, const AdamWOptions& adamw,
                                            const offload::OffloadOptions* offload);

}  // namespace strata
