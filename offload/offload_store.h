// OffloadStore: ZeRO-Infinity-style placement of one device's training state. Each
// unit's working params, f32 gradients and AdamW state (f32 master, m, v) live on the
// tier OffloadOptions names (device arena, host RAM, NVMe through the pinned pool);
// the device holds only a small pool of unit-sized buffers, borrowed per acquire.
// Invariant: results never depend on placement. Working params are copied bit for
// bit; a unit's gradient accumulates in one device buffer that is copied in from
// its tier and back out (never staged and summed apart), so every += happens in the
// same order as with resident buffers; AdamW is elementwise, so tiling it is exact.
// The optimizer step runs on a background thread after update() returns; a unit's
// bytes are touched by the main thread only after that unit's update has landed.
// Design of the step (norm before update, tiles, overlap): offload_store.cpp, top.
// Movement runs on the device's host_to_device and device_to_host streams, ordered by
// Events (offload_store.cpp, "Streams"); the host reads a home or reuses a staging
// buffer only after the event of the copy that used it.
#pragma once
#include <atomic>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "lib/model/store.h"
#include "strata/model.h"
#include "strata/offload.h"
#include "strata/optim.h"
#include "strata/state.h"

namespace strata::offload {

class OffloadStore final : public ParamStore {
 public:
  // Moves the model's state onto its tiers and releases the model's resident
  // buffers. Every bad placement (NVMe path missing, not writable, without O_DIRECT
  // or space; pinned budget below the largest unit) throws here, before training.
  OffloadStore(Model& model, const OffloadOptions& options, const AdamWOptions& adamw);
  ~OffloadStore() override;

  // ParamStore.
  void* acquire_params(int unit) override;
  void release_params(int unit) override;
  void* acquire_grads(int unit) override;
  void release_grads(int unit) override;

  // The Trainer says which backward is the last of the step: its gradient write-out
  // also yields each unit's sum of squares (the norm needs no second NVMe pass).
  void set_final_micro(bool final) { final_micro_ = final; }
  // Global L2 norm of the accumulated gradients, bitwise ops::global_norm's.
  float grad_norm();
  // Starts AdamW over every unit, in forward order, on a background thread and
  // returns: acquire_params(u) waits for unit u's new working params only (the wait
  // is stall time). Bad arguments and pinned shortage throw here; an error of the
  // background step is rethrown by every later acquire, grad_norm, update and
  // finish_update (the weights are then partly updated).
  void update(float lr, float grad_scale, int64_t t);
  // Waits until the background update has landed on every tier; rethrows its error.
  void finish_update();
  // Safe while an update runs: the update works from a snapshot of the flags.
  void zero_grad();

  // The window since the last call (bytes live, NVMe traffic, stalls); resets it.
  OffloadStats take_stats();
  // Bytes held per kind (params, grads, optimizer: every tier, the device pool
  // included) and per tier (host, NVMe), and the pinned pool's high water since
  // construction (the most of every take_stats window and the current one).
  ZeroMemory memory() const;
  // Host memory construction held at its peak, by strata's own accounting: the host
  // tiers, the most staging one unit's initial state took, and the pinned pool's high
  // water then (not the model's device buffers: on a CPU device, add its arena's).
  // Built from an Init::deferred model it depends on the largest unit, not the model.
  size_t construction_host_peak() const;

  // Checkpoints, between steps (offload_checkpoint.cpp): unit u's arrays as full flat
  // f32 arrays (the resident layout), read from and written to their tiers one array
  // at a time (NVMe through one pinned buffer of the array's size), after the
  // background update has landed; read-ahead is dropped. load_params rounds to the
  // precision; fp32: the master is the working parameters, so load_state writes both.
  // A frozen base has no optimizer state: read_state / load_state throw.
  std::vector<float> read_params(int unit);
  void read_state(int unit, std::vector<float>& master, std::vector<float>& exp_avg, std::vector<float>& exp_avg_sq);
  void load_params(int unit, const float* values);
  void load_state(int unit, const float* master, const float* exp_avg, const float* exp_avg_sq);
  const OffloadOptions& options() const { return options_; }
  // The model's base was frozen (LoRA) when the store was made: only working params
  // are stored; the gradient calls throw and grad_norm/update do nothing.
  bool frozen() const { return frozen_; }

 private:
  struct Home;
  struct Slot;
  struct UnitState;
  struct UpdateJob;
  void wait(std::future<void>& f);  // counts the stall; main thread only
  void wait_for_update(int unit);   // unit's update landed; counts the stall
  Slot take(std::vector<Slot>& pool, size_t bytes, const char* what);
  void retire_param_stage(UnitState& x);  // frees it once the copy that read it is done
  void reclaim_stages(bool wait);
  void settle_movement();
  void compute_waits(Event& copied);  // the host may touch every home: h2d and d2h copies have landed
  // s.copy between start and end events, its time counted in the window's transfer time.
  void timed_copy(Stream& s, void* dst, const void* src, size_t bytes);
  void harvest_copy_times(bool all);  // adds the finished (all: every) timed copies' time
  void prefetch_from(int unit, int direction);
  // Issues the h2d copies of units u + d .. u + k d into free pool buffers (never waits).
  void prefetch_to_device(int unit, int direction);
  void copy_params_in(UnitState& x);  // h2d copy into a pool buffer, param_copied after it
  Slot take_param_slot();              // a free pool buffer, else one a read-ahead copy holds
  void drop_device_prefetch();         // read-ahead copies go stale: their buffers back to the pool
  // Hands finished gradient write-outs (d2h into pinned staging) to the NVMe write;
  // all: waits for each one's event.
  void hand_off_writeouts(bool all);
  void start_param_read(int unit);
  PinnedBuffer stage_bytes(size_t bytes);
  void drain(bool reads, bool writes);
  // One home's bytes to / from host memory (NVMe through a pinned buffer); main thread,
  // no update running.
  void read_home(const Home& h, void* dst);
  void write_home(Home& h, const void* src);
  void write_initial_state(int unit);
  void settle_for_checkpoint(int unit, const char* what);
  float grad_norm_now();
  void run_update(UpdateJob& job);  // the background thread's body
  void stream_update(UpdateJob& job);
  void publish_updated(int units, const std::string& error);
  // Where ops over a tier's arrays run: the model's device for the device tier, else
  // the host (host_ on a CUDA device, whose host tiers its kernels cannot touch).
  Device& device_for(Tier tier) { return tier == Tier::device || !host_ ? model_->device() : *host_; }

  Model* model_;
  std::unique_ptr<Device> host_;  // a CPU device for host-tier ops; only when the model's is CUDA
  OffloadOptions options_;
  AdamWOptions adamw_;
  DType dtype_;
  bool frozen_;
  std::unique_ptr<PinnedPool> pinned_;
  std::unique_ptr<NvmeStore> nvme_;
  std::vector<UnitState> units_;
  std::vector<Slot> param_pool_, grad_pool_;  // free device buffers of the largest unit
  int device_read_ahead_ = 0;  // units copied ahead to the device: prefetch, or fewer if the arena is short
  std::vector<int> pending_writeouts_;  // units whose d2h copy into grad_stage may still run
  struct Retired;
  std::vector<Retired> retired_stages_;  // staging still read by an h2d copy
  int64_t largest_ = 0;  // elements of the largest unit
  int last_acquired_ = -1;
  bool final_micro_ = true;
  double stall_ = 0, norm_seconds_ = 0, window_start_ = 0;  // main thread only
  double copy_seconds_ = 0;  // timed copies' time in the window
  using CopyEvents = std::pair<std::unique_ptr<Event>, std::unique_ptr<Event>>;
  std::vector<CopyEvents> timed_copies_, spare_copy_events_;  // in flight; reusable
  size_t pinned_peak_ = 0;  // the highest take_stats window's pinned high water
  size_t staging_peak_ = 0, construction_pinned_peak_ = 0;  // construction_host_peak's parts
  NvmeStats io_at_window_;

  // The background update. updated_ counts the units, in forward order, whose new
  // state has landed (all of them when none runs); update_error_ is sticky.
  std::thread update_thread_;
  std::mutex update_mutex_;
  std::condition_variable update_cv_;
  std::atomic<int> updated_{0};
  std::atomic<bool> update_failed_{false};
  bool update_running_ = false;  // under update_mutex_
  std::string update_error_;     // under update_mutex_
  OffloadStats update_done_;     // under update_mutex_: finished updates' time and bytes
};

}  // namespace strata::offload
