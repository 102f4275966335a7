// The public unit API (strata/unit.h, strata/gradcheck.h): parameter roles, models
// composed from a unit list, and check_unit_gradients passing the built-in block and
// catching units whose backward breaks a rule.
#include <catch2/catch.hpp>
#include <cstring>

#include "strata/error.h"
#include "strata/gradcheck.h"
#include "strata/ops.h"
#include "strata/train.h"
#include "strata/unit.h"
#include "train_support.h"

namespace strata::test {
namespace {

// A unit that runs the built-in block under its own name, then plants a fault.
enum class Fault { none, scaled_dx, flipped_dx, accumulated_dx, assigned_grads, flipped_weight_grad, scaled_norm_grad, allocates };

class FaultyBlock final : public Unit {
 public:
  FaultyBlock(const ModelConfig& c, int layer, Fault fault)
      : inner_(make_block_unit(c, layer)), fault_(fault), layer_(layer), C_(c.d_model) {}
  std::string name() const override { return "custom." + std::to_string(layer_); }
  std::vector<ParamSpec> param_specs() const override { return inner_->param_specs(); }
  void reserve(Device& device, DType dtype, int64_t B, int64_t T) override {
    inner_->reserve(device, dtype, B, T);
    if (fault_ == Fault::accumulated_dx) own_dx_ = Buffer(device, carve_bytes(dtype, B * T * C_), "own dx");
  }
  void set_recompute(Recompute mode) override { inner_->set_recompute(mode); }
  size_t transient_bytes(DType dtype, int64_t B, int64_t T) const override {
    return inner_->transient_bytes(dtype, B, T);
  }
  size_t scratch_bytes(DType dtype, int64_t rows) const override { return inner_->scratch_bytes(dtype, rows); }
  void forward(const UnitContext& ctx, const UnitParams& p, UnitIO& io) override {
    if (fault_ == Fault::allocates) Buffer scratch(ctx.stream.device(), 4096, "allocated in forward");
    inner_->forward(ctx, p, io);
  }
  void backward(const UnitContext& ctx, const UnitParams& p, UnitIO& io, void* scratch) override {
    Stream& s = ctx.stream;
    if (fault_ == Fault::assigned_grads)  // "=" instead of "+=": drops what was accumulated
      for (const TensorView& g : p.grads)
        if (g.data) ops::fill_zero(g, s);
    UnitIO inner_io = io;
    TensorView own;
    if (fault_ == Fault::accumulated_dx) {
      own = TensorView(own_dx_.data(), io.dx.dtype, {ctx.B, ctx.T, C_}, io.dx.device);
      inner_io.dx = own;
    }
    inner_->backward(ctx, p, inner_io, scratch);
    if (fault_ == Fault::scaled_dx) ops::scale({io.dx, io.dx, 1.02f}, s);
    if (fault_ == Fault::flipped_dx) ops::scale({io.dx, io.dx, -1.0f}, s);
    if (fault_ == Fault::accumulated_dx) ops::accumulate({io.dx, own}, s);  // dx += instead of dx =
    if (fault_ == Fault::scaled_norm_grad) ops::scale({p.grads[0], p.grads[0], 1.2f}, s);  // ln_1.weight
    if (fault_ == Fault::flipped_weight_grad) ops::scale({p.grads[2], p.grads[2], -1.0f}, s);  // attn.qkv.weight
  }

 private:
  std::unique_ptr<Unit> inner_;
  Fault fault_;
  int layer_;
  int64_t C_;
  Buffer own_dx_;
};

bool mentions(const UnitGradCheckReport& r, const std::string& what) {
  for (const std::string& f : r.failures)
    if (f.find(what) != std::string::npos) return true;
  return false;
}

}  // namespace

TEST_CASE("check_unit_gradients passes the built-in block in every recompute mode", "[train][cpu]") {
  for (const char* arch : {"gpt", "llama"})
    for (Recompute mode : {Recompute::none, Recompute::selective, Recompute::full}) {
      const ModelConfig c = tiny_config(arch);
      auto block = make_block_unit(c, 0);
      block->set_recompute(mode);
      const UnitGradCheckReport r = check_unit_gradients(*block, c, cpu());
      INFO(arch << " " << recompute_name(mode) << "\n" << r.str());
      CHECK(r.ok());
      CHECK(r.tensors.size() == 1 + (std::string(arch) == "gpt" ? 12 : 6));  // x and every parameter present
    }
}

TEST_CASE("check_unit_gradients catches a backward that breaks the contract", "[train][cpu]") {
  const ModelConfig c = tiny_config("gpt");
  auto run = [&](Fault f) {
    FaultyBlock unit(c, 0, f);
    return check_unit_gradients(unit, c, cpu());
  };
  const UnitGradCheckReport clean = run(Fault::none);
  INFO(clean.str());
  CHECK(clean.ok());

  const UnitGradCheckReport scaled = run(Fault::scaled_dx);
  CHECK(mentions(scaled, "gradient of x disagrees"));
  const UnitGradCheckReport flipped = run(Fault::flipped_dx);
  CHECK(mentions(flipped, "gradient of x disagrees"));
  CHECK(mentions(flipped, "wrong sign"));
  const UnitGradCheckReport accumulated = run(Fault::accumulated_dx);
  CHECK(mentions(accumulated, "activation gradients are assigned"));
  const UnitGradCheckReport assigned = run(Fault::assigned_grads);
  CHECK(mentions(assigned, "parameter gradients accumulate"));
  const UnitGradCheckReport weight = run(Fault::flipped_weight_grad);
  CHECK(mentions(weight, "gradient of attn.qkv.weight disagrees"));
  CHECK_FALSE(mentions(weight, "gradient of x"));
  // The smallest gradients (a norm's, under the residual) are held above the noise floor.
  const UnitGradCheckReport norm = run(Fault::scaled_norm_grad);
  CHECK(mentions(norm, "gradient of ln_1.weight disagrees"));
  const UnitGradCheckReport allocates = run(Fault::allocates);
  CHECK(mentions(allocates, "allocated from the device arena"));
  CHECK(allocates.failures.size() == 1);
}

TEST_CASE("check_unit_gradients refuses what it cannot drive", "[train][cpu]") {
  ModelConfig c = tiny_config("gpt");
  auto head = make_head_unit(c);  // tied: borrows the embedding's table
  CHECK_THROWS_WITH(check_unit_gradients(*head, c, cpu()), Catch::Contains("borrows embedding.wte.weight"));
  auto block = make_block_unit(c, 0);
  UnitGradCheckOptions o;
  o.T = c.max_seq + 1;
  CHECK_THROWS_WITH(check_unit_gradients(*block, c, cpu(), o), Catch::Contains("T <= max_seq"));
}

TEST_CASE("parameters carry roles, and weight decay follows the role", "[train][cpu]") {
  const ModelConfig c = tiny_config("gpt");
  Model m(c, cpu(), Precision::fp32, 1);
  auto role_of = [&](const std::string& name) {
    for (const ParamInfo& p : m.parameters())
      if (p.name == name) return p.role;
    FAIL("no parameter " << name);
    return ParamRole::matrix;
  };
  CHECK(role_of("embedding.wte.weight") == ParamRole::embedding);
  CHECK(role_of("embedding.wpe.weight") == ParamRole::embedding);
  CHECK(role_of("blocks.1.ln_2.weight") == ParamRole::norm);
  CHECK(role_of("blocks.1.ln_2.bias") == ParamRole::bias);
  CHECK(role_of("blocks.0.mlp.fc.weight") == ParamRole::matrix);
  CHECK(role_of("head.ln_f.weight") == ParamRole::norm);

  // By role, not by unit position: a matrix in unit 0 decays, an embedding elsewhere not.
  AdamWOptions o;
  const ParamInfo matrix0{"first.proj", 0, 0, {4, 4}, ParamRole::matrix};
  const ParamInfo embedding3{"third.table", 3, 0, {4, 4}, ParamRole::embedding};
  const ParamInfo norm3{"third.norm", 3, 0, {4}, ParamRole::norm};
  CHECK(adamw_decays(o, matrix0));
  CHECK_FALSE(adamw_decays(o, embedding3));
  CHECK_FALSE(adamw_decays(o, norm3));
  o.decay_embeddings = true;
  CHECK(adamw_decays(o, embedding3));
  CHECK_FALSE(adamw_decays(o, norm3));
  o.decay_norms_and_biases = true;
  CHECK(adamw_decays(o, norm3));
}

TEST_CASE("a model composed from a unit list with a user's unit equals the built-in one", "[train][cpu]") {
  for (const char* arch : {"gpt", "llama"}) {
    const ModelConfig c = tiny_config(arch);
    Model builtin(c, cpu(), Precision::fp32, 7);
    std::vector<std::unique_ptr<Unit>> units;
    units.push_back(make_embedding_unit(c));
    for (int l = 0; l < int(c.n_layers); ++l) units.push_back(std::make_unique<FaultyBlock>(c, l, Fault::none));
    units.push_back(make_head_unit(c));
    Model composed(c, std::move(units), cpu(), Precision::fp32, 7);
    CHECK(composed.unit_name(1) == "custom.0");
    CHECK(composed.parameter("custom.1.attn.qkv.weight").numel() == builtin.parameter("blocks.1.attn.qkv.weight").numel());

    RandomBatch batch(2, 6, c.vocab_size, 3);
    const float a = builtin.forward(batch.batch(), StepKey{1, 0, 0}, true);
    const float b = composed.forward(batch.batch(), StepKey{1, 0, 0}, true);
    CHECK(std::memcmp(&a, &b, 4) == 0);
    builtin.zero_grad();
    composed.zero_grad();
    builtin.backward(1.0f);
    composed.backward(1.0f);
    for (int u = 0; u < builtin.num_units(); ++u)
      expect_bitwise("unit " + std::to_string(u) + " gradients", copy_to_host_f32(composed.unit_grads(u)),
                     copy_to_host_f32(builtin.unit_grads(u)));
  }
}

TEST_CASE("a bad unit list is rejected with what to fix", "[train][cpu]") {
  const ModelConfig c = tiny_config("gpt");
  auto list = [&](int blocks, bool duplicate, bool null_unit) {
    std::vector<std::unique_ptr<Unit>> u;
    u.push_back(make_embedding_unit(c));
    for (int l = 0; l < blocks; ++l) u.push_back(make_block_unit(c, duplicate ? 0 : l));
    if (null_unit) u.back().reset();
    u.push_back(make_head_unit(c));
    return u;
  };
  CHECK_THROWS_WITH(Model(c, list(3, false, false), cpu(), Precision::fp32, 1),
                    Catch::Contains("config.n_layers = 2") && Catch::Contains("set n_layers to 3"));
  CHECK_THROWS_WITH(Model(c, list(2, true, false), cpu(), Precision::fp32, 1),
                    Catch::Contains("both named 'blocks.0'"));
  CHECK_THROWS_WITH(Model(c, list(2, false, true), cpu(), Precision::fp32, 1), Catch::Contains("unit 2 is null"));
  CHECK_THROWS_WITH(Model(c, std::vector<std::unique_ptr<Unit>>{}, cpu(), Precision::fp32, 1),
                    Catch::Contains("a model needs a first unit"));
  const size_t live = cpu().arena().bytes_live();
  CHECK_THROWS(Model(c, list(3, false, false), cpu(), Precision::fp32, 1));
  CHECK(cpu().arena().bytes_live() == live);  // nothing was laid out
}

}  // namespace strata::test
