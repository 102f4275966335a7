// LoRA on the sites a custom unit declares (Unit::adapter_sites, LoraOptions::sites):
// gradients against finite differences, zero-init identity, training with a frozen
// base, selection by name, strata's own file names round trip, and the errors for
// PEFT targets on a custom unit and for unknown sites. The built-in block's PEFT
// adapters are tested in test_lora.cpp.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <unistd.h>

#include "strata/strata.h"
#include "strata/unit.h"
#include "train_support.h"

using namespace strata;
using namespace strata::test;

namespace {

// y = x + (x W_in^T) W_out^T: two linear layers, declared as sites "in" (id 0) and
// "out" (id 5: ids need not be dense).
class TwoLinear final : public Unit {
 public:
  TwoLinear(const ModelConfig& c, int layer, std::vector<AdapterSite> sites = {{"in", "in.weight", 0}, {"out", "out.weight", 5}})
      : C_(c.d_model), layer_(layer), sites_(std::move(sites)) {}
  std::string name() const override { return "two." + std::to_string(layer_); }
  std::vector<ParamSpec> param_specs() const override {
    return {{"in.weight", {C_, C_}, ParamSpec::Init::normal, 0.2f}, {"out.weight", {C_, C_}, ParamSpec::Init::normal, 0.2f}};
  }
  std::vector<AdapterSite> adapter_sites() const override { return sites_; }
  void set_adapter(LinearAdapter* adapter) override { adapter_ = adapter; }
  void reserve(Device& device, DType dt, int64_t B, int64_t T) override {
    const size_t bytes = carve_bytes(dt, B * T * C_);
    if (saved_.size() < bytes) saved_ = Buffer(device, bytes, "two-linear activations");
  }
  size_t scratch_bytes(DType dt, int64_t rows) const override { return carve_bytes(dt, rows * C_); }
  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override {
    const int64_t n = ctx.rows();
    char* cur = static_cast<char*>(saved_.data());
    const TensorView h = carve(cur, ctx.dtype, {n, C_});
    const TensorView x = io.x.reshape({n, C_}), y = io.y.reshape({n, C_});
    ops::matmul_forward({h, x, p.params[0], {}}, ctx.stream);
    if (adapter_) adapter_->forward(ctx, layer_, 0, x, h);
    ops::matmul_forward({y, h, p.params[1], {}}, ctx.stream);
    if (adapter_) adapter_->forward(ctx, layer_, 5, h, y);
    ops::add({y, y, x}, ctx.stream);
  }
  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) override {
    const int64_t n = ctx.rows();
    char* cur = static_cast<char*>(saved_.data());
    const TensorView h = carve(cur, ctx.dtype, {n, C_});
    char* sc = static_cast<char*>(scratch);
    const TensorView d_h = carve(sc, ctx.dtype, {n, C_});
    const TensorView x = io.x.reshape({n, C_}), dy = io.dy.reshape({n, C_}), dx = io.dx.reshape({n, C_});
    ops::matmul_backward({d_h, p.grads[1], {}, dy, h, p.params[1]}, ctx.stream);
    if (adapter_) adapter_->backward(ctx, layer_, 5, h, dy, d_h);
    ops::matmul_backward({dx, p.grads[0], {}, d_h, x, p.params[0]}, ctx.stream);
    if (adapter_) adapter_->backward(ctx, layer_, 0, x, d_h, dx);
    ops::add({dx, dx, dy}, ctx.stream);
  }

 private:
  int64_t C_;
  int layer_;
  std::vector<AdapterSite> sites_;
  LinearAdapter* adapter_ = nullptr;
  Buffer saved_;
};

std::unique_ptr<Model> two_linear_model(const ModelConfig& c, Precision p, uint64_t seed,
                                        std::vector<AdapterSite> sites = {{"in", "in.weight", 0}, {"out", "out.weight", 5}}) {
  std::vector<std::unique_ptr<Unit>> units;
  units.push_back(make_embedding_unit(c));
  for (int l = 0; l < int(c.n_layers); ++l) units.push_back(std::make_unique<TwoLinear>(c, l, sites));
  units.push_back(make_head_unit(c));
  return std::make_unique<Model>(c, std::move(units), cpu(), p, seed);
}

std::vector<uint8_t> bytes_of(const TensorView& t) {
  const auto* q = static_cast<const uint8_t*>(t.data);
  return std::vector<uint8_t>(q, q + t.nbytes());
}

void fill_b(Lora& lora, uint64_t seed) {  // nonzero B, so A's gradient is not zero
  num::RandomKey key{seed, 7, 7};
  uint64_t i = 0;
  for (const LoraTensor& t : lora.tensors())
    if (t.key.find("lora_B") != std::string::npos) {
      float* b = lora.tensor(t.key).ptr<float>();
      for (int64_t e = 0; e < t.numel(); ++e) b[e] = 0.1f * num::philox_normal(key, i++);
    }
}

}  // namespace

TEST_CASE("declared sites of a custom unit get adapters with finite-difference gradients", "[train][cpu][lora]") {
  ModelConfig c = tiny_config("gpt");
  auto m = two_linear_model(c, Precision::fp32, 3);
  LoraOptions lo;
  lo.sites = {"*"};
  lo.rank = 2;
  lo.alpha = 4.0f;
  lo.dropout = 0.2f;
  Lora lora(*m, lo);
  REQUIRE(lora.tensors().size() == size_t(4 * c.n_layers));
  CHECK(lora.tensors()[0].key == "two.0.in.lora_A.weight");
  CHECK(lora.tensors()[3].key == "two.0.out.lora_B.weight");
  CHECK(lora.num_parameters() == c.n_layers * 2 * 2 * (c.d_model + c.d_model));
  fill_b(lora, 11);
  RandomBatch batch(2, 5, c.vocab_size, 99);
  const StepKey key{1, 0, 0};
  lora.zero_grad();
  m->forward(batch.batch(), key, true);
  m->backward(1.0f);
  int checked = 0;
  for (const LoraTensor& t : lora.tensors()) {
    TensorView w = lora.tensor(t.key), g = lora.grad(t.key);
    for (int64_t k = 0; k < 3; ++k) {
      const int64_t i = (k * 7919 + 13) % w.numel();
      float* x = w.ptr<float>() + i;
      const float orig = *x, eps = 1e-2f;
      *x = orig + eps;
      const double up = m->forward(batch.batch(), key, true);  // same key: the same dropout masks
      *x = orig - eps;
      const double down = m->forward(batch.batch(), key, true);
      *x = orig;
      const double numeric = (up - down) / (2.0 * eps), analytic = g.ptr<float>()[i];
      INFO(t.key << "[" << i << "]: analytic " << analytic << ", numeric " << numeric);
      CHECK(std::fabs(analytic) > 1e-5);  // the probe sees a live gradient
      CHECK(std::fabs(numeric - analytic) <= 2e-3 + 5e-2 * std::fabs(analytic));
      ++checked;
    }
  }
  CHECK(checked == 12 * int(c.n_layers));
}

TEST_CASE("a custom unit's adapters start as the identity and train with the base frozen", "[train][cpu][lora]") {
  ModelConfig c = tiny_config("gpt");
  auto base = two_linear_model(c, Precision::bf16, 6), m = two_linear_model(c, Precision::bf16, 6);
  LoraOptions lo;
  lo.sites = {"out"};  // one of the two declared sites
  lo.rank = 4;
  lo.dropout = 0.1f;
  Lora lora(*m, lo);
  REQUIRE(lora.tensors().size() == size_t(2 * c.n_layers));
  for (const LoraTensor& t : lora.tensors()) CHECK(t.key.find(".out.lora_") != std::string::npos);
  RandomBatch batch(2, 12, c.vocab_size, 8);
  const float lb = base->forward(batch.batch(), StepKey{}, false), lt = m->forward(batch.batch(), StepKey{}, false);
  CHECK(std::memcmp(&lb, &lt, 4) == 0);

  std::vector<std::vector<uint8_t>> before;
  for (int u = 0; u < m->num_units(); ++u) before.push_back(bytes_of(m->unit_params(u)));
  TrainOptions o;
  o.adamw.lr = 5e-2f;
  o.adamw.weight_decay = 0.0f;
  o.schedule.kind = ScheduleKind::constant;
  o.clip_norm = 0.0f;
  Trainer t(*m, o);
  float first = 0, last = 0;
  for (int s = 0; s < 30; ++s) {
    const float loss = t.train_step({batch.batch()}).loss;
    if (s == 0) first = loss;
    last = loss;
  }
  INFO("loss " << first << " -> " << last);
  CHECK(last < first - 0.1f);
  for (int u = 0; u < m->num_units(); ++u) CHECK(bytes_of(m->unit_params(u)) == before[size_t(u)]);
  CHECK(t.memory().grads == lora.grad_bytes());

  // strata's own files: the sites travel in adapter_config.json, the keys round trip.
  const std::string dir = std::filesystem::temp_directory_path().string() + "/strata_lora_sites_" +
                          std::to_string(getpid());
  std::filesystem::remove_all(dir);
  lora.save(dir);
  const LoraOptions read = read_lora_options(dir);
  CHECK(read.sites == lo.sites);
  auto other = two_linear_model(c, Precision::bf16, 6);
  Lora loaded(*other, read);
  loaded.load(dir);
  CHECK(bytes_of(loaded.flat_params()) == bytes_of(lora.flat_params()));
  CHECK(other->forward(batch.batch(), StepKey{}, false) == m->forward(batch.batch(), StepKey{}, false));
  // merge folds the adapters into the custom unit's weights.
  const float unmerged = m->forward(batch.batch(), StepKey{}, false);
  lora.merge();
  CHECK(std::fabs(m->forward(batch.batch(), StepKey{}, false) - unmerged) < 2e-2f);
  std::filesystem::remove_all(dir);
}

TEST_CASE("LoRA on a custom unit: PEFT targets and unknown sites are refused by name", "[train][cpu][lora]") {
  ModelConfig c = tiny_config("gpt");
  auto m = two_linear_model(c, Precision::fp32, 1);
  LoraOptions lo;  // targets = qv: the built-in block's PEFT names
  CHECK_THROWS_WITH(Lora(*m, lo), Catch::Contains("unit 'two.0' is not a built-in block") &&
                                      Catch::Contains("LoraOptions::sites") && Catch::Contains("in, out"));
  lo.sites = {"out", "gate"};
  CHECK_THROWS_WITH(Lora(*m, lo), Catch::Contains("no unit of the model declares an adapter site 'gate'") &&
                                      Catch::Contains("declared: in, out"));
  CHECK(m->lora() == nullptr);  // nothing attached by a failed construction
  lo.sites = {"*"};
  auto dup = two_linear_model(c, Precision::fp32, 1, {{"in", "in.weight", 3}, {"out", "out.weight", 3}});
  CHECK_THROWS_WITH(Lora(*dup, lo), Catch::Contains("unit 'two.0' declares adapter site 'out' with id 3") &&
                                        Catch::Contains("unique within the unit"));
  auto bad = two_linear_model(c, Precision::fp32, 1, {{"in", "in.bias", 0}});
  CHECK_THROWS_WITH(Lora(*bad, lo), Catch::Contains("names parameter 'in.bias', which is not a 2-D (out, in) parameter"));
  // The built-in block declares its four sites: selected by name, in strata's names.
  Model gpt(c, cpu(), Precision::fp32, 1);
  lo.sites = {"fc"};
  Lora on_block(gpt, lo);
  REQUIRE(on_block.tensors().size() == size_t(2 * c.n_layers));
  CHECK(on_block.tensors()[0].key == "blocks.0.fc.lora_A.weight");
  CHECK(on_block.tensors()[1].shape == std::vector<int64_t>{c.d_mlp, lo.rank});
}
