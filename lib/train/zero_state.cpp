// The ZeRO-sharded store: ZeroEngine behind strata/state.h. Its reductions and the
// norm's all-reduce are the step's communication time (StoreStats::comm_seconds).
#include <memory>

#include "lib/core/clock.h"
#include "offload/state_store.h"
#include "strata/error.h"
#include "zero.h"

namespace strata {

namespace {

class ZeroStore final : public StateStore {
 public:
  ZeroStore(Model& model, dist::Comm& comm, int stage, const AdamWOptions& adamw,
            const offload::OffloadOptions* offload)
      : model_(&model), stage_(stage), engine_(model, comm, stage, adamw, offload) {}
  void set_final_micro(bool final) override { engine_.set_final_micro(final); }
  bool stages_micro_grads() const override { return stage_ >= 2; }
  void reduce_gradients() override {
    const double t0 = now_seconds();
    engine_.reduce_gradients();
    comm_seconds_ += now_seconds() - t0;
  }
  float grad_norm() override {
    const double t0 = now_seconds();
    const float norm = engine_.grad_norm();
    comm_seconds_ += now_seconds() - t0;
    return norm;
  }
  void update(float lr, float grad_scale, int64_t t) override { engine_.update(lr, grad_scale, t); }
  void zero_grad() override { engine_.zero_grad(); }
  StoreStats take_stats() override {
    StoreStats r;
    r.comm_seconds = comm_seconds_;
    comm_seconds_ = 0;
    r.pinned_bytes = engine_.take_pinned_high_water();
    const ZeroMemory m = engine_.memory();
    r.host_setup_peak_bytes = m.host_construction_peak;
    r.nvme_bytes = m.nvme_bytes;
    r.io_stall_seconds = engine_.take_stall_seconds();
    r.comm_wait_seconds = engine_.take_comm_wait_seconds();
    return r;
  }
  ZeroMemory memory() const override { return engine_.memory(); }
  bool trains_base() const override { return true; }
  bool grads_in_model() const override { return false; }
  std::vector<float> unit_parameters(int u) override { return read_unit_parameters(*model_, u); }
  void read_state(int u, std::vector<float>& master, std::vector<float>& exp_avg,
                  std::vector<float>& exp_avg_sq) override {
    engine_.gather_state(u, master, exp_avg, exp_avg_sq);
  }
  void load_state(int u, const float* master, const float* exp_avg, const float* exp_avg_sq) override {
    engine_.load_state(u, master, exp_avg, exp_avg_sq);
  }
  void load_params(int u, const float* values) override { engine_.load_params(u, values); }

 private:
  Model* model_;
  int stage_;
  ZeroEngine engine_;
  double comm_seconds_ = 0;
};

}  // namespace

std::unique_ptr<StateStore> make_zero_store(Model& model, dist::Comm& comm, int stage, const AdamWOptions& adamw,
                                            const offload::OffloadOptions* offload) {
  if (offload) {
    STRATA_CHECK(model.precision() != Precision::fp16,
                 "Trainer: ZeRO with offload supports fp32 and bf16 (fp16 works offloaded on one device, or "
                 "under ZeRO without offload)");
    STRATA_CHECK(!model.base_frozen() && !model.lora(),
                 "Trainer: LoRA with offload is not supported yet; keep the frozen base resident");
  } else {
    STRATA_CHECK(!model.base_frozen(), "Trainer: data-parallel LoRA (frozen base) is not supported yet");
  }
  return std::make_unique<ZeroStore>(model, comm, stage, adamw, offload);
}

}  // namespace strata
