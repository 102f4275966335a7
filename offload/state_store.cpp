// Resident and single-device offloaded stores, and the LoRA adapter group (see
// state_store.h). Each forwards to the owner of its arrays (AdamW and the model's
// buffers, OffloadStore); what they share is here once: the norm read-back and the
// parameter read for checkpoints.
#include "state_store.h"

#include <cmath>

#include "lib/model/store.h"
#include "offload_store.h"
#include "ops.h"
#include "strata/error.h"
#include "strata/lora.h"

namespace strata {

float global_norm_to_host(std::vector<TensorView> inputs, Device& dev) {
  Buffer out(dev, 4, "gradient norm");
  ops::GlobalNormArgs g;
  g.out = TensorView(out.data(), DType::f32, {1}, &dev);
  g.inputs = std::move(inputs);
  ops::global_norm(g, dev.stream());
  float norm = 0;
  dev.stream().copy(&norm, out.data(), 4);
  dev.stream().synchronize();
  return norm;
}

std::vector<float> read_unit_parameters(Model& model, int u) {
  Device& dev = model.device();
  const DType dt = precision_dtype(model.precision());
  const int64_t n = model.unit_numel(u);
  ParamStore* store = model.store();
  void* data = store ? store->acquire_params(u) : model.unit_params(u).data;
  std::vector<float> out = copy_to_host_f32(TensorView(data, dt, {n}, &dev));
  if (store) store->release_params(u);
  return out;
}

AdamW& resident_optimizer(StateStore& store) {
  AdamW* a = store.resident_optimizer();
  STRATA_CHECK(a, "Trainer::optimizer: a data-parallel or offloaded Trainer keeps its optimizer state in its "
                  "store; read it with optimizer_state");
  return *a;
}

namespace {

class ResidentStore final : public StateStore {
 public:
  ResidentStore(Model& model, const AdamWOptions& adamw) : model_(&model) {
    // A frozen base (LoRA) has no gradients and gets no optimizer state.
    if (!model.base_frozen()) adamw_ = std::make_unique<AdamW>(model, adamw);
  }
  void set_final_micro(bool) override {}
  bool stages_micro_grads() const override { return false; }
  void reduce_gradients() override {}
  float grad_norm() override {
    std::vector<TensorView> grads;
    for (int u = 0; u < model_->num_units(); ++u) grads.push_back(model_->unit_grads(u));
    return global_norm_to_host(std::move(grads), model_->device());
  }
  void update(float lr, float grad_scale, int64_t t) override {
    if (adamw_) adamw_->step(lr, grad_scale, t);
  }
  void zero_grad() override { model_->zero_grad(); }
  StoreStats take_stats() override { return {}; }
  ZeroMemory memory() const override {
    ZeroMemory m;
    const size_t ds = dtype_size(precision_dtype(model_->precision()));
    const bool frozen = model_->base_frozen();
    for (int u = 0; u < model_->num_units(); ++u) {
      const size_t n = size_t(model_->unit_numel(u));
      m.params += n * ds;
      m.grads += frozen ? 0 : n * 4;
      m.optimizer += frozen ? 0 : n * (model_->precision() == Precision::fp32 ? 8 : 12);
    }
    return m;
  }
  bool trains_base() const override { return adamw_ != nullptr; }
  bool grads_in_model() const override { return adamw_ && !model_->base_frozen(); }
  AdamW* resident_optimizer() override { return adamw_.get(); }
  std::vector<float> unit_parameters(int u) override { return read_unit_parameters(*model_, u); }
  void read_state(int u, std::vector<float>& master, std::vector<float>& exp_avg,
                  std::vector<float>& exp_avg_sq) override {
    const AdamW& a = strata::resident_optimizer(*this);
    master = copy_to_host_f32(a.master(u));
    exp_avg = copy_to_host_f32(a.exp_avg(u));
    exp_avg_sq = copy_to_host_f32(a.exp_avg_sq(u));
  }
  void load_state(int u, const float* master, const float* exp_avg, const float* exp_avg_sq) override {
    AdamW& a = strata::resident_optimizer(*this);
    for (auto [t, src] : {std::pair{a.master(u), master}, {a.exp_avg(u), exp_avg}, {a.exp_avg_sq(u), exp_avg_sq}})
      copy_from_host_f32(t, src);
  }
  void load_params(int u, const float* values) override { copy_from_host_f32(model_->unit_params(u), values); }

 private:
  Model* model_;
  std::unique_ptr<AdamW> adamw_;
};

class OffloadedStore final : public StateStore {
 public:
  OffloadedStore(Model& model, const offload::OffloadOptions& options, const AdamWOptions& adamw)
      : model_(&model), store_(model, options, adamw) {}
  void set_final_micro(bool final) override { store_.set_final_micro(final); }
  bool stages_micro_grads() const override { return false; }
  void reduce_gradients() override {}
  float grad_norm() override { return store_.grad_norm(); }
  void update(float lr, float grad_scale, int64_t t) override { store_.update(lr, grad_scale, t); }
  void zero_grad() override { store_.zero_grad(); }
  StoreStats take_stats() override {
    const offload::OffloadStats st = store_.take_stats();
    StoreStats r;
    r.pinned_bytes = st.pinned_bytes;
    r.nvme_bytes = st.nvme_bytes;
    r.nvme_read_gbps = st.read_gbps();
    r.nvme_write_gbps = st.write_gbps();
    r.io_stall_seconds = st.stall_seconds;
    r.transfer_seconds = st.transfer_seconds;
    r.overlap_fraction = st.overlap_fraction();
    r.host_setup_peak_bytes = store_.construction_host_peak();
    r.norm_seconds = st.norm_seconds;
    r.update_seconds = st.update_seconds;
    if (st.update_seconds > 0) {
      r.update_read_gbps = double(st.update_read) / st.update_seconds / 1e9;
      r.update_write_gbps = double(st.update_written) / st.update_seconds / 1e9;
    }
    return r;
  }
  ZeroMemory memory() const override { return store_.memory(); }  // every tier, as the store placed it
  bool trains_base() const override { return !store_.frozen(); }
  bool grads_in_model() const override { return false; }
  std::vector<float> unit_parameters(int u) override { return read_unit_parameters(*model_, u); }
  void read_state(int u, std::vector<float>& master, std::vector<float>& exp_avg,
                  std::vector<float>& exp_avg_sq) override {
    STRATA_CHECK(!store_.frozen(), "Trainer::optimizer_state: the frozen base has no optimizer state");
    store_.read_state(u, master, exp_avg, exp_avg_sq);
  }
  void load_state(int u, const float* master, const float* exp_avg, const float* exp_avg_sq) override {
    STRATA_CHECK(!store_.frozen(), "Trainer::load_optimizer_state: the frozen base has no optimizer state");
    store_.load_state(u, master, exp_avg, exp_avg_sq);
  }
  void load_params(int u, const float* values) override { store_.load_params(u, values); }

 private:
  Model* model_;
  offload::OffloadStore store_;
};

// The base group and the adapters of whatever Lora the model holds when asked (a Lora
// may be destroyed before the Trainer; the base then stays frozen and nothing trains).
class AdapterGroupStore final : public StateStore {
 public:
  AdapterGroupStore(Model& model, const AdamWOptions& adamw, std::unique_ptr<StateStore> base)
      : model_(&model), adamw_(adamw), base_(std::move(base)) {}
  void set_final_micro(bool final) override { base_->set_final_micro(final); }
  bool stages_micro_grads() const override { return base_->stages_micro_grads(); }
  void reduce_gradients() override { base_->reduce_gradients(); }
  float grad_norm() override {
    Lora* lora = model_->lora();
    if (!lora) return base_->trains_base() ? base_->grad_norm() : 0.0f;
    const float adapters = global_norm_to_host({lora->flat_grads()}, model_->device());
    if (!base_->trains_base()) return adapters;  // the usual LoRA run: bitwise the adapters' norm
    const double b = base_->grad_norm();
    return float(std::sqrt(b * b + double(adapters) * adapters));
  }
  void update(float lr, float grad_scale, int64_t t) override {
    base_->update(lr, grad_scale, t);
    if (Lora* lora = model_->lora()) lora->step(adamw_, lr, grad_scale, t);
  }
  void zero_grad() override {
    base_->zero_grad();
    if (Lora* lora = model_->lora()) lora->zero_grad();
  }
  StoreStats take_stats() override { return base_->take_stats(); }
  ZeroMemory memory() const override {
    ZeroMemory m = base_->memory();
    if (const Lora* lora = model_->lora()) {  // the adapters train resident
      m.params += lora->param_bytes();
      m.grads += lora->grad_bytes();
      m.optimizer += lora->optimizer_bytes();
    }
    return m;
  }
  bool trains_base() const override { return base_->trains_base(); }
  bool grads_in_model() const override { return base_->grads_in_model(); }
  AdamW* resident_optimizer() override { return base_->resident_optimizer(); }
  std::vector<float> unit_parameters(int u) override { return base_->unit_parameters(u); }
  void read_state(int u, std::vector<float>& master, std::vector<float>& exp_avg,
                  std::vector<float>& exp_avg_sq) override {
    base_->read_state(u, master, exp_avg, exp_avg_sq);
  }
  void load_state(int u, const float* master, const float* exp_avg, const float* exp_avg_sq) override {
    base_->load_state(u, master, exp_avg, exp_avg_sq);
  }
  void load_params(int u, const float* values) override { base_->load_params(u, values); }

 private:
  Model* model_;
  AdamWOptions adamw_;
  std::unique_ptr<StateStore> base_;
};

}  // namespace

std::unique_ptr<StateStore> make_resident_store(Model& model, const AdamWOptions& adamw) {
  return std::make_unique<ResidentStore>(model, adamw);
}

std::unique_ptr<StateStore> make_offload_store(Model& model, const offload::OffloadOptions& options,
                                               const AdamWOptions& adamw) {
  return std::make_unique<OffloadedStore>(model, options, adamw);
}

std::unique_ptr<StateStore> with_adapters(Model& model, const AdamWOptions& adamw, std::unique_ptr<StateStore> base) {
  return std::make_unique<AdapterGroupStore>(model, adamw, std::move(base));
}

}  // namespace strata
