// MicroGradients (micro_grads.h): scratch gradients for one backward, added to the
// accumulator at each unit's last use. Invariant: the accumulator is touched once per
// unit per micro-batch, by one ops::accumulate (acc += g), in the order units finish.
#include "micro_grads.h"

#include <algorithm>

#include "ops.h"
#include "strata/error.h"

namespace strata {

MicroGradients::MicroGradients(Model& model)
    : model_(&model),
      inner_(model.store()),
      scratch_(size_t(model.num_units())),
      refs_(size_t(model.num_units()), 0) {
  model.set_store(this);
}

MicroGradients::~MicroGradients() {
  if (model_->store() == this) model_->set_store(inner_);
}

void* MicroGradients::acquire_params(int u) {
  return inner_ ? inner_->acquire_params(u) : model_->unit_params(u).data;
}

void MicroGradients::release_params(int u) {
  if (inner_) inner_->release_params(u);
}

void* MicroGradients::acquire_grads(int u) {
  bool primary = true;  // acquired while no other is held: unit u's own backward starts
  for (int r : refs_) primary = primary && r == 0;
  if (primary) primary_ = u;
  ++refs_[size_t(u)];
  Buffer& b = scratch_[size_t(u)];
  if (!b.data()) {
    const size_t bytes = size_t(model_->unit_numel(u)) * 4;
    auto fit = std::find_if(pool_.begin(), pool_.end(), [&](const Buffer& p) { return p.size() >= bytes; });
    if (fit != pool_.end()) {
      b = std::move(*fit);
      pool_.erase(fit);
    } else {
      b = Buffer(model_->device(), bytes, "micro-batch gradient scratch");
    }
    ops::fill_zero(TensorView(b.data(), DType::f32, {model_->unit_numel(u)}, &model_->device()),
                   model_->device().stream());
  }
  return b.data();
}

void MicroGradients::release_grads(int u) {
  STRATA_CHECK(refs_[size_t(u)] > 0, "MicroGradients: release_grads(" << u << ") without acquire");
  if (--refs_[size_t(u)] > 0 || primary_ > u) return;  // its own backward adds more
  Device& dev = model_->device();
  const int64_t n = model_->unit_numel(u);
  void* acc = inner_ ? inner_->acquire_grads(u) : model_->unit_grads(u).data;
  ops::accumulate({TensorView(acc, DType::f32, {n}, &dev), TensorView(scratch_[size_t(u)].data(), DType::f32, {n}, &dev)},
                  dev.stream());
  if (inner_) inner_->release_grads(u);
  pool_.push_back(std::move(scratch_[size_t(u)]));
}

}  // namespace strata
