// AdamW orchestration over the model's units; the math is ops::adamw_step.
// Invariant: in bf16/fp16 the f32 master is the truth and the working parameters
// are its rounding, rewritten after every update; in fp32 the parameters are the
// master (no copy).
#include <cstring>

#include "adamw_args.h"
#include "ops.h"
#include "strata/error.h"
#include "strata/optim.h"

namespace strata {

AdamW::AdamW(Model& model, const AdamWOptions& o) : model_(&model), options_(o) {
  STRATA_CHECK(o.lr >= 0, "AdamW: lr " << o.lr << " must be non-negative");
  STRATA_CHECK(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1,
               "AdamW: betas (" << o.beta1 << ", " << o.beta2 << ") must be in [0, 1)");
  STRATA_CHECK(o.eps > 0, "AdamW: eps " << o.eps << " must be positive");
  STRATA_CHECK(o.weight_decay >= 0, "AdamW: weight_decay " << o.weight_decay << " must be non-negative");
  Device& dev = model.device();
  for (int u = 0; u < model.num_units(); ++u) {
    const size_t bytes = size_t(model.unit_numel(u)) * 4;
    if (model.precision() != Precision::fp32) {
      master_.emplace_back(dev, bytes, "AdamW master weights");
      ops::cast({master(u), model.unit_params(u)}, dev.stream());
    } else {
      master_.emplace_back();
    }
    m_.emplace_back(dev, bytes, "AdamW exp_avg");
    v_.emplace_back(dev, bytes, "AdamW exp_avg_sq");
    ops::fill_zero(exp_avg(u), dev.stream());
    ops::fill_zero(exp_avg_sq(u), dev.stream());
  }
}

TensorView AdamW::master(int u) const {
  if (model_->precision() == Precision::fp32) return model_->unit_params(u);
  return TensorView(master_.at(size_t(u)).data(), DType::f32, {model_->unit_numel(u)}, &model_->device());
}
TensorView AdamW::exp_avg(int u) const {
  return TensorView(m_.at(size_t(u)).data(), DType::f32, {model_->unit_numel(u)}, &model_->device());
}
TensorView AdamW::exp_avg_sq(int u) const {
  return TensorView(v_.at(size_t(u)).data(), DType::f32, {model_->unit_numel(u)}, &model_->device());
}

bool adamw_decays(const AdamWOptions& o, const ParamInfo& p) {
  if (p.role == ParamRole::matrix) return true;
  if (p.role == ParamRole::embedding) return o.decay_embeddings;
  return o.decay_norms_and_biases;
}

bool AdamW::decays(const ParamInfo& p) const { return adamw_decays(options_, p); }

void AdamW::step(float lr, float grad_scale, int64_t t) {
  Stream& s = model_->device().stream();
  const bool fp32 = model_->precision() == Precision::fp32;
  // One call per parameter tensor: weight decay differs between tensors of a unit.
  for (const ParamInfo& p : model_->parameters()) {
    const int64_t n = p.numel();
    auto range = [&](const TensorView& flat) {
      TensorView v = flat;
      v.data = static_cast<char*>(flat.data) + size_t(p.offset) * dtype_size(flat.dtype);
      v.ndim = 1;
      v.shape[0] = n;
      return v;
    };
    ops::AdamWArgs a = adamw_args(options_, &p, lr, grad_scale, t);
    a.master = range(master(p.unit));
    a.grad = range(model_->unit_grads(p.unit));
    a.m = range(exp_avg(p.unit));
    a.v = range(exp_avg_sq(p.unit));
    if (!fp32) a.working = range(model_->unit_params(p.unit));
    ops::adamw_step(a, s);
  }
}

}  // namespace strata
