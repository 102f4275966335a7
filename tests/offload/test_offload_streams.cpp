// The OffloadStore's movement on streams (offload_store.cpp, "Streams") on CPU
// devices: reads run on the host_to_device worker stream and write-outs on the
// device_to_host one, ordered by events only. Under the ordering fuzz (each worker
// item delayed by a seeded 0-2 ms) every host and NVMe placement still trains bit for
// bit like the resident model, seed after seed: every consumer waits for the event
// of the copy it reads, and no buffer is reused before the copy that read it is done.
#include <catch2/catch.hpp>

#include "nvme_test_dirs.h"
#include "strata/offload.h"
#include "strata/strata.h"
#include "../train/train_support.h"

using namespace strata;
using namespace strata::test;
using offload::Tier;

namespace {

struct FuzzScope {
  explicit FuzzScope(uint64_t seed) : before(stream_fuzz()) { set_stream_fuzz(seed); }
  ~FuzzScope() { set_stream_fuzz(before); }
  uint64_t before;
};

struct Run {
  std::vector<float> losses;
  std::vector<std::vector<float>> weights;
};

Run train(const offload::OffloadOptions* off) {
  const ModelConfig c = tiny_config("gpt");
  Model m(c, cpu(), Precision::bf16, 5);
  TrainOptions o;
  o.grad_accum = 2;  // the second micro-batch reads the gradients the first wrote out
  o.adamw.lr = 1e-2f;
  o.clip_norm = 0.5f;
  std::unique_ptr<Trainer> t = off ? std::make_unique<Trainer>(m, o, *off) : std::make_unique<Trainer>(m, o);
  Run r;
  for (int s = 0; s < 4; ++s) {
    RandomBatch b0(2, 8, c.vocab_size, 1000 + s), b1(2, 8, c.vocab_size, 2000 + s);
    r.losses.push_back(t->train_step({b0.batch(), b1.batch()}).loss);
  }
  for (int u = 0; u < m.num_units(); ++u) r.weights.push_back(t->unit_parameters(u));
  return r;
}

}  // namespace

TEST_CASE("offloaded training stays bitwise the resident one under the stream ordering fuzz", "[offload][train][stream]") {
  ScratchDir dir(1);
  const Run ref = train(nullptr);
  const struct {
    Tier params, grads, optimizer;
  } placements[] = {{Tier::host, Tier::host, Tier::host}, {Tier::nvme, Tier::nvme, Tier::nvme},
                    {Tier::nvme, Tier::host, Tier::device}, {Tier::host, Tier::nvme, Tier::host}};
  for (uint64_t seed : {11ull, 12ull, 13ull})
    for (const auto& p : placements) {
      INFO("seed " << seed << ": params " << offload::tier_name(p.params) << ", grads "
                   << offload::tier_name(p.grads) << ", optimizer " << offload::tier_name(p.optimizer));
      FuzzScope fuzz(seed);
      const offload::OffloadOptions o = placement(p.params, p.grads, p.optimizer, dir);
      const Run r = train(&o);
      expect_bitwise("losses", r.losses, ref.losses);
      REQUIRE(r.weights.size() == ref.weights.size());
      for (size_t u = 0; u < r.weights.size(); ++u) expect_bitwise("unit " + std::to_string(u), r.weights[u], ref.weights[u]);
    }
  CHECK(dir.file_count() == 0);
}
