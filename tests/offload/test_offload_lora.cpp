// LoRA on an offloaded frozen base (OffloadStore through the Trainer, CPU devices):
// with the base's params on host or NVMe, losses and adapters are bitwise those of a
// resident base (fp32, bf16 and fp16, accumulation, recompute, adapter dropout); the base
// comes back from its tier bitwise unchanged; nothing but the base's params is stored
// (no gradient or optimizer bytes, no NVMe space for them); the device arena stays
// under a budget smaller than the base; unsupported combinations fail clearly.
#include <catch2/catch.hpp>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "lib/model/store.h"
#include "nvme_test_dirs.h"
#include "offload/offload_store.h"
#include "strata/strata.h"
#include "../train/train_support.h"

using namespace strata;
using namespace strata::test;
using offload::Tier;

namespace {

constexpr int kSteps = 20, kAccum = 2;
constexpr int64_t kB = 2, kT = 8;

TrainOptions options() {
  TrainOptions o;
  o.grad_accum = kAccum;
  o.adamw.lr = 1e-2f;
  o.clip_norm = 0.5f;  // active: the adapters' norm must not see the base
  return o;
}

using Bytes = std::vector<uint8_t>;

// Each unit's working params as stored: from the model, or from the store's tier.
std::vector<Bytes> base_bytes(Model& m) {
  const size_t ds = dtype_size(precision_dtype(m.precision()));
  std::vector<Bytes> out;
  for (int u = 0; u < m.num_units(); ++u) {
    const size_t n = size_t(m.unit_numel(u)) * ds;
    ParamStore* store = m.store();
    const auto* p = static_cast<const uint8_t*>(store ? store->acquire_params(u) : m.unit_params(u).data);
    out.emplace_back(p, p + n);
    if (store) store->release_params(u);
  }
  return out;
}

Bytes bytes_of(const TensorView& t) {
  const auto* p = static_cast<const uint8_t*>(t.data);
  return Bytes(p, p + t.nbytes());
}

size_t base_param_bytes(const Model& m, bool rounded) {
  const size_t ds = dtype_size(precision_dtype(m.precision()));
  size_t total = 0;
  for (int u = 0; u < m.num_units(); ++u) {
    const size_t b = size_t(m.unit_numel(u)) * ds;
    total += rounded ? (b + offload::kBlockBytes - 1) / offload::kBlockBytes * offload::kBlockBytes : b;
  }
  return total;
}

// Bytes of the files this process holds open under `dir` (the swap files are
// unlinked once open, so only their descriptors tell their size).
uint64_t open_files_bytes(const std::string& dir) {
  uint64_t total = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    struct stat st {};
    if (!ec && target.rfind(dir + "/", 0) == 0 && ::stat(e.path().c_str(), &st) == 0) total += uint64_t(st.st_size);
  }
  return total;
}

struct Result {
  std::vector<float> losses;
  Bytes adapters;
};

// Resident base when `off` is null; else checks the tier's state along the way.
Result train(const ModelConfig& c, Precision p, LoraTargets targets, const offload::OffloadOptions* off) {
  Model m(c, cpu(), p, 5);
  m.set_recompute(RecomputePolicy::every_block(c.n_layers));
  LoraOptions lo;
  lo.targets = targets;
  lo.rank = 4;
  lo.dropout = 0.1f;  // masks replayed by recompute
  lo.seed = 3;
  Lora lora(m, lo);
  const std::vector<Bytes> before = base_bytes(m);
  std::unique_ptr<Trainer> t = off ? std::make_unique<Trainer>(m, options(), *off) : std::make_unique<Trainer>(m, options());
  Result r;
  StepReport rep;
  for (int s = 0; s < kSteps; ++s) {
    RandomBatch b0(kB, kT, c.vocab_size, 1000), b1(kB, kT, c.vocab_size, 1001);
    rep = t->train_step({b0.batch(), b1.batch()});
    r.losses.push_back(rep.loss);
    if (off && s == 0 && off->params == Tier::nvme) {  // only the base's params have swap space
      CHECK(open_files_bytes(off->nvme_paths[0]) == base_param_bytes(m, true));
    }
  }
  r.adapters = bytes_of(lora.flat_params());
  CHECK(base_bytes(m) == before);  // read back from its tier when offloaded
  const size_t per_param = p == Precision::fp32 ? 12 : 16;
  size_t numel = 0;
  for (int u = 0; u < m.num_units(); ++u) numel += size_t(m.unit_numel(u));
  CHECK(rep.frozen_bytes_saved == numel * per_param);
  const ZeroMemory mem = t->memory();
  CHECK(mem.grads == lora.grad_bytes());
  CHECK(mem.optimizer == lora.optimizer_bytes());
  if (off) CHECK(rep.nvme_bytes == (off->params == Tier::nvme ? base_param_bytes(m, false) : 0));
  return r;
}

offload::OffloadOptions placement(Tier params, const ScratchDir& dir) {
  offload::OffloadOptions o;
  o.params = params;
  // Asked for, but a frozen base has neither: nothing may be stored for them.
  o.grads = o.optimizer = Tier::nvme;
  if (params == Tier::nvme) o.nvme_paths = dir.paths();  // host: no NVMe path needed at all
  o.pinned_bytes = size_t(1) << 20;
  o.require_direct = accepts_direct_io(dir.paths()[0]);
  return o;
}

}  // namespace

TEST_CASE("LoRA on an offloaded frozen base trains bitwise like a resident base", "[offload][train][lora]") {
  ScratchDir dir(1);
  for (const char* arch : {"gpt", "llama"})
    for (Precision p : {Precision::fp32, Precision::bf16, Precision::fp16})
      for (LoraTargets targets : {LoraTargets::query_value, LoraTargets::all_linear}) {
        const ModelConfig c = tiny_config(arch);
        const Result ref = train(c, p, targets, nullptr);
        CHECK(ref.losses.back() < ref.losses.front());
        for (Tier tier : {Tier::host, Tier::nvme}) {
          INFO(arch << " " << precision_name(p) << " " << lora_targets_name(targets) << ", base on "
                    << offload::tier_name(tier));
          const offload::OffloadOptions o = placement(tier, dir);
          const Result r = train(c, p, targets, &o);
          CHECK(r.losses == ref.losses);
          CHECK(r.adapters == ref.adapters);
        }
      }
  CHECK(std::filesystem::is_empty(dir.paths()[0]));  // swap files vanish with the store
}

TEST_CASE("LoRA with the base on NVMe: the device arena stays under half the base", "[offload][train][lora]") {
  ScratchDir dir(1);
  ModelConfig c = tiny_config("gpt");
  c.n_layers = 16;
  c.d_model = 64;
  c.d_mlp = 512;
  c.n_heads = 4;
  c.vocab_size = 256;
  c.max_seq = 16;
  auto device = Device::cpu(0);
  Model m(c, *device, Precision::bf16, 3);
  m.set_recompute(RecomputePolicy::every_block(c.n_layers));
  LoraOptions lo;
  lo.rank = 4;  // resident adapter state (18 bytes per element in bf16) small beside the base
  Lora lora(m, lo);
  const size_t base = base_param_bytes(m, false);
  offload::OffloadOptions o = placement(Tier::nvme, dir);
  Trainer trainer(m, options(), o);
  device->arena().reset_high_water();
  std::vector<float> losses;
  for (int s = 0; s < 3; ++s) {
    RandomBatch b0(kB, 16, c.vocab_size, 7), b1(kB, 16, c.vocab_size, 70);
    std::vector<Batch> views;
    for (RandomBatch* b : {&b0, &b1})
      views.push_back(Batch{TensorView(b->inputs.data(), DType::i32, {b->B, b->T}, device.get()),
                            TensorView(b->targets.data(), DType::i32, {b->B, b->T}, device.get())});
    const StepReport r = trainer.train_step(views);
    losses.push_back(r.loss);
    CHECK(r.nvme_bytes == base);
    CHECK(r.nvme_read_gbps > 0);
    CHECK(r.nvme_write_gbps == 0);  // a frozen base is only read
    CHECK(r.pinned_bytes <= o.pinned_bytes);
  }
  INFO("device high-water " << device->arena().bytes_high_water() << " bytes, base " << base);
  CHECK(device->arena().bytes_high_water() <= base / 2);
  CHECK(losses.back() < losses.front());
}

TEST_CASE("LoRA with offload: unsupported combinations fail clearly", "[offload][train][lora]") {
  ScratchDir dir(1);
  const ModelConfig c = tiny_config("gpt");
  const offload::OffloadOptions o = placement(Tier::nvme, dir);
  RandomBatch b0(kB, kT, c.vocab_size, 1), b1(kB, kT, c.vocab_size, 2);
  SECTION("a Lora attached after the offloaded Trainer") {
    Model m(c, cpu(), Precision::bf16, 1);
    Trainer t(m, options(), o);  // stores gradients and AdamW state for the whole model
    Lora lora(m, LoraOptions{});
    REQUIRE_THROWS_WITH(t.forward_backward(b0.batch()), Catch::Contains("make the Trainer after the Lora"));
  }
  SECTION("merge rewrites the base in place: refused while it is offloaded") {
    Model m(c, cpu(), Precision::bf16, 1);
    Lora lora(m, LoraOptions{});
    Trainer t(m, options(), o);
    t.train_step({b0.batch(), b1.batch()});
    REQUIRE_THROWS_WITH(lora.merge(), Catch::Contains("Lora::merge") && Catch::Contains("parameter store"));
    CHECK(!lora.merged());
  }
  SECTION("a frozen base with no Lora") {
    Model m(c, cpu(), Precision::bf16, 1);
    m.freeze_base();
    REQUIRE_THROWS_WITH(Trainer(m, options(), o), Catch::Contains("no Lora is attached"));
  }
  SECTION("the base has no gradients to hand out") {
    Model m(c, cpu(), Precision::bf16, 1);
    Lora lora(m, LoraOptions{});
    Trainer t(m, options(), o);
    REQUIRE_THROWS_WITH(m.store()->acquire_grads(1), Catch::Contains("frozen base"));
  }
}
