#include "zero.h"

#include <algorithm>
#include <cmath>

#include "../optim/adamw_args.h"
#include "ops.h"
#include "strata/error.h"

namespace strata {

struct ZeroEngine::Unit {
  int64_t numel = 0;
  int64_t lo = 0, hi = 0;  // this rank's shard (stage 0: the whole unit)
  Buffer master, m, v;     // (hi - lo) f32; no master when it is the f32 working shard
  Buffer grad_shard;       // stages 2, 3: (hi - lo) f32
  Buffer param_shard;      // stage 3: (hi - lo) working dtype
  Buffer gathered;         // stage 3: the full parameters while acquired
  Buffer staging;          // stages 2, 3: the full gradient while acquired
  int param_refs = 0, grad_refs = 0;
};

namespace {
TensorView range(void* base, DType dt, int64_t begin, int64_t count, Device* device) {
  return TensorView(static_cast<char*>(base) + size_t(begin) * dtype_size(dt), dt, {count}, device);
}
}  // namespace

ZeroEngine::ZeroEngine(Model& model, dist::Comm& comm, int stage, const AdamWOptions& options)
    : model_(&model), comm_(&comm), stage_(stage), options_(options) {
  STRATA_CHECK(stage >= 0 && stage <= 3, "Trainer: ZeRO stage " << stage << " does not exist; use 0, 1, 2 or 3");
  const int N = comm.size(), r = comm.rank();
  Device& dev = model.device();
  Stream& s = dev.stream();
  const DType dt = precision_dtype(model.precision());
  const bool fp32 = model.precision() == Precision::fp32;
  units_.resize(size_t(model.num_units()));
  for (int u = 0; u < model.num_units(); ++u) {
    Unit& x = units_[size_t(u)];
    x.numel = model.unit_numel(u);
    STRATA_CHECK(x.numel % N == 0, "Trainer: unit '" << model.unit_name(u) << "' has " << x.numel
                                                     << " elements, not divisible by " << N
                                                     << " ranks; use 1, 2, 4 or 8 ranks");
    const int64_t s_len = stage == 0 ? x.numel : x.numel / N;
    x.lo = stage == 0 ? 0 : r * s_len;
    x.hi = x.lo + s_len;
    TensorView working = range(model.unit_params(u).data, dt, x.lo, s_len, &dev);
    if (stage == 3) {
      x.param_shard = Buffer(dev, size_t(s_len) * dtype_size(dt), "ZeRO-3 parameter shard");
      ops::cast({range(x.param_shard.data(), dt, 0, s_len, &dev), working}, s);
    }
    if (!fp32) {
      x.master = Buffer(dev, size_t(s_len) * 4, "AdamW master weights (shard)");
      ops::cast({range(x.master.data(), DType::f32, 0, s_len, &dev), working}, s);
    }
    x.m = Buffer(dev, size_t(s_len) * 4, "AdamW exp_avg (shard)");
    x.v = Buffer(dev, size_t(s_len) * 4, "AdamW exp_avg_sq (shard)");
    ops::fill_zero(range(x.m.data(), DType::f32, 0, s_len, &dev), s);
    ops::fill_zero(range(x.v.data(), DType::f32, 0, s_len, &dev), s);
    if (stage >= 2) {
      x.grad_shard = Buffer(dev, size_t(s_len) * 4, "ZeRO gradient shard");
      ops::fill_zero(range(x.grad_shard.data(), DType::f32, 0, s_len, &dev), s);
    }
  }
  if (stage >= 2) {
    model.set_store(this);
    model.release_resident_state(/*params=*/stage == 3, /*grads=*/true);
  }
}

ZeroEngine::~ZeroEngine() {
  if (model_->store() == this) model_->set_store(nullptr);
}

Buffer ZeroEngine::take(std::vector<Buffer>& pool, size_t bytes, const char* what) {
  for (size_t i = 0; i < pool.size(); ++i)
    if (pool[i].size() >= bytes) {
      Buffer b = std::move(pool[i]);
      pool.erase(pool.begin() + long(i));
      return b;
    }
  return Buffer(model_->device(), bytes, what);
}

void* ZeroEngine::acquire_params(int u) {
  Unit& x = units_[size_t(u)];
  if (stage_ < 3) return model_->unit_params(u).data;
  if (x.param_refs++ == 0) {
    const DType dt = precision_dtype(model_->precision());
    Device& dev = model_->device();
    x.gathered = take(param_pool_, size_t(x.numel) * dtype_size(dt), "ZeRO-3 gathered parameters");
    comm_->all_gather(range(x.param_shard.data(), dt, 0, x.hi - x.lo, &dev), range(x.gathered.data(), dt, 0, x.numel, &dev),
                      dev.stream());
  }
  return x.gathered.data();
}

void ZeroEngine::release_params(int u) {
  Unit& x = units_[size_t(u)];
  if (stage_ < 3) return;
  if (--x.param_refs == 0) param_pool_.push_back(std::move(x.gathered));
}

void* ZeroEngine::acquire_grads(int u) {
  Unit& x = units_[size_t(u)];
  if (stage_ < 2) return model_->unit_grads(u).data;
  if (x.grad_refs++ == 0) {
    x.staging = take(grad_pool_, size_t(x.numel) * 4, "ZeRO gradient staging");
    ops::fill_zero(range(x.staging.data(), DType::f32, 0, x.numel, &model_->device()), model_->device().stream());
  }
  return x.staging.data();
}

void ZeroEngine::release_grads(int u) {
  Unit& x = units_[size_t(u)];
  if (stage_ < 2 || --x.grad_refs > 0) return;
  // This unit's gradient of this micro-batch is final: reduce it into the shard.
  Device& dev = model_->device();
  TensorView full = range(x.staging.data(), DType::f32, 0, x.numel, &dev);
  TensorView mine = range(x.staging.data(), DType::f32, x.lo, x.hi - x.lo, &dev);
  comm_->reduce_scatter_sum(full, mine, dev.stream());
  ops::accumulate({range(x.grad_shard.data(), DType::f32, 0, x.hi - x.lo, &dev), mine}, dev.stream());
  grad_pool_.push_back(std::move(x.staging));
}

TensorView ZeroEngine::shard_grads(int u) {
  Unit& x = units_[size_t(u)];
  if (stage_ >= 2) return range(x.grad_shard.data(), DType::f32, 0, x.hi - x.lo, &model_->device());
  return range(model_->unit_grads(u).data, DType::f32, x.lo, x.hi - x.lo, &model_->device());
}

TensorView ZeroEngine::shard_params(int u) {
  Unit& x = units_[size_t(u)];
  const DType dt = precision_dtype(model_->precision());
  if (stage_ == 3) return range(x.param_shard.data(), dt, 0, x.hi - x.lo, &model_->device());
  return range(model_->unit_params(u).data, dt, x.lo, x.hi - x.lo, &model_->device());
}

void ZeroEngine::reduce_gradients() {
  Stream& s = model_->device().stream();
  for (int u = 0; u < model_->num_units(); ++u) {
    if (stage_ == 0) comm_->all_reduce_sum(model_->unit_grads(u), s);
    if (stage_ == 1) comm_->reduce_scatter_sum(model_->unit_grads(u), shard_grads(u), s);
  }
}

float ZeroEngine::grad_norm() {
  Device& dev = model_->device();
  float norm = 0;
  ops::GlobalNormArgs g;
  g.out = TensorView(&norm, DType::f32, {1}, &dev);
  for (int u = 0; u < model_->num_units(); ++u) g.inputs.push_back(shard_grads(u));
  ops::global_norm(g, dev.stream());
  if (stage_ == 0) return norm;  // every rank holds the whole reduced gradient
  float squared = norm * norm;
  comm_->all_reduce_sum(TensorView(&squared, DType::f32, {1}, &dev), dev.stream());
  return std::sqrt(squared);
}

void ZeroEngine::update(float lr, float grad_scale, int64_t t) {
  Device& dev = model_->device();
  Stream& s = dev.stream();
  const DType dt = precision_dtype(model_->precision());
  const bool fp32 = model_->precision() == Precision::fp32;
  for (const ParamInfo& p : model_->parameters()) {
    Unit& x = units_[size_t(p.unit)];
    const int64_t begin = std::max(p.offset, x.lo), end = std::min(p.offset + p.numel(), x.hi);
    if (begin >= end) continue;
    const int64_t at = begin - x.lo, n = end - begin;
    TensorView working = shard_params(p.unit);
    ops::AdamWArgs a = adamw_args(options_, &p, lr, grad_scale, t);
    a.working = fp32 ? TensorView{} : range(working.data, dt, at, n, &dev);
    a.master = fp32 ? range(working.data, DType::f32, at, n, &dev) : range(x.master.data(), DType::f32, at, n, &dev);
    a.grad = range(shard_grads(p.unit).data, DType::f32, at, n, &dev);
    a.m = range(x.m.data(), DType::f32, at, n, &dev);
    a.v = range(x.v.data(), DType::f32, at, n, &dev);
    ops::adamw_step(a, s);
  }
  if (stage_ == 1 || stage_ == 2)
    for (int u = 0; u < model_->num_units(); ++u) comm_->all_gather(shard_params(u), model_->unit_params(u), s);
}

void ZeroEngine::zero_grad() {
  if (stage_ < 2) {
    model_->zero_grad();
    return;
  }
  for (int u = 0; u < model_->num_units(); ++u) ops::fill_zero(shard_grads(u), model_->device().stream());
}

ZeroMemory ZeroEngine::memory() const {
  ZeroMemory mem;
  const size_t ds = dtype_size(precision_dtype(model_->precision()));
  for (const Unit& x : units_) {
    mem.params += stage_ < 3 ? size_t(x.numel) * ds : x.param_shard.size() + x.gathered.size();
    mem.grads += stage_ < 2 ? size_t(x.numel) * 4 : x.grad_shard.size() + x.staging.size();
    mem.optimizer += x.master.size() + x.m.size() + x.v.size();
  }
  for (const Buffer& b : param_pool_) mem.params += b.size();
  for (const Buffer& b : grad_pool_) mem.grads += b.size();
  return mem;
}

}  // namespace strata
