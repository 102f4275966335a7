// The training step: accumulate micro-batches, then one guarded optimizer step.
//   norm = ||grads|| / loss_scale         (one pass; non-finite iff any element is)
//   non-finite -> skip, count, and (fp16) halve the loss scale; weights untouched
//   else       -> AdamW with grad_scale = clip_coef / loss_scale
// Every phase is a call on the Trainer's one StateStore (strata/state.h), whatever
// the placement; the Trainer never asks which store it holds.
// Invariant: the weights change only in StateStore::update, and only with finite grads.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <unistd.h>

#include "lib/core/clock.h"
#include "micro_grads.h"
#include "ops.h"
#include "offload/state_store.h"
#include "strata/dist.h"
#include "strata/error.h"
#include "strata/train.h"
#include "zero.h"

namespace strata {

namespace {

// Resident bytes of this process (Linux /proc/self/statm), 0 when unknown.
size_t resident_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long long pages = 0, resident = 0;
  const int n = std::fscanf(f, "%llu %llu", &pages, &resident);
  std::fclose(f);
  return n == 2 ? size_t(resident) * size_t(sysconf(_SC_PAGESIZE)) : 0;
}

// RMS and max |x| of a buffer, through an f32 host copy (only on statistics steps).
void rms_max(const TensorView& x, float& rms, float& max_abs) {
  const int64_t n = x.numel();
  const std::vector<float> f = copy_to_host_f32(x);
  double ss = 0;
  float m = 0;
  for (float v : f) {
    ss += double(v) * v;
    m = std::max(m, std::fabs(v));
  }
  rms = n ? float(std::sqrt(ss / double(n))) : 0.0f;
  max_abs = m;
}

void check_options(const TrainOptions& o) {
  STRATA_CHECK(o.grad_accum >= 1, "Trainer: grad_accum " << o.grad_accum << " must be at least 1");
  STRATA_CHECK(o.clip_norm >= 0, "Trainer: clip_norm " << o.clip_norm << " must be non-negative (0 disables)");
  STRATA_CHECK(o.loss_scale_init > 0 && o.loss_scale_window >= 1,
               "Trainer: loss_scale_init must be positive and loss_scale_window at least 1");
  STRATA_CHECK(o.zero_stage >= 0 && o.zero_stage <= 3,
               "Trainer: ZeRO stage " << o.zero_stage << " does not exist; use 0, 1, 2 or 3");
}

// The base store `placement` and `comm` name, after the checks only that store makes.
std::unique_ptr<StateStore> make_base_store(Model& model, const TrainOptions& o, const Placement& placement,
                                            dist::Comm* comm) {
  const offload::OffloadOptions* off = placement.offload ? &*placement.offload : nullptr;
  if (comm) return make_zero_store(model, *comm, o.zero_stage, o.adamw, off);
  if (off)
    STRATA_CHECK(o.zero_stage == 0, "Trainer: offload runs on one device; ZeRO stage " << o.zero_stage
                                                                                       << " needs a dist::Comm");
  else
    STRATA_CHECK(o.zero_stage == 0, "Trainer: ZeRO stage " << o.zero_stage
                                                           << " shards state across ranks; pass a dist::Comm");
  if (!off)
    STRATA_CHECK(model.params_resident() || model.store(),
                 "Trainer: the model was built Model::Init::deferred and holds no parameters; "
                 "give the Trainer offload options or a ZeRO-3 communicator, whose store "
                 "initialises it, or build the model resident");
  if (model.base_frozen())
    STRATA_CHECK(model.lora(), "Trainer: the model's base is frozen and no Lora is attached: nothing to train");
  return off ? make_offload_store(model, *off, o.adamw) : make_resident_store(model, o.adamw);
}
}  // namespace

Trainer::Trainer(Model& model, const TrainOptions& o, const Placement& placement, dist::Comm* comm)
    : model_(&model), options_(o), comm_(comm) {
  check_options(o);
  store_ = with_adapters(model, o.adamw, make_base_store(model, o, placement, comm));
  loss_scale_ = model.precision() == Precision::fp16 ? o.loss_scale_init : 1.0f;
  store_->zero_grad();
}

Trainer::Trainer(Model& model, const TrainOptions& o) : Trainer(model, o, Placement{}) {}
Trainer::Trainer(Model& model, const TrainOptions& o, dist::Comm& comm) : Trainer(model, o, Placement{}, &comm) {}
Trainer::Trainer(Model& model, const TrainOptions& o, const offload::OffloadOptions& off)
    : Trainer(model, o, Placement{off}) {}
Trainer::Trainer(Model& model, const TrainOptions& o, dist::Comm& comm, const offload::OffloadOptions& off)
    : Trainer(model, o, Placement{off}, &comm) {}

Trainer::~Trainer() = default;

AdamW& Trainer::optimizer() { return resident_optimizer(*store_); }
const AdamW& Trainer::optimizer() const { return resident_optimizer(*store_); }

ZeroMemory Trainer::memory() const { return store_->memory(); }

std::vector<float> Trainer::unit_parameters(int u) const { return store_->unit_parameters(u); }

void Trainer::optimizer_state(int u, std::vector<float>& master, std::vector<float>& exp_avg,
                              std::vector<float>& exp_avg_sq) const {
  store_->read_state(u, master, exp_avg, exp_avg_sq);
}

void Trainer::load_optimizer_state(int u, const float* master, const float* exp_avg, const float* exp_avg_sq) {
  store_->load_state(u, master, exp_avg, exp_avg_sq);
}

void Trainer::load_unit_parameters(int u, const float* values) { store_->load_params(u, values); }

void Trainer::start_from_parameters(int u, const float* values) {
  state();  // throws mid-accumulation
  STRATA_CHECK(u >= 0 && u < model_->num_units(),
               "Trainer::start_from_parameters: unit " << u << " does not exist (the model has " << model_->num_units()
                                                       << ")");
  const size_t n = size_t(model_->unit_numel(u));
  // The master is the working parameters as the precision holds them.
  const DType dt = precision_dtype(model_->precision());
  std::vector<char> raw(n * dtype_size(dt));
  const TensorView working(raw.data(), dt, {int64_t(n)}, nullptr);
  copy_from_host_f32(working, values);
  const std::vector<float> rounded = copy_to_host_f32(working);
  load_unit_parameters(u, rounded.data());
  if (model_->base_frozen()) return;  // the frozen base has no optimizer state
  const std::vector<float> zeros(n, 0.0f);
  load_optimizer_state(u, rounded.data(), zeros.data(), zeros.data());
}

float Trainer::forward_backward(const Batch& batch) {
  STRATA_CHECK(!(store_->trains_base() && model_->base_frozen()),
               "Trainer: the model's base was frozen (a Lora attached) after this Trainer was made; "
               "make the Trainer after the Lora");
  const double t0 = now_seconds();
  if (t_start_ < 0) t_start_ = t0;
  StepKey key{options_.seed, step_, micro_};
  const float loss = model_->forward(batch, key, true);
  // Activation statistics from the step's last micro-batch, outside the compute time.
  const bool stats = options_.stats_every > 0 && (step_ + 1) % options_.stats_every == 0 &&
                     micro_ + 1 == options_.grad_accum;
  double t_stats = 0;
  if (stats) {
    const double ts = now_seconds();
    stats_.assign(size_t(model_->num_units()), UnitStats{});
    for (int u = 0; u < model_->num_units(); ++u) {
      stats_[size_t(u)].unit = u;
      const TensorView y = model_->unit_output(u);
      if (y.data) rms_max(y, stats_[size_t(u)].act_rms, stats_[size_t(u)].act_max_abs);
    }
    t_stats = now_seconds() - ts;
  }
  const float ranks = comm_ ? float(comm_->size()) : 1.0f;
  store_->set_final_micro(micro_ + 1 >= options_.grad_accum);
  {
    // After the first micro-batch each one is formed from zero and then added (one device
    // then sums micro-batches as a rank-ordered reduction does). ZeRO stages 2, 3 stage
    // every micro-batch's gradient from zero already (the store says so).
    std::optional<MicroGradients> fresh;
    if (micro_ > 0 && !model_->base_frozen() && !store_->stages_micro_grads()) fresh.emplace(*model_);
    model_->backward(loss_scale_ / float(options_.grad_accum) / ranks);
    model_->device().stream().synchronize();  // before the scratch is freed
  }
  compute_seconds_ += now_seconds() - t0 - t_stats;
  seq_ = batch.inputs.shape[1];
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

  // Gradient RMS per unit, before the optimizer zeroes them (the model's own gradients
  // only: under ZeRO a rank holds shards, offload pages them, a frozen base has none).
  if (!stats_.empty() && store_->grads_in_model()) {
    std::vector<int64_t> numel(size_t(model_->num_units()), 0);
    for (const ParamInfo& p : model_->parameters()) numel[size_t(p.unit)] += p.numel();
    for (int u = 0; u < model_->num_units(); ++u) {
      const float n = global_norm_to_host({model_->unit_grads(u)}, dev);
      stats_[size_t(u)].grad_rms = numel[size_t(u)] ? n / loss_scale_ / std::sqrt(float(numel[size_t(u)])) : 0.0f;
    }
  }

  const double t_comm = now_seconds();
  store_->reduce_gradients();
  const float norm_raw = store_->grad_norm();
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
    store_->update(r.lr, coef / loss_scale_, step_ + 1);
    if (model_->precision() == Precision::fp16 && ++clean_steps_ >= options_.loss_scale_window) {
      loss_scale_ *= 2.0f;
      clean_steps_ = 0;
    }
  }
  store_->zero_grad();
  s.synchronize();
  const double t_end = now_seconds();
  const StoreStats st = store_->take_stats();
  r.comm_seconds = st.comm_seconds;
  r.optimizer_seconds = t_end - t_comm - st.comm_seconds;
  r.comm_wait_seconds = st.comm_wait_seconds;
  r.io_stall_seconds = st.io_stall_seconds;
  r.transfer_seconds = st.transfer_seconds;
  r.overlap_fraction = st.overlap_fraction;
  r.pinned_bytes = st.pinned_bytes;
  r.nvme_bytes = st.nvme_bytes;
  r.host_setup_peak_bytes = st.host_setup_peak_bytes;
  r.nvme_read_gbps = st.nvme_read_gbps;
  r.nvme_write_gbps = st.nvme_write_gbps;
  r.norm_seconds = st.norm_seconds;
  r.update_seconds = st.update_seconds;
  r.update_read_gbps = st.update_read_gbps;
  r.update_write_gbps = st.update_write_gbps;

  ++step_;
  r.step = step_;
  r.loss = float(loss_sum_ / double(micro_));
  if (comm_ && comm_->size() > 1) {  // the mean over ranks: every rank reports the global loss
    // Gathered and summed in double in rank order, as one device sums its micro-batches'
    // losses: one rank per micro-batch reports one device's loss bit for bit.
    const int n = comm_->size();
    Buffer mine(dev, 4, "loss all-gather"), all(dev, size_t(n) * 4, "loss all-gather");  // collectives take device memory
    s.copy(mine.data(), &r.loss, 4);
    comm_->all_gather(TensorView(mine.data(), DType::f32, {1}, &dev), TensorView(all.data(), DType::f32, {n}, &dev), s);
    std::vector<float> losses(static_cast<size_t>(n));
    s.copy(losses.data(), all.data(), size_t(n) * 4);
    s.synchronize();
    double total = 0;
    for (float l : losses) total += l;
    r.loss = float(total / double(n));
  }
  r.skipped_steps = skipped_;
  r.loss_scale = loss_scale_;
  r.tokens = tokens_;
  if (model_->base_frozen()) {
    size_t numel = 0;
    for (int u = 0; u < model_->num_units(); ++u) numel += size_t(model_->unit_numel(u));
    r.frozen_bytes_saved = numel * (4 + (model_->precision() == Precision::fp32 ? 8 : 12));
  }
  r.step_seconds = now_seconds() - t_start_;
  r.tokens_per_second = r.step_seconds > 0 ? double(tokens_) / r.step_seconds : 0;
  r.compute_seconds = compute_seconds_;
  r.model_flops = model_->config().flops_per_token(seq_) * double(tokens_);
  if (options_.peak_flops > 0 && r.step_seconds > 0) r.mfu = r.model_flops / r.step_seconds / options_.peak_flops;
  r.device_bytes = dev.arena().bytes_live();
  const size_t rss = resident_bytes();
  if (dev.kind() == DeviceKind::cpu)
    r.host_bytes = rss > r.device_bytes ? rss - r.device_bytes : 0;
  else
    r.host_bytes = rss;
  r.unit_stats = std::move(stats_);
  stats_.clear();
  compute_seconds_ = 0;
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
