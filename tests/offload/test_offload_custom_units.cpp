// A model composed from a program's own units (strata/unit.h) gets offload without the
// units knowing: with every tier on NVMe (and full recompute) it trains bit for bit
// like the same composed model resident, and like the built-in model it reproduces.
#include <catch2/catch.hpp>

#include <cstring>

#include "../train/train_support.h"
#include "nvme_test_dirs.h"
#include "strata/strata.h"

using namespace strata;
using namespace strata::test;
using offload::Tier;

namespace {

// A user's unit: the built-in block under the program's own name, through the public
// interface only (what the engine sees of any custom unit).
class UserBlock final : public Unit {
 public:
  UserBlock(const ModelConfig& c, int layer) : inner_(make_block_unit(c, layer)), layer_(layer) {}
  std::string name() const override { return "user." + std::to_string(layer_); }
  std::vector<ParamSpec> param_specs() const override { return inner_->param_specs(); }
  void reserve(Device& d, DType dt, int64_t B, int64_t T) override { inner_->reserve(d, dt, B, T); }
  void set_recompute(Recompute mode) override { inner_->set_recompute(mode); }
  size_t transient_bytes(DType dt, int64_t B, int64_t T) const override { return inner_->transient_bytes(dt, B, T); }
  size_t scratch_bytes(DType dt, int64_t rows) const override { return inner_->scratch_bytes(dt, rows); }
  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override { inner_->forward(ctx, p, io); }
  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* s) override {
    inner_->backward(ctx, p, io, s);
  }

 private:
  std::unique_ptr<Unit> inner_;
  int layer_;
};

struct Run {
  std::vector<float> losses;
  std::vector<std::vector<float>> weights;
};

Run train(const ModelConfig& c, bool composed, const offload::OffloadOptions* off) {
  std::vector<std::unique_ptr<Unit>> units;
  units.push_back(make_embedding_unit(c));
  for (int l = 0; l < int(c.n_layers); ++l)
    units.push_back(composed ? std::unique_ptr<Unit>(std::make_unique<UserBlock>(c, l)) : make_block_unit(c, l));
  units.push_back(make_head_unit(c));
  Model m(c, std::move(units), cpu(), Precision::bf16, 5);
  m.set_recompute(RecomputePolicy::every_block(c.n_layers));
  TrainOptions o;
  o.adamw.lr = 1e-2f;
  std::unique_ptr<Trainer> t = off ? std::make_unique<Trainer>(m, o, *off) : std::make_unique<Trainer>(m, o);
  Run r;
  for (int s = 0; s < 6; ++s) {
    RandomBatch b(2, 8, c.vocab_size, 1000);
    r.losses.push_back(t->train_step({b.batch()}).loss);
  }
  for (int u = 0; u < m.num_units(); ++u) r.weights.push_back(t->unit_parameters(u));
  return r;
}

}  // namespace

TEST_CASE("a model of user units offloaded to NVMe trains bitwise like it does resident", "[offload][train]") {
  ScratchDir dir(1);
  for (const char* arch : {"gpt", "llama"}) {
    INFO(arch);
    const ModelConfig c = tiny_config(arch);
    const Run builtin = train(c, false, nullptr);
    const Run resident = train(c, true, nullptr);
    const offload::OffloadOptions o = placement(Tier::nvme, Tier::nvme, Tier::nvme, dir);
    const Run nvme = train(c, true, &o);
    expect_bitwise("resident losses", resident.losses, builtin.losses);
    expect_bitwise("NVMe losses", nvme.losses, resident.losses);
    for (size_t u = 0; u < nvme.weights.size(); ++u)
      expect_bitwise("unit " + std::to_string(u) + " weights", nvme.weights[u], resident.weights[u]);
    CHECK(resident.losses.back() < resident.losses.front());
  }
  CHECK(dir.file_count() == 0);
}
