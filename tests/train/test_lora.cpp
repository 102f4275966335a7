// LoRA: adapter gradients against finite differences, zero-init identity with the
// base, a bitwise-frozen base, merge/unmerge, accumulation and recompute, and PEFT
// files (keys, shapes, config, round trip). The frozen base behind a ParamStore is
// tested with a staging store here; the real offload store (host/NVMe) in
// tests/offload/test_offload_lora.cpp.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "lib/model/store.h"
#include "ops.h"
#include "strata/strata.h"
#include "support/host_tensor.h"
#include "train_support.h"

using namespace strata;
using namespace strata::test;

namespace {

std::vector<uint8_t> bytes_of(const TensorView& t) {
  const auto* p = static_cast<const uint8_t*>(t.data);
  return std::vector<uint8_t>(p, p + t.nbytes());
}

std::vector<std::vector<uint8_t>> base_bytes(const Model& m) {
  std::vector<std::vector<uint8_t>> out;
  for (int u = 0; u < m.num_units(); ++u) out.push_back(bytes_of(m.unit_params(u)));
  return out;
}

std::vector<float> to_f32(const TensorView& t) {
  std::vector<float> out(size_t(t.numel()));
  ops::cast({TensorView(out.data(), DType::f32, {t.numel()}, &cpu()), t.reshape({t.numel()})}, cpu().stream());
  return out;
}

// Fills every B (live rows only, so the masks stay meaningful) with small values.
void randomise_b(Lora& lora, uint64_t seed) {
  num::RandomKey key{seed, 7, 7};
  uint64_t i = 0;
  for (const LoraTensor& t : lora.tensors()) {
    if (t.key.find("lora_B") == std::string::npos) continue;
    TensorView b = lora.tensor(t.key);
    std::vector<float> host = to_f32(b);
    const int64_t r = b.shape[1];
    for (int64_t e = 0; e < b.numel(); ++e) {
      bool dead = false;  // rows another module owns stay zero (their gradient is masked)
      for (auto [r0, r1] : t.dead_rows) dead = dead || (e / r >= r0 && e / r < r1);
      if (!dead) host[size_t(e)] = 0.05f * num::philox_normal(key, i++);
    }
    ops::cast({b.reshape({b.numel()}), TensorView(host.data(), DType::f32, {b.numel()}, &cpu())}, cpu().stream());
  }
}

// Stands in for a slower tier: each unit's parameters live in the store's own host
// copy and are staged into a fresh buffer per acquire. A frozen base must never be
// asked for gradients, and must come back from every use unchanged.
class StagingStore final : public ParamStore {
 public:
  explicit StagingStore(const Model& m) {
    for (int u = 0; u < m.num_units(); ++u) {
      const TensorView p = m.unit_params(u);
      home_.emplace_back(p.nbytes() / 4 + 1);
      std::memcpy(home_.back().data(), p.data, p.nbytes());
      bytes_.push_back(p.nbytes());
    }
    staged_.resize(home_.size());
  }
  void* acquire_params(int u) override {
    staged_[size_t(u)] = home_[size_t(u)];
    ++param_requests;
    return staged_[size_t(u)].data();
  }
  void release_params(int u) override {
    changed = changed || std::memcmp(staged_[size_t(u)].data(), home_[size_t(u)].data(), bytes_[size_t(u)]) != 0;
    staged_[size_t(u)].clear();
  }
  void* acquire_grads(int) override {
    ++grad_requests;
    return nullptr;
  }
  void release_grads(int) override { ++grad_requests; }
  int64_t param_requests = 0, grad_requests = 0;
  bool changed = false;

 private:
  std::vector<std::vector<float>> home_, staged_;  // float: 4-byte aligned storage for any dtype
  std::vector<size_t> bytes_;
};

TrainOptions lora_train_options(float lr = 1e-2f) {
  TrainOptions o;
  o.adamw.lr = lr;
  o.adamw.weight_decay = 0.0f;
  o.schedule.kind = ScheduleKind::constant;
  o.clip_norm = 0.0f;
  return o;
}

std::string io_read(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::string temp_dir(const std::string& name) {
  std::string d = std::filesystem::temp_directory_path().string() + "/strata_lora_" + name + "_" +
                  std::to_string(getpid());
  std::filesystem::remove_all(d);
  return d;
}

}  // namespace

TEST_CASE("LoRA A and B gradients match finite differences", "[train][cpu][lora]") {
  for (const char* arch : {"gpt", "llama"})
    for (LoraTargets targets : {LoraTargets::query_value, LoraTargets::attention, LoraTargets::all_linear}) {
      ModelConfig c = tiny_config(arch);
      Model m(c, cpu(), Precision::fp32, 3);
      LoraOptions lo;
      lo.targets = targets;
      lo.rank = 3;
      lo.alpha = 6.0f;
      lo.dropout = 0.2f;
      lo.seed = 5;
      Lora lora(m, lo);
      randomise_b(lora, 11);  // with B = 0 the gradient of A is zero
      RandomBatch batch(2, 5, c.vocab_size, 99);
      const StepKey key{1, 0, 0};
      lora.zero_grad();
      m.forward(batch.batch(), key, true);
      m.backward(1.0f);
      for (const LoraTensor& t : lora.tensors()) {
        TensorView w = lora.tensor(t.key), g = lora.grad(t.key);
        for (int64_t k = 0; k < 3; ++k) {
          int64_t i = (k * 7919 + 13) % w.numel();
          bool dead = false;  // masked rows: no gradient by design
          for (auto [r0, r1] : t.dead_rows) dead = dead || (i / w.shape[1] >= r0 && i / w.shape[1] < r1);
          if (dead) continue;
          float* x = w.ptr<float>() + i;
          const float orig = *x, eps = 1e-2f;
          *x = orig + eps;
          double up = m.forward(batch.batch(), key, true);  // same key: the same dropout masks
          *x = orig - eps;
          double down = m.forward(batch.batch(), key, true);
          *x = orig;
          double numeric = (up - down) / (2.0 * eps);
          double analytic = g.ptr<float>()[i];
          INFO(arch << " " << lora_targets_name(targets) << " " << t.key << "[" << i << "]: analytic " << analytic
                    << ", numeric " << numeric);
          CHECK(std::fabs(numeric - analytic) <= 2e-3 + 5e-2 * std::fabs(analytic));
        }
      }
      // The base holds no gradients at all.
      CHECK_THROWS(m.unit_grads(1));
    }
}

TEST_CASE("zero-initialised adapters leave the base's outputs bitwise unchanged", "[train][cpu][lora]") {
  for (const char* arch : {"gpt", "llama"})
    for (Precision p : {Precision::fp32, Precision::bf16}) {
      ModelConfig c = tiny_config(arch);
      Model base(c, cpu(), p, 4), tuned(c, cpu(), p, 4);
      LoraOptions lo;
      lo.targets = LoraTargets::all_linear;
      Lora lora(tuned, lo);
      RandomBatch batch(3, 7, c.vocab_size, 5);
      const float lb = base.forward(batch.batch(), StepKey{}, false), lt = tuned.forward(batch.batch(), StepKey{}, false);
      CHECK(std::memcmp(&lb, &lt, 4) == 0);
      std::vector<float> gb = base.last_logits(batch.batch().inputs), gt = tuned.last_logits(batch.batch().inputs);
      REQUIRE(gb.size() == gt.size());
      CHECK(std::memcmp(gb.data(), gt.data(), gb.size() * 4) == 0);
      // A is Kaiming-uniform: nonzero, within 1/sqrt(in).
      TensorView a = lora.tensor(lora.tensors()[0].key);
      std::vector<float> av = to_f32(a);
      float amax = 0;
      for (float x : av) amax = std::max(amax, std::fabs(x));
      CHECK(amax > 0.5f / std::sqrt(float(c.d_model)));
      CHECK(amax <= 1.0f / std::sqrt(float(c.d_model)) * 1.01f);
    }
}

TEST_CASE("training moves the adapters only: the base is bitwise unchanged", "[train][cpu][lora]") {
  for (const char* arch : {"gpt", "llama"}) {
    ModelConfig c = tiny_config(arch);
    Model m(c, cpu(), Precision::bf16, 6);
    LoraOptions lo;
    lo.rank = 4;
    lo.dropout = 0.1f;
    lo.targets = std::string(arch) == "gpt" ? LoraTargets::query_value : LoraTargets::all_linear;
    Lora lora(m, lo);
    const auto before = base_bytes(m);
    const auto lora_before = bytes_of(lora.flat_params());
    Trainer t(m, lora_train_options(5e-2f));
    RandomBatch batch(2, 12, c.vocab_size, 8);
    float first = 0, last = 0;
    StepReport r;
    for (int s = 0; s < 40; ++s) {
      r = t.train_step({batch.batch()});
      if (getenv("LORA_DEBUG")) printf("%d %f %f\n", s, r.loss, r.grad_norm);
      if (s == 0) first = r.loss;
      last = r.loss;
    }
    INFO(arch << ": loss " << first << " -> " << last);
    CHECK(last < first - 0.05f);  // a random base learns slowly through q and v alone
    CHECK(base_bytes(m) == before);
    CHECK(bytes_of(lora.flat_params()) != lora_before);
    // Memory: the base has no gradients and no optimizer state.
    size_t base_numel = 0;
    for (int u = 0; u < m.num_units(); ++u) base_numel += size_t(m.unit_numel(u));
    ZeroMemory mem = t.memory();
    CHECK(mem.grads == lora.grad_bytes());
    CHECK(mem.optimizer == lora.optimizer_bytes());
    CHECK(r.frozen_bytes_saved == base_numel * 16);
    CHECK_THROWS(t.optimizer());
    {  // a Trainer made before the Lora holds base optimizer state: refused with a clear error
      Model late(c, cpu(), Precision::bf16, 6);
      Trainer early(late, lora_train_options());
      Lora attached(late, lo);
      CHECK_THROWS_WITH(early.forward_backward(batch.batch()), Catch::Contains("make the Trainer after the Lora"));
    }
    // GPT-2 q+v on the fused c_attn: the k rows of B never move.
    if (std::string(arch) == "gpt") {
      TensorView b = lora.tensor("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight");
      std::vector<float> bv = to_f32(b);
      const int64_t C = c.d_model, r4 = lo.rank;
      bool k_zero = true, q_moved = false;
      for (int64_t i = 0; i < 3 * C * r4; ++i) {
        const bool k_row = i / r4 >= C && i / r4 < 2 * C;
        if (k_row) k_zero = k_zero && bv[size_t(i)] == 0.0f;
        else q_moved = q_moved || bv[size_t(i)] != 0.0f;
      }
      CHECK(k_zero);
      CHECK(q_moved);
    }
  }
}

TEST_CASE("a frozen base served by a ParamStore is never asked for gradients", "[train][cpu][lora]") {
  // The seam offload uses (host or NVMe tiers), with a minimal store; the offload
  // store itself is tested in tests/offload/test_offload_lora.cpp.
  ModelConfig c = tiny_config("gpt");
  auto train = [&](bool with_store, StagingStore** out_store) {
    auto m = std::make_unique<Model>(c, cpu(), Precision::bf16, 8);
    LoraOptions lo;
    lo.targets = LoraTargets::all_linear;
    auto lora = std::make_unique<Lora>(*m, lo);
    StagingStore* store = nullptr;
    if (with_store) {
      store = new StagingStore(*m);
      m->set_store(store);
      m->release_resident_state(true, false);
    }
    Trainer t(*m, lora_train_options());
    RandomBatch batch(2, 10, c.vocab_size, 5);
    std::vector<float> losses;
    for (int s = 0; s < 4; ++s) losses.push_back(t.train_step({batch.batch()}).loss);
    losses.push_back(t.evaluate(batch.batch()));
    std::vector<float> w = to_f32(lora->flat_params());
    losses.insert(losses.end(), w.begin(), w.end());
    *out_store = store;
    return losses;
  };
  StagingStore* none = nullptr;
  StagingStore* store = nullptr;
  const std::vector<float> resident = train(false, &none);
  const std::vector<float> staged = train(true, &store);
  std::unique_ptr<StagingStore> owned(store);
  REQUIRE(store);
  CHECK(store->param_requests > 0);
  CHECK(store->grad_requests == 0);
  CHECK(!store->changed);
  REQUIRE(staged.size() == resident.size());
  CHECK(std::memcmp(staged.data(), resident.data(), staged.size() * 4) == 0);
}

TEST_CASE("merged weights give the adapters' forward; unmerge restores the base", "[train][cpu][lora]") {
  for (const char* arch : {"gpt", "llama"})
    for (Precision p : {Precision::fp32, Precision::bf16}) {
      ModelConfig c = tiny_config(arch);
      Model m(c, cpu(), p, 12);
      LoraOptions lo;
      lo.targets = LoraTargets::all_linear;
      lo.alpha = 16.0f;
      Lora lora(m, lo);
      randomise_b(lora, 3);
      const auto before = base_bytes(m);
      RandomBatch batch(2, 9, c.vocab_size, 31);
      const std::vector<float> adapter = m.last_logits(batch.batch().inputs);
      const float adapter_loss = m.forward(batch.batch(), StepKey{}, false);
      lora.merge();
      CHECK_THROWS_WITH(lora.merge(), Catch::Contains("already merged"));
      const std::vector<float> merged = m.last_logits(batch.batch().inputs);
      const float merged_loss = m.forward(batch.batch(), StepKey{}, false);
      const double tol = p == Precision::fp32 ? 1e-4 : 6e-2;
      double worst = 0, spread = 0;
      for (size_t i = 0; i < adapter.size(); ++i) {
        worst = std::max(worst, double(std::fabs(adapter[i] - merged[i])));
        spread = std::max(spread, double(std::fabs(adapter[i])));
      }
      INFO(arch << " " << precision_name(p) << ": max |adapter - merged| logit " << worst << " of " << spread);
      CHECK(worst <= tol * std::max(1.0, spread));
      CHECK(merged_loss == Approx(adapter_loss).epsilon(p == Precision::fp32 ? 1e-5 : 1e-2));
      lora.unmerge();
      const auto after = base_bytes(m);
      if (p == Precision::fp32) {
        // f32: W + d - d is W up to one rounding per element.
        for (int u = 0; u < m.num_units(); ++u) {
          std::vector<float> w0(before[size_t(u)].size() / 4), w1(w0.size());
          std::memcpy(w0.data(), before[size_t(u)].data(), w0.size() * 4);
          std::memcpy(w1.data(), after[size_t(u)].data(), w1.size() * 4);
          for (size_t i = 0; i < w0.size(); ++i) REQUIRE(std::fabs(w0[i] - w1[i]) <= 1e-6f);
        }
      }
      const std::vector<float> again = m.last_logits(batch.batch().inputs);
      double back = 0;
      for (size_t i = 0; i < adapter.size(); ++i) back = std::max(back, double(std::fabs(adapter[i] - again[i])));
      CHECK(back <= tol * std::max(1.0, spread));
    }
}

TEST_CASE("LoRA with accumulation and recompute", "[train][cpu][lora]") {
  for (const char* arch : {"gpt", "llama"}) {
    ModelConfig c = tiny_config(arch);
    c.n_layers = 3;
    c.dropout_attention = 0.1f;
    c.dropout_residual = 0.1f;
    auto run = [&](const RecomputePolicy& policy, int accum, float lora_dropout) {
      Model m(c, cpu(), Precision::fp32, 21);
      m.set_recompute(policy);
      LoraOptions lo;
      lo.targets = LoraTargets::all_linear;
      lo.dropout = lora_dropout;
      Lora lora(m, lo);
      TrainOptions o = lora_train_options(1e-3f);
      o.grad_accum = accum;
      o.seed = 77;
      Trainer t(m, o);
      RandomBatch full(4, 10, c.vocab_size, 40);
      std::vector<float> losses, weights;
      for (int s = 0; s < 3; ++s) {
        std::vector<RandomBatch> parts;
        for (int k = 0; k < accum; ++k) parts.push_back(full.rows(k * 4 / accum, (k + 1) * 4 / accum));
        std::vector<Batch> micro;
        for (auto& p : parts) micro.push_back(p.batch());
        StepReport r = t.train_step(micro);
        losses.push_back(r.loss);
        losses.push_back(r.grad_norm);
      }
      weights = to_f32(lora.flat_params());
      return std::make_pair(losses, weights);
    };
    // Recompute: bitwise, with model and adapter dropout and accumulation.
    const auto plain = run(RecomputePolicy::none(c.n_layers), 2, 0.1f);
    for (const char* spec : {"selective", "full", "every-2"}) {
      INFO(arch << " recompute " << spec);
      const auto r = run(RecomputePolicy::parse(spec, c.n_layers), 2, 0.1f);
      REQUIRE(r.first.size() == plain.first.size());
      REQUIRE(r.second.size() == plain.second.size());
      CHECK(std::memcmp(r.first.data(), plain.first.data(), r.first.size() * 4) == 0);
      CHECK(std::memcmp(r.second.data(), plain.second.data(), r.second.size() * 4) == 0);
    }
    // Accumulation: without dropout (its masks depend on the split), 2 micro-batches
    // of 2 rows equal one batch of 4 up to f32 summation order.
    c.dropout_attention = c.dropout_residual = 0.0f;
    const auto one = run(RecomputePolicy::none(c.n_layers), 1, 0.0f);
    const auto two = run(RecomputePolicy::none(c.n_layers), 2, 0.0f);
    for (size_t i = 0; i < one.first.size(); ++i) CHECK(two.first[i] == Approx(one.first[i]).epsilon(1e-4));
    double max_diff = 0;
    for (size_t i = 0; i < one.second.size(); ++i)
      max_diff = std::max(max_diff, double(std::fabs(one.second[i] - two.second[i])));
    INFO(arch << ": max adapter difference " << max_diff);
    CHECK(max_diff < 2e-6);
    CHECK(one.second == run(RecomputePolicy::none(c.n_layers), 1, 0.0f).second);  // deterministic
  }
}

TEST_CASE("adapters save as PEFT files and load back", "[train][cpu][lora]") {
  for (const char* arch : {"gpt", "llama"}) {
    ModelConfig c = tiny_config(arch);
    Model m(c, cpu(), Precision::bf16, 2);
    LoraOptions lo;
    lo.rank = 4;
    lo.alpha = 8.0f;
    Lora lora(m, lo);
    Trainer t(m, lora_train_options());
    RandomBatch batch(2, 8, c.vocab_size, 3);
    for (int s = 0; s < 5; ++s) t.train_step({batch.batch()});
    const std::string dir = temp_dir(arch);
    lora.save(dir, "test-base");

    SafetensorsReader file(dir + "/adapter_model.safetensors");
    const bool gpt = std::string(arch) == "gpt";
    const int64_t C = c.d_model;
    std::vector<std::string> modules = gpt ? std::vector<std::string>{"transformer.h.1.attn.c_attn"}
                                           : std::vector<std::string>{"model.layers.1.self_attn.q_proj",
                                                                      "model.layers.1.self_attn.v_proj"};
    for (const std::string& mod : modules) {
      const std::string k = "base_model.model." + mod;
      REQUIRE(file.find(k + ".lora_A.weight"));
      REQUIRE(file.find(k + ".lora_B.weight"));
      CHECK(file.entry(k + ".lora_A.weight").shape == std::vector<int64_t>{4, C});
      CHECK(file.entry(k + ".lora_B.weight").shape == std::vector<int64_t>{gpt ? 3 * C : C, 4});
      CHECK(file.entry(k + ".lora_A.weight").dtype == "F32");
    }
    CHECK(int64_t(file.tensors().size()) == 2 * c.n_layers * (gpt ? 1 : 2));
    CHECK(!file.find("base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"));
    const std::string cfg = io_read(dir + "/adapter_config.json");
    CHECK_THAT(cfg, Catch::Contains("\"peft_type\": \"LORA\"") && Catch::Contains("\"r\": 4") &&
                        Catch::Contains("\"lora_alpha\": 8") && Catch::Contains("test-base"));
    CHECK_THAT(cfg, Catch::Contains(gpt ? "\"c_attn\"" : "\"q_proj\", \"v_proj\""));

    Model fresh(c, cpu(), Precision::bf16, 2);
    Lora again(fresh, lo);
    again.load(dir);
    CHECK(bytes_of(again.flat_params()) == bytes_of(lora.flat_params()));
    const float l1 = m.forward(batch.batch(), StepKey{}, false), l2 = fresh.forward(batch.batch(), StepKey{}, false);
    CHECK(std::memcmp(&l1, &l2, 4) == 0);

    Model other(c, cpu(), Precision::bf16, 2);
    LoraOptions wrong = lo;
    wrong.rank = 2;
    Lora bad(other, wrong);
    CHECK_THROWS_WITH(bad.load(dir), Catch::Contains("r = 4") && Catch::Contains("rank 2"));
    LoraOptions all = lo;
    all.targets = LoraTargets::all_linear;
    Model other2(c, cpu(), Precision::bf16, 2);
    Lora missing(other2, all);
    CHECK_THROWS_WITH(missing.load(dir), Catch::Contains("has no tensor"));
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("read_lora_options gives back the options adapters were saved with", "[train][cpu][lora]") {
  ModelConfig c = tiny_config("gpt");
  Model m(c, cpu(), Precision::fp32, 2);
  LoraOptions lo;
  lo.targets = LoraTargets::attention;
  lo.rank = 3;
  lo.alpha = 12.0f;
  lo.dropout = 0.25f;
  Lora lora(m, lo);
  const std::string dir = temp_dir("options");
  lora.save(dir);
  LoraOptions back = read_lora_options(dir);
  CHECK(back.targets == lo.targets);
  CHECK(back.rank == 3);
  CHECK(back.alpha == 12.0f);
  CHECK(back.dropout == 0.25f);
  // A PEFT-written config has no strata_targets: its target_modules tell.
  auto peft = [&](const std::string& modules) {
    std::ofstream(dir + "/adapter_config.json")
        << "{\"peft_type\": \"LORA\", \"r\": 2, \"lora_alpha\": 4, \"target_modules\": [" << modules << "]}";
    return read_lora_options(dir);
  };
  CHECK(peft("\"c_attn\"").targets == LoraTargets::query_value);
  CHECK(peft("\"q_proj\", \"v_proj\"").targets == LoraTargets::query_value);
  CHECK(peft("\"attn.c_attn\", \"attn.c_proj\"").targets == LoraTargets::attention);
  CHECK(peft("\"c_attn\", \"c_proj\", \"c_fc\"").targets == LoraTargets::all_linear);
  CHECK(peft("\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\"").targets == LoraTargets::all_linear);
  CHECK(peft("\"c_attn\"").rank == 2);
  std::filesystem::remove(dir + "/adapter_config.json");
  CHECK_THROWS_WITH(read_lora_options(dir), Catch::Contains("adapter_config.json"));
  std::filesystem::remove_all(dir);
}
