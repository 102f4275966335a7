// The training step: accumulate micro-batches, then one guarded optimizer step.
//   norm = ||grads|| / loss_scale         (one pass; non-finite iff any element is)
//   non-finite -> skip, count, and (fp16) halve the loss scale; weights untouched
//   else       -> AdamW with grad_scale = clip_coef / loss_scale
// Invariant: the weights change only in AdamW::step, and only with finite grads.
#include <chrono>
#include <cmath>

#include "ops.h"
#include "strata/dist.h"
#include "offload/offload_store.h"
#include "zero.h"
#include "strata/error.h"
#include "strata/train.h"

namespace strata {

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

namespace {
void check_options(const TrainOptions& o) {
  STRATA_CHECK(o.grad_accum >= 1, "Trainer: grad_accum " << o.grad_accum << " must be at least 1");
  STRATA_CHECK(o.clip_norm >= 0, "Trainer: clip_norm " << o.clip_norm << " must be non-negative (0 disables)");
  STRATA_CHECK(o.loss_scale_init > 0 && o.loss_scale_window >= 1,
               "Trainer: loss_scale_init must be positive and loss_scale_window at least 1");
  STRATA_CHECK(o.zero_stage >= 0 && o.zero_stage <= 3,
               "Trainer: ZeRO stage " << o.zero_stage << " does not exist; use 0, 1, 2 or 3");
}
}  // namespace

Trainer::Trainer(Model& model, const TrainOptions& o) : model_(&model), options_(o) {
  check_options(o);
  STRATA_CHECK(o.zero_stage == 0, "Trainer: ZeRO stage " << o.zero_stage
                                                         << " shards state across ranks; pass a dist::Comm");
  adamw_ = std::make_unique<AdamW>(model, o.adamw);
  loss_scale_ = model.precision() == Precision::fp16 ? o.loss_scale_init : 1.0f;
  model.zero_grad();
}

Trainer::Trainer(Model& model, const TrainOptions& o, dist::Comm& comm) : model_(&model), options_(o), comm_(&comm) {
  check_options(o);
  zero_ = std::make_unique<ZeroEngine>(model, comm, o.zero_stage, o.adamw);
  loss_scale_ = model.precision() == Precision::fp16 ? o.loss_scale_init : 1.0f;
  zero_->zero_grad();
}

Trainer::Trainer(Model& model, const TrainOptions& o, const offload::OffloadOptions& off)
    : model_(&model), options_(o) {
  check_options(o);
  STRATA_CHECK(o.zero_stage == 0, "Trainer: offload runs on one device; ZeRO stage " << o.zero_stage
                                                                                     << " needs a dist::Comm");
  STRATA_CHECK(model.precision() != Precision::fp16,
               "Trainer: offload supports fp32 and bf16 (fp16 loss scaling is not wired through it yet)");
  offload_ = std::make_unique<offload::OffloadStore>(model, off, o.adamw);
  loss_scale_ = 1.0f;
  offload_->zero_grad();
}

Trainer::~Trainer() = default;

AdamW& Trainer::optimizer() {
  STRATA_CHECK(adamw_, "Trainer::optimizer: a data-parallel or offloaded Trainer keeps its optimizer state in its store");
  return *adamw_;
}

const AdamW& Trainer::optimizer() const {
  STRATA_CHECK(adamw_, "Trainer::optimizer: a data-parallel Trainer keeps its optimizer state in shards");
  return *adamw_;
}

ZeroMemory Trainer::memory() const {
  if (zero_) return zero_->memory();
  ZeroMemory m;
  const size_t ds = dtype_size(precision_dtype(model_->precision()));
  for (int u = 0; u < model_->num_units(); ++u) {
    const size_t n = size_t(model_->unit_numel(u));
    m.params += n * ds;
    m.grads += n * 4;
    m.optimizer += n * (model_->precision() == Precision::fp32 ? 8 : 12);
  }
  return m;
}

std::vector<float> Trainer::unit_parameters(int u) {
  Device& dev = model_->device();
  const DType dt = precision_dtype(model_->precision());
  const int64_t n = model_->unit_numel(u);
  ParamStore* store = model_->store();
  void* data = store ? store->acquire_params(u) : model_->unit_params(u).data;
  std::vector<float> out(static_cast<size_t>(n));
  ops::cast({TensorView(out.data(), DType::f32, {n}, &dev), TensorView(data, dt, {n}, &dev)}, dev.stream());
  dev.stream().synchronize();
  if (store) store->release_params(u);
  return out;
}

float Trainer::forward_backward(const Batch& batch) {
  if (t_start_ < 0) t_start_ = now_seconds();
  StepKey key{options_.seed, step_, micro_};
  const float loss = model_->forward(batch, key, true);
  const float ranks = comm_ ? float(comm_->size()) : 1.0f;
  if (offload_) offload_->set_final_micro(micro_ + 1 >= options_.grad_accum);
  model_->backward(loss_scale_ / float(options_.grad_accum) / ranks);
  ++micro_;
  tokens_ += batch.inputs.numel();
  loss_sum_ += loss;
  return loss;
}

StepReport Trainer::step() {
  STRATA_CHECK(micro_ > 0, "Trainer::step: no gradients accumulated; call forward_backward first");
  Device& dev = model_->device();
  Stream& s = dev.stream();
  StepReport r;

  float norm_raw = 0;
  if (zero_) {
    zero_->reduce_gradients();
    norm_raw = zero_->grad_norm();
  } else if (offload_) {
    norm_raw = offload_->grad_norm();
  } else {
    ops::GlobalNormArgs g;
    g.out = TensorView(&norm_raw, DType::f32, {1}, &dev);
    for (int u = 0; u < model_->num_units(); ++u) g.inputs.push_back(model_->unit_grads(u));
    ops::global_norm(g, s);
  }
  s.synchronize();
  const float norm = norm_raw / loss_scale_;

  r.lr = options_.adamw.lr * options_.schedule.factor(step_);
  r.grad_norm = norm;
  if (!std::isfinite(norm)) {
    r.skipped = true;
    ++skipped_;
    clean_steps_ = 0;
    if (model_->precision() == Precision::fp16) loss_scale_ = std::max(1.0f, loss_scale_ * 0.5f);
  } else {
    float coef = 1.0f;
    if (options_.clip_norm > 0 && norm > options_.clip_norm) coef = options_.clip_norm / norm;
    if (zero_)
      zero_->update(r.lr, coef / loss_scale_, step_ + 1);
    else if (offload_)
      offload_->update(r.lr, coef / loss_scale_, step_ + 1);
    else
      adamw_->step(r.lr, coef / loss_scale_, step_ + 1);
    if (model_->precision() == Precision::fp16 && ++clean_steps_ >= options_.loss_scale_window) {
      loss_scale_ *= 2.0f;
      clean_steps_ = 0;
    }
  }
  if (zero_)
    zero_->zero_grad();
  else if (offload_)
    offload_->zero_grad();
  else
    model_->zero_grad();
  s.synchronize();
  if (offload_) {
    const offload::OffloadStats st = offload_->take_stats();
    r.device_bytes = st.device_bytes;
    r.pinned_bytes = st.pinned_bytes;
    r.host_bytes = st.host_bytes;
    r.nvme_bytes = st.nvme_bytes;
    r.nvme_read_gbps = st.read_gbps();
    r.nvme_write_gbps = st.write_gbps();
    r.stall_seconds = st.stall_seconds;
    r.norm_seconds = st.norm_seconds;
  }

  ++step_;
  r.step = step_;
  r.loss = float(loss_sum_ / double(micro_));
  if (comm_ && comm_->size() > 1) {  // the mean over ranks: every rank reports the global loss
    float sum = r.loss;
    comm_->all_reduce_sum(TensorView(&sum, DType::f32, {1}, &dev), s);
    r.loss = sum / float(comm_->size());
  }
  r.skipped_steps = skipped_;
  r.loss_scale = loss_scale_;
  r.tokens = tokens_;
  r.step_seconds = now_seconds() - t_start_;
  r.tokens_per_second = r.step_seconds > 0 ? double(tokens_) / r.step_seconds : 0;
  micro_ = 0;
  tokens_ = 0;
  loss_sum_ = 0;
  t_start_ = -1;
  return r;
}

StepReport Trainer::train_step(const std::vector<Batch>& micro_batches) {
  STRATA_CHECK(int64_t(micro_batches.size()) == options_.grad_accum,
               "Trainer::train_step: got " << micro_batches.size() << " micro-batches, grad_accum is "
                                           << options_.grad_accum);
  for (const Batch& b : micro_batches) forward_backward(b);
  return step();
}

TrainerState Trainer::state() const {
  STRATA_CHECK(micro_ == 0, "Trainer::state: " << micro_ << " micro-batches are accumulated; save between steps");
  return TrainerState{step_, loss_scale_, skipped_, clean_steps_};
}

void Trainer::load_state(const TrainerState& st) {
  STRATA_CHECK(micro_ == 0, "Trainer::load_state: " << micro_ << " micro-batches are accumulated; load between steps");
  STRATA_CHECK(st.step >= 0 && st.skipped_steps >= 0 && st.clean_steps >= 0 && st.loss_scale > 0,
               "Trainer::load_state: invalid state (step " << st.step << ", loss scale " << st.loss_scale
                                                          << ", skipped " << st.skipped_steps << ")");
  step_ = st.step;
  loss_scale_ = st.loss_scale;
  skipped_ = st.skipped_steps;
  clean_steps_ = st.clean_steps;
}

float Trainer::evaluate(const Batch& batch) { return model_->forward(batch, StepKey{options_.seed, step_, 0}, false); }

}  // namespace strata
