// The OffloadStore's optimizer step: the global norm (from the gradient tier, or
// summed during the last NVMe write-out), then ops::adamw_step (fused, vectorised, parallel,
// bias correction, decoupled decay, working-dtype rounding) over each unit's arrays
// where they live. Arrays on NVMe stream through three pinned tile slots: tile i+1
// is read while tile i is updated and tile i-1 is written.
// Invariant: a slot is reused only after its previous writes have landed, and the
// updated working params reach their tier before update() returns (the next
// forward reads them). One adamw_step call never spans two tensors: weight decay is
// per tensor, as in the resident AdamW.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "../lib/optim/adamw_args.h"
#include "offload_state.h"
#include "ops.h"
#include "strata/error.h"

namespace strata::offload {

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
constexpr int kMaster = 0, kGrad = 1, kM = 2, kV = 3, kWorking = 4, kArrays = 5;
constexpr int kSlots = 3;
}  // namespace

float OffloadStore::grad_norm() {
  const double t0 = now_seconds();
  const float norm = grad_norm_now();
  norm_seconds_ += now_seconds() - t0;
  return norm;
}

float OffloadStore::grad_norm_now() {
  if (frozen_) return 0;  // no base gradients
  Device& dev = model_->device();
  float norm = 0;
  if (options_.grads == Tier::nvme) {
    double total = 0;
    for (const UnitState& x : units_) total += x.grad_zero ? 0.0 : x.sum_squares;
    return float(std::sqrt(total));
  }
  std::vector<float> zeros;
  ops::GlobalNormArgs g;
  g.out = TensorView(&norm, DType::f32, {1}, &dev);
  for (UnitState& x : units_) {
    if (x.grad_zero) std::memset(x.grads.data(), 0, x.grads.bytes);
    g.inputs.push_back(TensorView(x.grads.data(), DType::f32, {x.numel}, &dev));
  }
  ops::global_norm(g, dev.stream());
  dev.stream().synchronize();
  return norm;
}

void OffloadStore::zero_grad() {
  for (UnitState& x : units_) {
    x.grad_zero = true;
    x.sum_squares = 0;
  }
}

void OffloadStore::read_tile(Tile& tile) {
  UnitState& x = units_[size_t(tile.unit)];
  Home* homes[kArrays] = {&x.master, &x.grads, &x.m, &x.v, &x.params};
  const size_t ds = dtype_size(dtype_);
  for (int a = 0; a < kArrays; ++a) {
    const size_t es = a == kWorking ? ds : 4;
    const size_t at = size_t(tile.begin) * es, bytes = size_t(tile.count) * es;
    Home& h = *homes[a];
    tile.ptr[a] = h.tier == Tier::nvme ? static_cast<char*>(tile.buf[a].data()) : h.data() + at;
    if (a == kGrad && x.grad_zero) {  // no gradient this step: the stored one is stale
      std::memset(tile.ptr[a], 0, bytes);
      continue;
    }
    if (h.tier == Tier::nvme && a == kWorking) std::memset(tile.ptr[a], 0, bytes);  // padding stays 0
    if (h.tier == Tier::nvme && a != kWorking) tile.io.push_back(nvme_->read(h.object, at, tile.ptr[a], bytes));
  }
}

void OffloadStore::write_tile(Tile& tile) {
  UnitState& x = units_[size_t(tile.unit)];
  Home* homes[kArrays] = {&x.master, &x.grads, &x.m, &x.v, &x.params};
  const size_t ds = dtype_size(dtype_);
  for (int a : {kMaster, kM, kV, kWorking}) {
    const size_t es = a == kWorking ? ds : 4;
    Home& h = *homes[a];
    if (h.tier == Tier::nvme)
      tile.io.push_back(nvme_->write(h.object, size_t(tile.begin) * es, tile.ptr[a], size_t(tile.count) * es));
  }
}

void OffloadStore::update_tile(const Tile& tile, float lr, float grad_scale, int64_t t) {
  Device& dev = model_->device();
  const int64_t lo = tile.begin, hi = tile.begin + tile.count;
  const size_t ds = dtype_size(dtype_);
  for (const ParamInfo& p : model_->parameters()) {
    if (p.unit != tile.unit) continue;
    const int64_t begin = std::max(lo, p.offset), end = std::min(hi, p.offset + p.numel());
    if (begin >= end) continue;
    const int64_t at = begin - lo, n = end - begin;
    auto f32 = [&](int a) { return TensorView(tile.ptr[a] + size_t(at) * 4, DType::f32, {n}, &dev); };
    ops::AdamWArgs args = adamw_args(adamw_, &p, lr, grad_scale, t);
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
  drain(/*reads=*/true, /*writes=*/true);  // read-ahead would be stale after the update
  const size_t ds = dtype_size(dtype_);
  const Tier tiers[kArrays] = {options_.optimizer, options_.grads, options_.optimizer, options_.optimizer,
                               options_.params};
  size_t per_element = 0;  // pinned bytes per tile element, one slot
  for (int a = 0; a < kArrays; ++a)
    if (tiers[a] == Tier::nvme) per_element += a == kWorking ? ds : 4;
  int64_t tile = options_.tile_elements;
  if (per_element > 0) {
    const PinnedPoolStats st = pinned_->stats();
    const int64_t fit = int64_t((st.bytes_reserved - st.bytes_in_use) / (kSlots * per_element)) / 2048 * 2048;
    STRATA_CHECK(fit >= 2048, "OffloadStore: the pinned pool has " << st.bytes_reserved - st.bytes_in_use
                                                                   << " bytes free, too few for three optimizer tiles of 2048 "
                                                                      "elements; raise pinned_bytes");
    tile = std::min(tile, fit);
  }
  Tile slots[kSlots];
  for (Tile& s : slots)
    for (int a = 0; a < kArrays; ++a)
      if (tiers[a] == Tier::nvme) s.buf[a] = pinned_->allocate(size_t(tile) * (a == kWorking ? ds : 4));

  std::vector<std::pair<int, int64_t>> jobs;  // (unit, first element)
  for (int u = 0; u < model_->num_units(); ++u)
    for (int64_t b = 0; b < units_[size_t(u)].numel; b += tile) jobs.emplace_back(u, b);
  auto settle = [&](Tile& s) {
    for (auto& f : s.io) wait(f);
    s.io.clear();
  };
  auto issue = [&](size_t j) {
    Tile& s = slots[j % kSlots];
    settle(s);  // the writes of job j - kSlots
    s.unit = jobs[j].first;
    s.begin = jobs[j].second;
    s.count = std::min(tile, units_[size_t(s.unit)].numel - s.begin);
    read_tile(s);
  };
  if (!jobs.empty()) issue(0);
  for (size_t j = 0; j < jobs.size(); ++j) {
    Tile& s = slots[j % kSlots];
    settle(s);  // this tile's reads
    if (j + 1 < jobs.size()) issue(j + 1);
    update_tile(s, lr, grad_scale, t);
    write_tile(s);
  }
  for (Tile& s : slots) settle(s);
}

}  // namespace strata::offload
