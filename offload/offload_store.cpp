// OffloadStore: placement, paging and prefetch of units (the optimizer step streaming
// from the tiers is in offload_adam.cpp).
//
// Movement. acquire_params copies a unit's working params from its tier into a
// device buffer of the pool; from NVMe the bytes come through a pinned staging
// buffer, read ahead for the next `prefetch` units in the direction of the pass
// (forward order, reverse during backward), so reads overlap compute and acquire
// waits only for what has not arrived (the wait is the stall time). The copies into
// device buffers run ahead the same way (prefetch_to_device): acquiring unit u queues
// the copies of the next `prefetch` units behind its own into free buffers of the
// pool (prefetch + 2 of them, made at construction), so they run while u computes;
// they are dropped before the update and checkpoint transfers. The direction is
// guessed from the order of acquires; a guess must not read units the next pass will
// not reach soon, as staged units stay held until acquired (so the head reads backward
// only when acquired twice in a row, i.e. when a backward follows). Gradients are
// copied in (zeros right after zero_grad, no read), accumulated by the Model, and on
// release copied out; to NVMe the write is asynchronous (it overlaps the rest of
// backward: the staged bytes go to the NVMe write once the copy's event completes,
// hand_off_writeouts) and is awaited only when the unit is next read or the pinned
// pool runs short.
// Streams. Every copy between a tier and a device buffer is a Stream::copy on the
// device's host_to_device stream (reads) or device_to_host stream (write-outs), never
// on compute; Events order them: compute waits only for the copy into the buffer it is
// about to use (param_copied / grad_copied), a write-out waits for the compute that
// wrote the gradient, a copy into a pool buffer waits for the buffer's last use
// (Slot::idle), a staging buffer is freed only after the event of the copy that read
// it (retired_stages_), and the host reads or rewrites a home only after the copies
// of it landed (settle_movement, grad_written). On a CPU device these streams are
// worker threads, so the same code is exercised (and fuzzed) without a GPU; a CUDA
// device's host-tier ops run on host_ (docs/cuda.md).
//
// The step. Clipping (and the non-finite guard) needs the global norm before any
// weight changes, so no update starts before backward ends. With gradients on NVMe
// the norm costs no extra pass: the last micro-batch's write-out already has the
// final gradient in memory and sums its squares then (the same fixed-chunk order as
// ops::global_norm, so the norm is bitwise the resident one); on host or device it is
// ops::global_norm over the tier's buffers (memory bandwidth, 4 bytes per param).
// update() then hands the per-unit AdamW to a background thread and returns: the
// thread streams the units in FORWARD order (offload_adam.cpp) while the next step's
// forward starts at once, and acquire_params(u) waits only until unit u's new state
// has landed (that wait is stall). Read-ahead skips units still being updated.
// acquire_grads and grad_norm wait for the whole update (it reads the gradients and
// holds pinned tiles); zero_grad and take_stats do not (the update works from a
// snapshot of the gradient flags; the stall counters are the main thread's). So the
// update hides behind one forward pass: stall stays small when a forward outlasts
// the update's NVMe traffic (16 bytes read and 14 written per parameter).
// Why not start a unit's update in backward, once its gradient is final: the norm
// (clipping, and the guard that keeps non-finite gradients off the weights in every
// precision) is known only after the last unit, and backward finishes units in
// reverse, so unit 0, which the next forward needs first, would still be last.
// Measured (strata bench offload: 152M params, all on NVMe, bf16, recompute, 2
// cores, nothing else running): B 32 x T 128, steps of 7.1 s, stall 0.19 s (2.6%
// over steps 2-4) while the previous update streams 1.2 s behind the forward at 2.0
// GB/s read and 1.8 GB/s written at once (fio alone, same directory, 1 MiB qd 32:
// 1.7 and 1.9). At B 16 the forward is barely longer than the update: stall 9.8% of
// a 3.9 s step; shorter still (B 8 on a loaded machine) it was 12.4%. Before this, the
// whole update ran after backward and all of it was stall. The 2.52B all-NVMe run
// (train_offload, 256 tokens a step) is I/O-bound instead: steps 3-4 take 45 s, of
// which 27-28 s stall, as its ~95 GB of traffic a step moves at about 2.1 GB/s.
//
// A frozen base (LoRA) keeps only its working params here: no gradient or optimizer
// homes, no gradient pool, no NVMe space for them; the Model never asks for its
// gradients, and grad_norm/update/zero_grad have nothing to do (the Trainer steps the
// adapters, which stay resident).
#include "offload_state.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "cuda/runtime.h"
#include "lib/core/clock.h"
#include "ops.h"
#include "strata/error.h"
#include "tiered_adam.h"

namespace strata::offload {

namespace {
size_t round_block(size_t b) { return (b + kBlockBytes - 1) / kBlockBytes * kBlockBytes; }
}  // namespace

void HostHomeDeleter::operator()(char* p) const {
  if (registered) cuda_runtime::host_unregister(p);
  std::free(p);
}

const char* tier_name(Tier t) {
  switch (t) {
    case Tier::device: return "device";
    case Tier::host: return "host";
    case Tier::nvme: return "nvme";
  }
  return "?";
}

OffloadStore::OffloadStore(Model& model, const OffloadOptions& o, const AdamWOptions& adamw)
    : model_(&model), options_(o), adamw_(adamw), dtype_(precision_dtype(model.precision())),
      frozen_(model.base_frozen()) {
  STRATA_CHECK(model.store() == nullptr, "OffloadStore: the model already has a parameter store");
  if (model.device().kind() == DeviceKind::cuda) host_ = Device::cpu();
  const int N = model.num_units();
  const size_t ds = dtype_size(dtype_);
  int64_t largest = 0;
  int largest_unit = 0;
  for (int u = 0; u < N; ++u)
    if (model.unit_numel(u) > largest) {
      largest = model.unit_numel(u);
      largest_unit = u;
    }
  largest_ = largest;
  // Only what is stored counts: a frozen base has no gradients or optimizer state.
  const bool any_nvme = o.params == Tier::nvme || (!frozen_ && (o.grads == Tier::nvme || o.optimizer == Tier::nvme));
  const size_t staged = frozen_ ? ds : 4;  // bytes per element of the largest staged array
  open_offload_space(model.device(), o, any_nvme, "OffloadStore", "", size_t(largest) * staged,
                     "largest unit ('" + model.unit_name(largest_unit) + "', " + std::to_string(size_t(largest) * staged) +
                         (frozen_ ? " bytes as frozen parameters)" : " bytes as f32 gradients)"),
                     pinned_, nvme_);

  // Homes, then the NVMe plan reserved at once (its space checked before any write).
  units_.resize(size_t(N));
  std::vector<NvmeObjectSpec> plan;
  std::vector<Home*> planned;
  auto place = [&](Home& h, Tier t, size_t bytes, const std::string& name, const char* what) {
    h.tier = t;
    h.bytes = bytes;
    if (t == Tier::device) h.device = Buffer(model.device(), bytes, what);
    if (t == Tier::host) {
      h.host.reset(static_cast<char*>(std::aligned_alloc(kBlockBytes, round_block(bytes))));
      STRATA_CHECK(h.host, "OffloadStore: cannot allocate " << bytes << " bytes of host memory for " << what);
      if (model.device().kind() == DeviceKind::cuda)  // refused: the copies stay pageable, and correct
        h.host.get_deleter().registered = cuda_runtime::host_register(h.host.get(), round_block(bytes));
    }
    if (t == Tier::nvme) {
      plan.push_back({name, bytes});
      planned.push_back(&h);
    }
  };
  for (int u = 0; u < N; ++u) {
    UnitState& x = units_[size_t(u)];
    x.numel = model.unit_numel(u);
    x.param_copied = std::make_shared<Event>(model.device());
    x.grad_copied = std::make_shared<Event>(model.device());
    x.grad_written = std::make_unique<Event>(model.device());
    const size_t n = size_t(x.numel);
    const std::string un = model.unit_name(u);
    place(x.params, o.params, n * ds, un + ".params", "offloaded parameters");
    if (frozen_) continue;
    place(x.grads, o.grads, n * 4, un + ".grads", "offloaded gradients");
    place(x.master, o.optimizer, n * 4, un + ".master", "AdamW master weights");
    place(x.m, o.optimizer, n * 4, un + ".exp_avg", "AdamW exp_avg");
    place(x.v, o.optimizer, n * 4, un + ".exp_avg_sq", "AdamW exp_avg_sq");
  }
  if (!plan.empty()) {
    std::vector<uint32_t> ids;
    try {
      ids = nvme_->reserve(plan);
    } catch (const Error& e) {
      STRATA_FAIL("OffloadStore: cannot reserve the NVMe plan: " << e.what());
    }
    for (size_t i = 0; i < ids.size(); ++i) planned[i]->object = ids[i];
  }

  for (int u = 0; u < N; ++u) write_initial_state(u);
  construction_pinned_peak_ = pinned_ ? pinned_->stats().bytes_high_water : 0;
  model.set_store(this);
  model.release_resident_state(true, true);
  // The device pool's floor: two units at once (the head borrows the embedding).
  try {
    for (int i = 0; i < 2; ++i) {
      param_pool_.emplace_back(model.device(), size_t(largest) * ds, "offload parameter pool");
      if (!frozen_) grad_pool_.emplace_back(model.device(), size_t(largest) * 4, "offload gradient pool");
    }
  } catch (const Error& e) {
    model.set_store(nullptr);  // the model's state is gone with this store: rebuild it
    STRATA_FAIL("OffloadStore: the device budget cannot hold two units' parameter and gradient buffers ("
                << 2 * size_t(largest) * (ds + (frozen_ ? 0 : 4)) << " bytes) with the resident buffers released: " << e.what());
  }
  // Above the floor, one parameter buffer per unit copied ahead, while the arena holds
  // them (allocated here once: the pool never grows while training).
  for (; device_read_ahead_ < o.prefetch && o.params != Tier::device; ++device_read_ahead_) try {
      param_pool_.emplace_back(model.device(), size_t(largest) * ds, "offload parameter pool");
    } catch (const Error&) {
      break;
    }

  updated_.store(N);
  take_stats();
  pinned_peak_ = 0;  // memory() reports training's high water, not the initial writes'
}

// Initial state of unit u: working params, master = their f32 value, m = v = 0. A
// resident model's params are copied as they are; a deferred model's are drawn here
// (Model::init_unit_params) into the host home itself or a staging buffer, so
// construction holds one unit's staging beyond the host tiers, whatever the model.
void OffloadStore::write_initial_state(int u) {
  UnitState& x = units_[size_t(u)];
  std::vector<char> staged;  // the working params in host memory, unless they are the home's
  const char* working = nullptr;
  if (!model_->params_resident()) {
    if (x.params.tier != Tier::host) staged.resize(x.params.bytes);
    char* dst = x.params.tier == Tier::host ? x.params.host.get() : staged.data();
    model_->init_unit_params(u, dst);
    working = dst;
  } else if (host_) {  // a CUDA device's working params, copied out
    staged.resize(x.params.bytes);
    Stream& s = model_->device().stream();
    s.copy(staged.data(), model_->unit_params(u).data, x.params.bytes);
    s.synchronize();
    working = staged.data();
  } else {
    working = static_cast<const char*>(model_->unit_params(u).data);
  }
  if (working != x.params.data()) write_home(x.params, working);
  staging_peak_ = std::max(staging_peak_, staged.size());
  if (frozen_) return;
  // exact: f32 and bf16 widen without rounding
  std::vector<float> f32 = copy_to_host_f32(TensorView(const_cast<char*>(working), dtype_, {x.numel}, nullptr));
  staging_peak_ = std::max(staging_peak_, staged.size() + f32.size() * 4);
  staged = {};
  write_home(x.master, f32.data());
  std::fill(f32.begin(), f32.end(), 0.0f);
  write_home(x.m, f32.data());
  write_home(x.v, f32.data());
}

OffloadStore::~OffloadStore() {
  if (update_thread_.joinable()) update_thread_.join();  // it always ends: every I/O settles
  for (StreamRole r : {StreamRole::host_to_device, StreamRole::device_to_host}) try {
      model_->device().stream(r).synchronize();  // copies still reading pool and staging buffers
    } catch (const std::exception& e) {
      STRATA_CHECK_PRINT(false, std::string("OffloadStore: a copy failed: ") + e.what());
    }
  pending_writeouts_.clear();  // the streams are idle: their staging is never written to NVMe
  for (UnitState& x : units_) {
    if (x.param_read.valid()) x.param_read.wait();
    if (x.grad_write.valid()) x.grad_write.wait();
  }
  if (model_->store() == this) model_->set_store(nullptr);
}

void OffloadStore::wait(std::future<void>& f) {
  const double t0 = now_seconds();
  f.get();
  stall_ += now_seconds() - t0;
}

OffloadStore::Slot OffloadStore::take(std::vector<Slot>& pool, size_t bytes, const char* what) {
  if (!pool.empty()) {
    Slot b = std::move(pool.back());
    pool.pop_back();
    return b;
  }
  return Slot(model_->device(), bytes, what);
}

void OffloadStore::retire_param_stage(UnitState& x) {
  if (x.param_copied->query())
    x.param_stage.reset();
  else
    retired_stages_.push_back({std::move(x.param_stage), x.param_copied});
}

// Frees the staging whose copies have run (all of them, waiting, when `wait`).
void OffloadStore::reclaim_stages(bool wait) {
  std::erase_if(retired_stages_, [&](Retired& r) {
    if (wait) r.copied->synchronize();
    return r.copied->query();
  });
}

void OffloadStore::settle_movement() {
  Device& dev = model_->device();
  dev.stream(StreamRole::host_to_device).synchronize();
  dev.stream(StreamRole::device_to_host).synchronize();
  hand_off_writeouts(/*all=*/true);
  reclaim_stages(/*wait=*/true);
  harvest_copy_times(/*all=*/true);
}

void OffloadStore::timed_copy(Stream& s, void* dst, const void* src, size_t bytes) {
  if (timed_copies_.size() >= 64) harvest_copy_times(/*all=*/false);  // passes without an update
  CopyEvents e;
  if (spare_copy_events_.empty()) {
    e = {std::make_unique<Event>(model_->device()), std::make_unique<Event>(model_->device())};
  } else {
    e = std::move(spare_copy_events_.back());
    spare_copy_events_.pop_back();
  }
  e.first->record(s);
  s.copy(dst, src, bytes);
  e.second->record(s);
  timed_copies_.push_back(std::move(e));
}

void OffloadStore::harvest_copy_times(bool all) {
  std::erase_if(timed_copies_, [&](CopyEvents& e) {
    if (!all && !e.second->query()) return false;
    copy_seconds_ += double(e.first->elapsed_ms(*e.second)) / 1e3;
    spare_copy_events_.push_back(std::move(e));
    return true;
  });
}

// The compute stream waits for `copied` (on a CPU device it blocks: stall time).
void OffloadStore::compute_waits(Event& copied) {
  const double t0 = now_seconds();
  copied.wait(model_->device().stream());
  stall_ += now_seconds() - t0;
}

void OffloadStore::start_param_read(int u) {
  UnitState& x = units_[size_t(u)];
  x.param_stage = stage_bytes(x.params.bytes);
  x.param_read = nvme_->read(x.params.object, 0, x.param_stage.data(), x.params.bytes);
}

// Reads ahead units u + d, u + 2d, ... while pinned memory lasts; never waits.
void OffloadStore::prefetch_from(int u, int d) {
  if (options_.params != Tier::nvme) return;
  for (int k = 1; k <= options_.prefetch; ++k) {
    const int v = u + d * k;
    if (v < 0 || v >= model_->num_units()) return;
    UnitState& x = units_[size_t(v)];
    if (x.param_refs > 0 || x.param_stage || x.param_ahead) continue;
    if (updated_.load() <= v) return;  // its update is still being written
    const PinnedPoolStats st = pinned_->stats();
    const size_t grad_room = frozen_ ? 0 : round_block(size_t(x.numel) * 4);  // backward's gradient staging
    if (st.bytes_reserved - st.bytes_in_use < round_block(x.params.bytes) + grad_room) return;
    try {
      x.param_stage = pinned_->allocate(x.params.bytes);  // never waits: a guess may give up
    } catch (const Error&) {
      return;
    }
    x.param_read = nvme_->read(x.params.object, 0, x.param_stage.data(), x.params.bytes);
  }
}

// Reads ahead to the device: the h2d copies of units u + d, ... while a pool buffer
// beyond the one a borrowed unit may need is free. An NVMe unit is copied only once its
// read has landed (never waits); a unit whose update has not landed is skipped.
void OffloadStore::prefetch_to_device(int u, int d) {
  for (int k = 1; k <= device_read_ahead_; ++k) {
    const int v = u + d * k;
    if (v < 0 || v >= model_->num_units()) return;
    UnitState& x = units_[size_t(v)];
    if (x.params.tier == Tier::device || x.param_refs > 0 || x.param_ahead) continue;
    if (updated_.load() <= v) return;  // its update is still being written
    if (param_pool_.size() < 2) return;
    if (x.params.tier == Tier::nvme &&
        (!x.param_stage || x.param_read.wait_for(std::chrono::seconds(0)) != std::future_status::ready))
      continue;
    copy_params_in(x);
    x.param_ahead = true;
  }
}

void OffloadStore::copy_params_in(UnitState& x) {
  x.param_dev = take_param_slot();
  Stream& in = model_->device().stream(StreamRole::host_to_device);
  x.param_dev.idle->wait(in);  // the compute that last read this buffer
  if (x.params.tier == Tier::host) {
    timed_copy(in, x.param_dev.data(), x.params.data(), x.params.bytes);  // update() settles it before writing
  } else {
    wait(x.param_read);
    timed_copy(in, x.param_dev.data(), x.param_stage.data(), x.params.bytes);
  }
  x.param_copied->record(in);
  if (x.params.tier == Tier::nvme) retire_param_stage(x);
}

OffloadStore::Slot OffloadStore::take_param_slot() {
  if (param_pool_.empty())
    for (UnitState& y : units_)
      if (y.param_ahead) {  // a guess gives way; its next copy follows this one on the stream
        y.param_ahead = false;
        param_pool_.push_back(std::move(y.param_dev));
        break;
      }
  return take(param_pool_, size_t(largest_) * dtype_size(dtype_), "offload parameter pool");
}

void OffloadStore::drop_device_prefetch() {
  for (UnitState& x : units_)
    if (x.param_ahead) {
      x.param_ahead = false;
      param_pool_.push_back(std::move(x.param_dev));
    }
}

void* OffloadStore::acquire_params(int u) {
  wait_for_update(u);
  reclaim_stages(/*wait=*/false);
  hand_off_writeouts(/*all=*/false);
  UnitState& x = units_[size_t(u)];
  if (x.params.tier == Tier::device) return x.params.data();
  if (x.param_refs++ > 0) return x.param_dev.data();
  // The first unit acquired while no other is held is the one about to run (the
  // others are borrowed): it tells the pass's direction for read-ahead.
  bool primary = true;
  for (const UnitState& y : units_) primary = primary && (&y == &x || y.param_refs == 0);
  if (x.params.tier == Tier::nvme && !x.param_ahead && !x.param_stage) start_param_read(u);
  int direction = 0;
  if (primary) {
    const int last = last_acquired_, N = model_->num_units();
    last_acquired_ = u;
    // The head right after the head is a backward starting; the head after unit N - 2
    // ends a forward that may be all there is (evaluation), and reading backward from
    // there would hold those units through the whole next pass. Unit 0 after unit 1
    // ends a backward unless the base is frozen (its backward stops at unit 1).
    if ((u == N - 1 && last == N - 1) || u == last - 1)
      direction = -1;
    else if (u == last + 1 || (u == 0 && (last != 1 || frozen_)))
      direction = +1;
    if (direction) prefetch_from(u, direction);
  }
  if (x.param_ahead)
    x.param_ahead = false;  // its copy is already on the stream
  else
    copy_params_in(x);
  // Queued behind this unit's copy, the next units' copies run while it computes.
  if (direction) prefetch_to_device(u, direction);
  compute_waits(*x.param_copied);
  return x.param_dev.data();
}

void OffloadStore::release_params(int u) {
  UnitState& x = units_[size_t(u)];
  if (x.params.tier == Tier::device) return;
  STRATA_CHECK(x.param_refs > 0, "OffloadStore: release_params(" << u << ") without acquire");
  if (--x.param_refs > 0) return;
  x.param_dev.idle->record(model_->device().stream());  // the next copy into it waits for this unit's compute
  param_pool_.push_back(std::move(x.param_dev));
}

void* OffloadStore::acquire_grads(int u) {
  STRATA_CHECK(!frozen_, "OffloadStore: acquire_grads(" << u << ") on a frozen base, which has no gradients");
  finish_update();  // it reads the gradients and holds pinned tiles
  UnitState& x = units_[size_t(u)];
  Stream& s = model_->device().stream();
  Stream& in = model_->device().stream(StreamRole::host_to_device);
  if (x.grad_refs++ > 0) return x.grads.tier == Tier::device ? x.grads.data() : x.grad_dev.data();
  void* dst = x.grads.data();
  if (x.grads.tier != Tier::device) {
    x.grad_dev = take(grad_pool_, size_t(largest_) * 4, "offload gradient pool");
    dst = x.grad_dev.data();
  }
  if (std::find(pending_writeouts_.begin(), pending_writeouts_.end(), u) != pending_writeouts_.end())
    hand_off_writeouts(/*all=*/true);  // its own write-out must start before it is awaited
  if (x.grad_write.valid()) {  // its last write-out must land (and free its staging) first
    wait(x.grad_write);
    x.grad_stage.reset();
  }
  if (x.grad_zero) {
    if (x.grad_dev.idle) x.grad_dev.idle->wait(s);  // a write-out may still read the buffer
    ops::fill_zero(TensorView(dst, DType::f32, {x.numel}, &model_->device()), s);
  } else if (x.grads.tier != Tier::device) {
    x.grad_dev.idle->wait(in);
    if (x.grads.tier == Tier::host) {
      x.grad_written->wait(in);  // the last write-out of this home
      timed_copy(in, dst, x.grads.data(), x.grads.bytes);
    } else {
      if (!x.grad_stage) x.grad_stage = stage_bytes(x.grads.bytes);
      std::future<void> r = nvme_->read(x.grads.object, 0, x.grad_stage.data(), x.grads.bytes);
      wait(r);
      timed_copy(in, dst, x.grad_stage.data(), x.grads.bytes);
    }
    x.grad_copied->record(in);
    compute_waits(*x.grad_copied);
    if (x.grad_stage) retired_stages_.push_back({std::move(x.grad_stage), x.grad_copied});
  }
  return dst;
}

void OffloadStore::release_grads(int u) {
  STRATA_CHECK(!frozen_, "OffloadStore: release_grads(" << u << ") on a frozen base, which has no gradients");
  UnitState& x = units_[size_t(u)];
  STRATA_CHECK(x.grad_refs > 0, "OffloadStore: release_grads(" << u << ") without acquire");
  if (--x.grad_refs > 0) return;
  x.grad_zero = false;
  if (x.grads.tier == Tier::device) return;
  Stream& out = model_->device().stream(StreamRole::device_to_host);
  x.grad_dev.idle->record(model_->device().stream());  // the backward that wrote the gradient
  x.grad_dev.idle->wait(out);
  if (x.grads.tier == Tier::host) {
    timed_copy(out, x.grads.data(), x.grad_dev.data(), x.grads.bytes);
    x.grad_written->record(out);
  } else {
    x.grad_stage = stage_bytes(x.grads.bytes);
    timed_copy(out, x.grad_stage.data(), x.grad_dev.data(), x.grads.bytes);
    x.grad_written->record(out);
    x.writeout_final = final_micro_;
    pending_writeouts_.push_back(u);  // handed to NVMe once grad_written completes
  }
  x.grad_dev.idle->record(out);  // free once the write-out has read it
  grad_pool_.push_back(std::move(x.grad_dev));
  hand_off_writeouts(/*all=*/false);
}

// The host reads the staged gradient (its sum of squares, the NVMe write) only after
// the event of the d2h copy that filled it; until then the copy overlaps the backward
// of the units before it.
void OffloadStore::hand_off_writeouts(bool all) {
  std::erase_if(pending_writeouts_, [&](int u) {
    UnitState& x = units_[size_t(u)];
    if (all)
      x.grad_written->synchronize();
    else if (!x.grad_written->query())
      return false;
    if (x.writeout_final) x.sum_squares = sum_squares_f32(static_cast<const float*>(x.grad_stage.data()), x.numel);
    x.grad_write = nvme_->write(x.grads.object, 0, x.grad_stage.data(), x.grads.bytes);
    return true;
  });
}

// Pinned memory for one unit's staging: when the pool is short, gradient writes in
// flight are awaited first, then read-ahead is dropped (it is only a guess).
PinnedBuffer OffloadStore::stage_bytes(size_t bytes) {
  // Free bytes may be fragmented, so "fits" means the allocation succeeded.
  auto attempt = [&] {
    try {
      return pinned_->allocate(bytes);
    } catch (const Error&) {
      return PinnedBuffer();
    }
  };
  PinnedBuffer b = attempt();
  if (!b) hand_off_writeouts(/*all=*/true);  // so their staging can be awaited below
  if (!b && !retired_stages_.empty()) {
    reclaim_stages(/*wait=*/true);
    b = attempt();
  }
  for (size_t i = 0; !b && i < units_.size(); ++i) {
    UnitState& x = units_[i];
    if (!x.grad_write.valid()) continue;
    wait(x.grad_write);
    x.grad_stage.reset();
    b = attempt();
  }
  if (b) return b;
  drain(/*reads=*/true, /*writes=*/false);
  if ((b = attempt())) return b;
  finish_update();  // its tiles hold the rest
  return pinned_->allocate(bytes);  // throws, naming what is in use, if it still does not fit
}

void OffloadStore::drain(bool reads, bool writes) {
  if (reads) reclaim_stages(/*wait=*/true);
  if (writes) hand_off_writeouts(/*all=*/true);
  for (UnitState& x : units_) {
    if (reads && x.param_stage && x.param_refs == 0) {
      wait(x.param_read);
      x.param_stage.reset();
    }
    if (writes && x.grad_write.valid()) {
      wait(x.grad_write);
      x.grad_stage.reset();
    }
  }
}

OffloadStats OffloadStore::take_stats() {
  OffloadStats st;
  for (const UnitState& x : units_)
    for (const Home* h : {&x.params, &x.grads, &x.master, &x.m, &x.v}) {
      if (h->tier == Tier::device) st.device_bytes += h->bytes;
      if (h->tier == Tier::host) st.host_bytes += h->bytes;
      if (h->tier == Tier::nvme) st.nvme_bytes += h->bytes;
    }
  for (const UnitState& x : units_) st.device_bytes += x.param_dev.size() + x.grad_dev.size();
  for (const Slot& b : param_pool_) st.device_bytes += b.size();
  for (const Slot& b : grad_pool_) st.device_bytes += b.size();
  if (pinned_) {
    st.pinned_bytes = pinned_->stats().bytes_high_water;
    pinned_peak_ = std::max(pinned_peak_, st.pinned_bytes);
    pinned_->reset_high_water();
  }
  const double now = now_seconds();
  st.seconds = window_start_ > 0 ? now - window_start_ : 0;
  st.stall_seconds = stall_;
  st.norm_seconds = norm_seconds_;
  norm_seconds_ = 0;
  {
    std::lock_guard lock(update_mutex_);
    st.update_seconds = update_done_.update_seconds;
    st.update_read = update_done_.update_read;
    st.update_written = update_done_.update_written;
    update_done_ = OffloadStats();
  }
  harvest_copy_times(/*all=*/false);
  st.transfer_seconds = copy_seconds_;
  copy_seconds_ = 0;
  if (nvme_) {
    const NvmeStats io = nvme_->stats();
    st.nvme_read = io.bytes_read - io_at_window_.bytes_read;
    st.nvme_written = io.bytes_written - io_at_window_.bytes_written;
    st.transfer_seconds += io.busy_seconds - io_at_window_.busy_seconds;
    io_at_window_ = io;
  }
  window_start_ = now;
  stall_ = 0;
  return st;
}

}  // namespace strata::offload
