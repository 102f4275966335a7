// The OffloadStore's optimizer step: the global norm (from the gradient tier, or
// summed during the last NVMe write-out), then ops::adamw_step (fused, vectorised,
// parallel, bias correction, decoupled decay, working-dtype rounding) over each
// unit's arrays where they live, on a background thread, units in forward order.
// The tiles stream through TilePipeline (tile_pipeline.h), shared with ZeRO.
// Invariant: a slot is reused only after its previous writes have landed; unit u is
// published (updated_ > u) only after every write of its last tile has landed, and
// the main thread touches no unit before it is published. One adamw_step call never
// spans two tensors: weight decay is per tensor, as in the resident AdamW.
#include <algorithm>
#include <cmath>
#include <vector>

#include "lib/core/clock.h"
#include "offload_state.h"
#include "util.h"
#include "ops.h"
#include "strata/error.h"

namespace strata::offload {

float OffloadStore::grad_norm() {
  const double t0 = now_seconds();
  const float norm = grad_norm_now();
  norm_seconds_ += now_seconds() - t0;
  return norm;
}

float OffloadStore::grad_norm_now() {
  if (frozen_) return 0;  // no base gradients
  finish_update();
  settle_movement();  // write-outs into host homes
  if (options_.grads == Tier::nvme) {
    double total = 0;
    for (const UnitState& x : units_) total += x.grad_zero ? 0.0 : x.sum_squares;
    return float(std::sqrt(total));
  }
  Device& dev = device_for(options_.grads);
  float norm = 0;
  Buffer out;  // a CUDA device's norm lands in its memory and is copied out
  if (dev.kind() == DeviceKind::cuda) out = Buffer(dev, 4, "offload gradient norm");
  ops::GlobalNormArgs g;
  g.out = TensorView(out.data() ? out.data() : &norm, DType::f32, {1}, &dev);
  for (UnitState& x : units_) {
    const TensorView grads(x.grads.data(), DType::f32, {x.numel}, &dev);
    if (x.grad_zero) ops::fill_zero(grads, dev.stream());
    g.inputs.push_back(grads);
  }
  ops::global_norm(g, dev.stream());
  if (out.data()) dev.stream().copy(&norm, out.data(), 4);
  host_waits(dev.stream());  // the host reads the norm
  return norm;
}

void OffloadStore::zero_grad() {
  for (UnitState& x : units_) {
    x.grad_zero = true;
    x.sum_squares = 0;
  }
}

void OffloadStore::update(float lr, float grad_scale, int64_t t) {
  if (frozen_) return;  // nothing to update; the Trainer steps the adapters
  finish_update();
  drain(/*reads=*/true, /*writes=*/true);  // read-ahead would be stale; the update reads the gradients
  drop_device_prefetch();                  // so would the copies ahead on the device
  settle_movement();  // copies out of host homes the update will overwrite, and into them
  host_waits(model_->device().stream());  // the update's host work reads what backward wrote
  const size_t ds = dtype_size(dtype_);
  auto job = std::make_unique<UpdateJob>();
  job->lr = lr;
  job->grad_scale = grad_scale;
  job->t = t;
  job->tile = options_.tile_elements;
  job->pipe = std::make_unique<TilePipeline>(*model_, model_->device(), device_for(options_.optimizer), nvme_.get());
  for (int u = 0; u < model_->num_units(); ++u) {
    const UnitState& x = units_[size_t(u)];
    TileSpan& span = job->spans.emplace_back();
    span.unit = u;
    span.count = x.numel;
    span.grad_zero = x.grad_zero;
    const Home* homes[kTileArrays] = {&x.master, &x.grads, &x.m, &x.v, &x.params};
    for (int a = 0; a < kTileArrays; ++a) span.arrays[a] = {true, homes[a]->tier, homes[a]->data(), homes[a]->object};
  }
  // pinned bytes per tile element, one slot; every unit's arrays share the tiers
  const size_t per_element = job->pipe->nvme_bytes_per_element(job->spans.front());
  if (per_element > 0) {
    // Leave the next forward one unit's parameter staging, so it need not wait for
    // the whole update to free pinned memory.
    const PinnedPoolStats st = pinned_->stats();
    const size_t free_bytes = st.bytes_reserved - st.bytes_in_use;
    const size_t keep = options_.params == Tier::nvme ? size_t(round_up(uint64_t(largest_) * ds, kBlockBytes)) : 0;
    auto fit = [&](size_t bytes) { return int64_t(bytes / (kTileSlots * per_element)) / 2048 * 2048; };
    int64_t tile = free_bytes > keep ? fit(free_bytes - keep) : 0;
    if (tile < 2048) tile = fit(free_bytes);
    STRATA_CHECK(tile >= 2048, "OffloadStore: the pinned pool has " << free_bytes
                                                                    << " bytes free, too few for three optimizer tiles of 2048 "
                                                                       "elements; raise pinned_bytes");
    job->tile = std::min(job->tile, tile);
  }
  // On a CUDA device, arrays whose home is not the memory AdamW runs in are staged.
  job->pipe->allocate(job->slots, job->spans.front(), job->tile, std::min(job->tile, largest_),
                      [&](size_t bytes) { return pinned_->allocate(bytes); }, "offload optimizer staging");
  {
    std::lock_guard lock(update_mutex_);
    update_running_ = true;
    updated_.store(0);
  }
  update_thread_ = std::thread([this, j = std::move(job)] { run_update(*j); });
}

void OffloadStore::run_update(UpdateJob& job) {
  const double t0 = now_seconds();
  std::string error;
  try {
    stream_update(job);
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "an unknown exception";
  }
  // Nothing may still read into or write from a slot when its pinned memory goes back.
  for (Tile& s : job.slots)
    for (auto& f : s.io)
      if (f.valid()) f.wait();
  for (Tile& s : job.slots)
    for (PinnedBuffer& b : s.buf) b.reset();
  {
    std::lock_guard lock(update_mutex_);
    update_done_.update_seconds += now_seconds() - t0;
    update_done_.update_read += job.pipe->bytes_read();
    update_done_.update_written += job.pipe->bytes_written();
  }
  publish_updated(model_->num_units(), error);
}

// The tile pipeline over every unit in forward order (the order the next forward
// asks for them); a unit is published once the writes of its last tile have landed.
void OffloadStore::stream_update(UpdateJob& job) {
  job.pipe->run(
      job.slots, job.spans, job.tile, adamw_, job.lr, job.grad_scale, job.t, [](std::future<void>& f) { f.get(); },
      [&](int unit) { publish_updated(unit + 1, ""); });
}

void OffloadStore::publish_updated(int units, const std::string& error) {
  std::lock_guard lock(update_mutex_);
  if (!error.empty() && update_error_.empty()) {
    const int u = updated_.load();  // units before it landed; it and later ones did not, or in part
    update_error_ = "OffloadStore: the optimizer step failed at or after unit " + std::to_string(u) + " ('" +
                    model_->unit_name(std::min(u, model_->num_units() - 1)) +
                    "'), leaving the weights partly updated: " + error +
                    "; this store cannot continue: check the NVMe drive and restart the run";
    update_failed_.store(true);
  }
  if (units >= model_->num_units()) update_running_ = false;
  updated_.store(std::max(updated_.load(), units));
  update_cv_.notify_all();
}

void OffloadStore::wait_for_update(int u) {
  // updated_ first: a failure raises update_failed_ before it sets updated_ to all.
  if (updated_.load() > u && !update_failed_.load()) return;
  const double t0 = now_seconds();
  std::unique_lock lock(update_mutex_);
  update_cv_.wait(lock, [&] { return updated_.load() > u || !update_error_.empty(); });
  stall_ += now_seconds() - t0;
  if (!update_error_.empty()) STRATA_FAIL(update_error_);
}

void OffloadStore::finish_update() {
  wait_for_update(model_->num_units() - 1);
  {
    const double t0 = now_seconds();
    std::unique_lock lock(update_mutex_);
    update_cv_.wait(lock, [&] { return !update_running_; });
    stall_ += now_seconds() - t0;
  }
  if (update_thread_.joinable()) update_thread_.join();
}

}  // namespace strata::offload
