// The OffloadStore's optimizer step: the global norm (from the gradient tier, or
// summed during the last NVMe write-out), then ops::adamw_step (fused, vectorised,
// parallel, bias correction, decoupled decay, working-dtype rounding) over each
// unit's arrays where they live, on a background thread, units in forward order.
// Arrays on NVMe stream through three pinned tile slots: tile i+1 is read while
// tile i is updated and tile i-1 is written.
// Invariant: a slot is reused only after its previous writes have landed; unit u is
// published (updated_ > u) only after every write of its last tile has landed, and
// the main thread touches no unit before it is published. One adamw_step call never
// spans two tensors: weight decay is per tensor, as in the resident AdamW.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "../lib/optim/adamw_args.h"
#include "offload_state.h"
#include "util.h"
#include "ops.h"
#include "strata/error.h"

namespace strata::offload {

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
constexpr int kMaster = 0, kGrad = 1, kM = 2, kV = 3, kWorking = 4, kArrays = 5;
constexpr int kSlots = kUpdateSlots;
}  // namespace

float OffloadStore::grad_norm() {
  const double t0 = now_seconds();
  const float norm = grad_norm_now();
  norm_seconds_ += now_seconds() - t0;
  return norm;
}

float OffloadStore::grad_norm_now() {
  if (frozen_) return 0;  // no base gradients
  finish_update();
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
  dev.stream().synchronize();
  return norm;
}

void OffloadStore::zero_grad() {
  for (UnitState& x : units_) {
    x.grad_zero = true;
    x.sum_squares = 0;
  }
}

void OffloadStore::read_tile(Tile& tile, UpdateJob& job) {
  UnitState& x = units_[size_t(tile.unit)];
  Home* homes[kArrays] = {&x.master, &x.grads, &x.m, &x.v, &x.params};
  const size_t ds = dtype_size(dtype_);
  Device& od = device_for(options_.optimizer);
  for (int a = 0; a < kArrays; ++a) {
    const size_t es = a == kWorking ? ds : 4;
    const size_t at = size_t(tile.begin) * es, bytes = size_t(tile.count) * es;
    Home& h = *homes[a];
    tile.home[a] = h.tier == Tier::nvme ? static_cast<char*>(tile.buf[a].data()) : h.data() + at;
    tile.ptr[a] = tile.device_stage[a].data()      ? static_cast<char*>(tile.device_stage[a].data())
                  : !tile.host_stage[a].empty() ? tile.host_stage[a].data()
                                                : tile.home[a];
    if (a == kGrad && job.grad_zero[size_t(tile.unit)]) {  // no gradient this step: the stored one is stale
      if (od.kind() == DeviceKind::cuda)
        ops::fill_zero(TensorView(tile.ptr[a], DType::f32, {tile.count}, &od), od.stream());
      else
        std::memset(tile.ptr[a], 0, bytes);
      continue;
    }
    if (h.tier == Tier::nvme && a == kWorking) std::memset(tile.home[a], 0, bytes);  // padding stays 0
    if (h.tier == Tier::nvme && a != kWorking) {
      tile.io.push_back(nvme_->read(h.object, at, tile.home[a], bytes));
      job.bytes_read += bytes;
    }
  }
}

void OffloadStore::write_tile(Tile& tile, UpdateJob& job) {
  UnitState& x = units_[size_t(tile.unit)];
  Home* homes[kArrays] = {&x.master, &x.grads, &x.m, &x.v, &x.params};
  const size_t ds = dtype_size(dtype_);
  for (int a : {kMaster, kM, kV, kWorking}) {
    const size_t es = a == kWorking ? ds : 4;
    Home& h = *homes[a];
    if (h.tier != Tier::nvme) continue;
    tile.io.push_back(nvme_->write(h.object, size_t(tile.begin) * es, tile.home[a], size_t(tile.count) * es));
    job.bytes_written += size_t(tile.count) * es;
  }
}

// On a CPU device the stream runs ops inline on the calling thread, so this runs on
// the update thread beside the main thread's compute.
// Copies a tile's staged arrays (see Tile) between their homes and their staging:
// in, every array read (a zeroed gradient stays as it is); out, those AdamW wrote.
void OffloadStore::stage_tile(Tile& tile, const UpdateJob& job, bool in) {
  Stream& s = model_->device().stream();  // the one that reaches both kinds of memory
  const size_t ds = dtype_size(dtype_);
  bool any = false;
  for (int a = 0; a < kArrays; ++a) {
    if (tile.ptr[a] == tile.home[a]) continue;
    if (in && a == kGrad && job.grad_zero[size_t(tile.unit)]) continue;
    if (!in && a == kGrad) continue;
    const size_t bytes = size_t(tile.count) * (a == kWorking ? ds : 4);
    if (in)
      s.copy(tile.ptr[a], tile.home[a], bytes);
    else
      s.copy(tile.home[a], tile.ptr[a], bytes);
    any = true;
  }
  if (any) s.synchronize();
}

void OffloadStore::update_tile(const Tile& tile, const UpdateJob& job) {
  Device& dev = device_for(options_.optimizer);
  const int64_t lo = tile.begin, hi = tile.begin + tile.count;
  const size_t ds = dtype_size(dtype_);
  for (const ParamInfo& p : model_->parameters()) {
    if (p.unit != tile.unit) continue;
    const int64_t begin = std::max(lo, p.offset), end = std::min(hi, p.offset + p.numel());
    if (begin >= end) continue;
    const int64_t at = begin - lo, n = end - begin;
    auto f32 = [&](int a) { return TensorView(tile.ptr[a] + size_t(at) * 4, DType::f32, {n}, &dev); };
    ops::AdamWArgs args = adamw_args(adamw_, &p, job.lr, job.grad_scale, job.t);
    args.master = f32(kMaster);
    args.grad = f32(kGrad);
    args.m = f32(kM);
    args.v = f32(kV);
    args.working = TensorView(tile.ptr[kWorking] + size_t(at) * ds, dtype_, {n}, &dev);
    ops::adamw_step(args, dev.stream());
  }
  dev.stream().synchronize();
}

void OffloadStore::update(float lr, float grad_scale, int64_t t) {
  if (frozen_) return;  // nothing to update; the Trainer steps the adapters
  finish_update();
  drain(/*reads=*/true, /*writes=*/true);  // read-ahead would be stale; the update reads the gradients
  model_->device().stream().synchronize();  // copies out of host homes the update will overwrite
  const size_t ds = dtype_size(dtype_);
  const Tier tiers[kArrays] = {options_.optimizer, options_.grads, options_.optimizer, options_.optimizer,
                               options_.params};
  size_t per_element = 0;  // pinned bytes per tile element, one slot
  for (int a = 0; a < kArrays; ++a)
    if (tiers[a] == Tier::nvme) per_element += a == kWorking ? ds : 4;
  auto job = std::make_unique<UpdateJob>();
  job->lr = lr;
  job->grad_scale = grad_scale;
  job->t = t;
  job->tile = options_.tile_elements;
  if (per_element > 0) {
    // Leave the next forward one unit's parameter staging, so it need not wait for
    // the whole update to free pinned memory.
    const PinnedPoolStats st = pinned_->stats();
    const size_t free_bytes = st.bytes_reserved - st.bytes_in_use;
    const size_t keep = options_.params == Tier::nvme ? size_t(round_up(uint64_t(largest_) * ds, kBlockBytes)) : 0;
    auto fit = [&](size_t bytes) { return int64_t(bytes / (kSlots * per_element)) / 2048 * 2048; };
    int64_t tile = free_bytes > keep ? fit(free_bytes - keep) : 0;
    if (tile < 2048) tile = fit(free_bytes);
    STRATA_CHECK(tile >= 2048, "OffloadStore: the pinned pool has " << free_bytes
                                                                    << " bytes free, too few for three optimizer tiles of 2048 "
                                                                       "elements; raise pinned_bytes");
    job->tile = std::min(job->tile, tile);
    for (Tile& s : job->slots)
      for (int a = 0; a < kArrays; ++a)
        if (tiers[a] == Tier::nvme) s.buf[a] = pinned_->allocate(size_t(job->tile) * (a == kWorking ? ds : 4));
  }
  // On a CUDA device, arrays whose home is not the memory AdamW runs in are staged.
  const bool adamw_on_device = device_for(options_.optimizer).kind() == DeviceKind::cuda;
  for (int a = 0; host_ && a < kArrays; ++a) {
    if ((tiers[a] == Tier::device) == adamw_on_device) continue;
    const size_t bytes = size_t(std::min(job->tile, largest_)) * (a == kWorking ? ds : 4);
    for (Tile& s : job->slots) {
      if (adamw_on_device)
        s.device_stage[a] = Buffer(model_->device(), bytes, "offload optimizer staging");
      else
        s.host_stage[a].resize(bytes);
    }
  }
  for (const UnitState& x : units_) job->grad_zero.push_back(x.grad_zero);
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
    update_done_.update_read += job.bytes_read;
    update_done_.update_written += job.bytes_written;
  }
  publish_updated(model_->num_units(), error);
}

// The three-slot pipeline over every tile of every unit, units in forward order
// (the order the next forward asks for them): reads of tile i+1, the update of
// tile i and the writes of tile i-1 overlap. A unit is published once the writes of
// its last tile have landed.
void OffloadStore::stream_update(UpdateJob& job) {
  std::vector<std::pair<int, int64_t>> jobs;  // (unit, first element)
  for (int u = 0; u < model_->num_units(); ++u)
    for (int64_t b = 0; b < units_[size_t(u)].numel; b += job.tile) jobs.emplace_back(u, b);
  auto settle = [&](Tile& s) {
    for (auto& f : s.io) f.get();
    s.io.clear();
    if (s.last_of_unit) publish_updated(s.unit + 1, "");
    s.last_of_unit = false;
  };
  auto issue = [&](size_t j) {
    Tile& s = job.slots[j % kSlots];
    settle(s);  // the writes of job j - kSlots
    s.unit = jobs[j].first;
    s.begin = jobs[j].second;
    s.count = std::min(job.tile, units_[size_t(s.unit)].numel - s.begin);
    read_tile(s, job);
  };
  if (!jobs.empty()) issue(0);
  for (size_t j = 0; j < jobs.size(); ++j) {
    Tile& s = job.slots[j % kSlots];
    for (auto& f : s.io) f.get();  // this tile's reads
    s.io.clear();
    if (j + 1 < jobs.size()) issue(j + 1);
    stage_tile(s, job, /*in=*/true);
    update_tile(s, job);
    stage_tile(s, job, /*in=*/false);
    write_tile(s, job);
    s.last_of_unit = j + 1 == jobs.size() || jobs[j + 1].first != s.unit;
  }
  for (size_t j = jobs.size(); j < jobs.size() + kSlots; ++j) settle(job.slots[j % kSlots]);  // in job order
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
