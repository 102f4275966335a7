// Checkpoints of ZeRO with offload (each rank paging its shards to host or NVMe) on
// CPU devices: save at step N and resume on the same ranks equals the uninterrupted
// run bit for bit (losses, working params, master, m, v); the files are those of the
// same run without offload; and a single-device offloaded Trainer loads them with the
// same state as the ZeRO run had. A model built Init::deferred under ZeRO-3 (shards on
// the device, host or NVMe) trains bitwise as the resident one, also when it starts
// from a checkpoint's weights; stages 0-2 refuse it by name.
#include <catch2/catch.hpp>
#include <filesystem>

#include "checkpoint_support.h"
#include "strata/dist.h"

using namespace strata;
using namespace strata::test;

namespace {

constexpr int kRanks = 2;
constexpr int64_t kRows = 2;  // per rank; kAccum micro-batches of kT tokens (checkpoint_support.h)

TrainOptions options(int stage) {
  TrainOptions o;
  o.grad_accum = kAccum;
  o.adamw.lr = 1e-2f;
  o.clip_norm = 0.5f;
  o.zero_stage = stage;
  return o;
}

// The stage's shards on `tier` (optimizer always, gradients from stage 2, params at 3).
offload::OffloadOptions shards_on(int stage, Tier tier, const ScratchDir& dir) {
  offload::OffloadOptions o;
  o.optimizer = tier;
  o.grads = stage >= 2 ? tier : Tier::device;
  o.params = stage == 3 ? tier : Tier::device;
  o.nvme_paths = dir.paths();
  o.pinned_bytes = size_t(1) << 20;
  o.tile_elements = 2048;
  o.require_direct = accepts_direct_io(dir.paths()[0]);
  return o;
}

// Steps [first, last) on kRanks ranks, from `load` if given, saving to `save` after.
// The model is built `init` with `seed`; `scope` is what is taken from `load`.
State zero_run(const ModelConfig& c, Precision p, int stage, const offload::OffloadOptions* off, int first, int last,
               const std::string& load, const std::string& save, Model::Init init = Model::Init::resident,
               uint64_t seed = 5, LoadScope scope = LoadScope::resume) {
  std::vector<State> per_rank(kRanks);
  dist::run_ranks(kRanks, [&](int rank, dist::Comm& comm) {
    auto device = Device::cpu(rank);
    Model m(c, *device, p, seed, init);
    std::unique_ptr<Trainer> t = off ? std::make_unique<Trainer>(m, options(stage), comm, *off)
                                     : std::make_unique<Trainer>(m, options(stage), comm);
    if (!load.empty()) load_checkpoint(load, m, t.get(), scope);
    State& st = per_rank[size_t(rank)];
    for (int s = first; s < last; ++s) {
      std::vector<RandomBatch> mine;
      for (int k = 0; k < kAccum; ++k)
        mine.push_back(RandomBatch(kRanks * kRows, kT, c.vocab_size, 1000 + uint64_t(s * 10 + k))
                           .rows(rank * kRows, (rank + 1) * kRows));
      std::vector<Batch> views;
      for (RandomBatch& b : mine)
        views.push_back(Batch{TensorView(b.inputs.data(), DType::i32, {b.B, b.T}, device.get()),
                              TensorView(b.targets.data(), DType::i32, {b.B, b.T}, device.get())});
      append_bits(st.losses, {t->train_step(views).loss});
    }
    if (!save.empty()) save_checkpoint(save, m, t.get());
    append_state(*t, m.num_units(), st);  // gathers: every rank calls it
  });
  CHECK(per_rank[1].params == per_rank[0].params);
  return per_rank[0];
}

}  // namespace

TEST_CASE("ZeRO with offload saved at step N resumes bit for bit, in the files of ZeRO without offload",
          "[offload][checkpoint][dist]") {
  ScratchDir dir(2);
  const ModelConfig c = tiny_config("gpt");
  constexpr int N = 2, M = 2;
  for (Precision p : {Precision::fp32, Precision::bf16})
    for (int stage : {1, 3})
      for (Tier tier : {Tier::host, Tier::nvme}) {
        INFO(precision_name(p) << " stage " << stage << " shards on " << offload::tier_name(tier));
        const offload::OffloadOptions o = shards_on(stage, tier, dir);
        const std::string ckpt = dir.path() + "/zero", plain = dir.path() + "/plain";
        const State whole = zero_run(c, p, stage, &o, 0, N + M, "", "");
        const State first = zero_run(c, p, stage, &o, 0, N, "", ckpt);
        const State rest = zero_run(c, p, stage, &o, N, N + M, ckpt, "");
        CHECK(std::vector<uint32_t>(whole.losses.begin(), whole.losses.begin() + N) == first.losses);
        CHECK(std::vector<uint32_t>(whole.losses.begin() + N, whole.losses.end()) == rest.losses);
        CHECK(rest.params == whole.params);
        CHECK(rest.optimizer == whole.optimizer);
        zero_run(c, p, stage, nullptr, 0, N, "", plain);
        for (const char* file : {"model.safetensors", "optimizer.rank0.safetensors"}) {
          INFO(file);
          CHECK(file_bytes(ckpt + "/" + file) == file_bytes(plain + "/" + file));
        }
        // A single-device offloaded Trainer takes the ZeRO checkpoint whole.
        {
          ScratchDir swap(1);
          offload::OffloadOptions single = shards_on(3, Tier::nvme, swap);
          Model m(c, cpu(), p, 5);
          Trainer t(m, options(0), single);
          load_checkpoint(ckpt, m, &t);
          State st;
          append_state(t, m.num_units(), st);
          CHECK(st.params == first.params);
          CHECK(st.optimizer == first.optimizer);
        }
        std::filesystem::remove_all(ckpt);
        std::filesystem::remove_all(plain);
      }
}

TEST_CASE("a deferred model under ZeRO-3 is drawn shard by shard and trains as the resident one",
          "[offload][checkpoint][dist]") {
  ScratchDir dir(2);
  const ModelConfig c = tiny_config("llama");
  const std::string weights = dir.path() + "/weights";
  {
    Model source(c, cpu(), Precision::fp32, 81);
    save_checkpoint(weights, source, nullptr);
  }
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    const State resident = zero_run(c, p, 3, nullptr, 0, 3, "", "");
    const State from_weights = zero_run(c, p, 3, nullptr, 0, 3, weights, "", Model::Init::resident, 5, LoadScope::weights);
    for (Tier tier : {Tier::device, Tier::host, Tier::nvme}) {
      INFO(precision_name(p) << " shards on " << offload::tier_name(tier));
      const offload::OffloadOptions o = shards_on(3, tier, dir);
      const State deferred = zero_run(c, p, 3, &o, 0, 3, "", "", Model::Init::deferred);
      CHECK(deferred.losses == resident.losses);
      CHECK(deferred.params == resident.params);
      CHECK(deferred.optimizer == resident.optimizer);
      const State loaded = zero_run(c, p, 3, &o, 0, 3, weights, "", Model::Init::deferred, 6, LoadScope::weights);
      CHECK(loaded.losses == from_weights.losses);
      CHECK(loaded.params == from_weights.params);
      CHECK(loaded.losses != resident.losses);  // the weights came from the file
    }
  }
  std::vector<std::string> errors(kRanks);  // Catch's assertions stay on the test's thread
  dist::run_ranks(kRanks, [&](int rank, dist::Comm& comm) {
    auto device = Device::cpu(rank);
    Model m(c, *device, Precision::fp32, 5, Model::Init::deferred);
    try {
      Trainer t(m, options(2), comm);
    } catch (const Error& e) {
      errors[size_t(rank)] = e.what();
    }
  });
  for (const std::string& e : errors)
    CHECK_THAT(e, Catch::Contains("built Model::Init::deferred") && Catch::Contains("use stage 3"));
  Model m(c, cpu(), Precision::fp32, 5, Model::Init::deferred);
  CHECK_THROWS_WITH(Trainer(m, options(0)), Catch::Contains("give the Trainer offload options or a ZeRO-3"));
}
