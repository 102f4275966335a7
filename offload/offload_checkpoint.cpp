// The OffloadStore's checkpoint transfers and memory accounting: a unit's arrays
// move between their tiers and host memory one array at a time, so a checkpoint of
// an offloaded run is streamed unit by unit and never holds more than one unit.
// Invariants: a transfer runs only between steps, after the background update has
// landed and read-ahead is dropped (a staged read would be stale after a load); an
// NVMe array moves through one pinned buffer of its size, freed before the next.
#include <cstring>

#include "offload_state.h"
#include "strata/error.h"

namespace strata::offload {

void OffloadStore::read_home(const Home& h, void* dst) {
  if (h.tier == Tier::device) {
    Stream& s = model_->device().stream();
    s.copy(dst, h.data(), h.bytes);
    s.synchronize();
  } else if (h.tier == Tier::host) {
    std::memcpy(dst, h.data(), h.bytes);
  } else {
    PinnedBuffer b = pinned_->allocate(h.bytes);
    std::future<void> done = nvme_->read(h.object, 0, b.data(), h.bytes);
    wait(done);
    std::memcpy(dst, b.data(), h.bytes);
  }
}

void OffloadStore::write_home(Home& h, const void* src) {
  if (h.tier == Tier::device) {
    Stream& s = model_->device().stream();
    s.copy(h.data(), src, h.bytes);
    s.synchronize();
  } else if (h.tier == Tier::host) {
    std::memcpy(h.data(), src, h.bytes);
  } else {
    PinnedBuffer b = pinned_->allocate(h.bytes);
    std::memcpy(b.data(), src, h.bytes);
    std::future<void> done = nvme_->write(h.object, 0, b.data(), h.bytes);
    wait(done);
  }
}

void OffloadStore::settle_for_checkpoint(int u, const char* what) {
  STRATA_CHECK(u >= 0 && u < model_->num_units(),
               "OffloadStore::" << what << ": unit " << u << " does not exist (the model has " << model_->num_units()
                                << ")");
  STRATA_CHECK(units_[size_t(u)].param_refs == 0 && units_[size_t(u)].grad_refs == 0,
               "OffloadStore::" << what << ": unit " << u << " is acquired; checkpoint between steps");
  finish_update();
  drain(/*reads=*/true, /*writes=*/true);
  drop_device_prefetch();
  settle_movement();
  model_->device().stream().synchronize();
}

std::vector<float> OffloadStore::read_params(int u) {
  settle_for_checkpoint(u, "read_params");
  const UnitState& x = units_[size_t(u)];
  std::vector<char> raw(x.params.bytes);
  read_home(x.params, raw.data());
  return copy_to_host_f32(TensorView(raw.data(), dtype_, {x.numel}, nullptr));
}

void OffloadStore::read_state(int u, std::vector<float>& master, std::vector<float>& exp_avg,
                              std::vector<float>& exp_avg_sq) {
  STRATA_CHECK(!frozen_, "OffloadStore::read_state: a frozen base has no optimizer state");
  settle_for_checkpoint(u, "read_state");
  const UnitState& x = units_[size_t(u)];
  for (auto [h, dst] : {std::pair{&x.master, &master}, {&x.m, &exp_avg}, {&x.v, &exp_avg_sq}}) {
    dst->resize(size_t(x.numel));
    read_home(*h, dst->data());
  }
}

void OffloadStore::load_params(int u, const float* values) {
  settle_for_checkpoint(u, "load_params");
  UnitState& x = units_[size_t(u)];
  std::vector<char> raw(x.params.bytes);
  copy_from_host_f32(TensorView(raw.data(), dtype_, {x.numel}, nullptr), values);  // rounded to the precision
  write_home(x.params, raw.data());
}

void OffloadStore::load_state(int u, const float* master, const float* exp_avg, const float* exp_avg_sq) {
  STRATA_CHECK(!frozen_, "OffloadStore::load_state: a frozen base has no optimizer state");
  settle_for_checkpoint(u, "load_state");
  UnitState& x = units_[size_t(u)];
  write_home(x.master, master);
  write_home(x.m, exp_avg);
  write_home(x.v, exp_avg_sq);
  if (dtype_ == DType::f32) write_home(x.params, master);  // fp32: the master is the working parameters
}

ZeroMemory OffloadStore::memory() const {
  ZeroMemory mem;
  for (const UnitState& x : units_) {
    mem.params += x.params.bytes + x.param_dev.size();
    mem.grads += x.grads.bytes + x.grad_dev.size();
    mem.optimizer += x.master.bytes + x.m.bytes + x.v.bytes;  // 0 for a frozen base
    for (const Home* h : {&x.params, &x.grads, &x.master, &x.m, &x.v}) {
      if (h->bytes == 0) continue;  // a frozen base's gradient and optimizer homes
      if (h->tier == Tier::host) mem.host_bytes += h->bytes;
      if (h->tier == Tier::nvme) mem.nvme_bytes += h->bytes;
    }
  }
  for (const Slot& b : param_pool_) mem.params += b.size();
  for (const Slot& b : grad_pool_) mem.grads += b.size();
  if (pinned_) mem.pinned_bytes = std::max(pinned_peak_, pinned_->stats().bytes_high_water);
  mem.host_construction_peak = construction_host_peak();
  return mem;
}

size_t OffloadStore::construction_host_peak() const {
  size_t host_tiers = 0;
  for (const UnitState& x : units_)
    for (const Home* h : {&x.params, &x.grads, &x.master, &x.m, &x.v})
      if (h->tier == Tier::host) host_tiers += h->bytes;
  return host_tiers + staging_peak_ + construction_pinned_peak_;
}

}  // namespace strata::offload
