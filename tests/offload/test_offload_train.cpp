// Offloaded training (OffloadStore through the Trainer) on CPU devices: every
// placement of params, gradients and optimizer state over device, host and NVMe
// trains bit for bit like the resident Trainer (losses, gradient norms, weights and
// master, m, v on the placements suite; fp32 and bf16 on
// every placement, fp16 with loss-scale skips on a few; accumulation, clipping and
// full recompute on); the optimizer step runs behind the
// next forward and its errors reach the caller; the device arena stays within a
// budget ten times smaller than the training state; bad placements fail up front.
#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <tuple>

#include "nvme_test_dirs.h"
#include "offload/offload_store.h"
#include "strata/strata.h"
#include "../train/train_support.h"
#include "support/skip.h"

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
  o.clip_norm = 0.5f;  // active: the offloaded norm must be the resident one
  return o;
}

struct Result {
  std::vector<float> losses, norms;
  std::vector<std::vector<float>> weights;
  std::vector<std::vector<float>> master, exp_avg, exp_avg_sq;  // per unit, after the last step
};

// Resident when `off` is null.
Result train(const ModelConfig& c, Precision p, const offload::OffloadOptions* off, int steps = kSteps,
             const TrainOptions& o = options(), int64_t* skipped = nullptr) {
  Model m(c, cpu(), p, 5);
  m.set_recompute(RecomputePolicy::every_block(c.n_layers));
  std::unique_ptr<Trainer> t = off ? std::make_unique<Trainer>(m, o, *off) : std::make_unique<Trainer>(m, o);
  Result r;
  for (int s = 0; s < steps; ++s) {
    // The same two micro-batches every step: the loss must fall as they are learnt.
    RandomBatch b0(kB, kT, c.vocab_size, 1000), b1(kB, kT, c.vocab_size, 1001);
    const StepReport rep = t->train_step({b0.batch(), b1.batch()});
    r.losses.push_back(rep.loss);
    r.norms.push_back(rep.grad_norm);
  }
  if (skipped) *skipped = t->skipped_steps();
  for (int u = 0; u < m.num_units(); ++u) {
    r.weights.push_back(t->unit_parameters(u));
    r.master.emplace_back();
    r.exp_avg.emplace_back();
    r.exp_avg_sq.emplace_back();
    t->optimizer_state(u, r.master.back(), r.exp_avg.back(), r.exp_avg_sq.back());
  }
  return r;
}

// "" when every weight is bitwise equal, else where the first difference is.
std::string first_difference(const Result& a, const Result& b) {
  if (a.weights.size() != b.weights.size()) return "unit count";
  for (size_t u = 0; u < a.weights.size(); ++u)
    for (size_t i = 0; i < a.weights[u].size(); ++i)
      if (std::memcmp(&a.weights[u][i], &b.weights[u][i], 4) != 0)
        return "unit " + std::to_string(u) + " element " + std::to_string(i) + ": " + std::to_string(a.weights[u][i]) +
               " vs " + std::to_string(b.weights[u][i]);
  return "";
}

}  // namespace

TEST_CASE("offloaded training is bitwise the resident one for every placement", "[offload][train]") {
  ScratchDir dir(1);
  const Tier tiers[] = {Tier::device, Tier::host, Tier::nvme};
  for (const char* arch : {"gpt", "llama"})
    for (Precision p : {Precision::fp32, Precision::bf16}) {
      ModelConfig c = tiny_config(arch);
      const Result ref = train(c, p, nullptr);
      for (Tier tp : tiers)
        for (Tier tg : tiers)
          for (Tier to : tiers) {
            if (tp == Tier::device && tg == Tier::device && to == Tier::device) continue;
            if (std::string(arch) == "llama" && (tp == Tier::device || tg == Tier::device || to == Tier::device))
              continue;  // the device tier is covered by gpt; keep the suite fast
            INFO(arch << " " << precision_name(p) << " params " << offload::tier_name(tp) << ", grads "
                      << offload::tier_name(tg) << ", optimizer " << offload::tier_name(to));
            const offload::OffloadOptions o = placement(tp, tg, to, dir);
            const Result r = train(c, p, &o);
            expect_bitwise("losses", r.losses, ref.losses);
            expect_bitwise("gradient norms", r.norms, ref.norms);
            CHECK(first_difference(r, ref) == "");
            for (size_t u = 0; u < r.master.size(); ++u) {
              const std::string unit = "unit " + std::to_string(u);
              expect_bitwise(unit + " master", r.master[u], ref.master[u]);
              expect_bitwise(unit + " exp_avg", r.exp_avg[u], ref.exp_avg[u]);
              expect_bitwise(unit + " exp_avg_sq", r.exp_avg_sq[u], ref.exp_avg_sq[u]);
            }
          }
      CHECK(ref.losses.back() < ref.losses.front());
    }
  CHECK(dir.file_count() == 0);  // swap files vanish with the store
}

TEST_CASE("fp16 with dynamic loss scaling: offloaded training is bitwise the resident one", "[offload][train]") {
  ScratchDir dir(1);
  TrainOptions o = options();
  o.loss_scale_init = 1e9f;  // f16 gradients overflow at first: steps are skipped and the scale halves
  o.loss_scale_window = 5;    // and then grows again after clean steps
  for (const char* arch : {"gpt", "llama"}) {
    ModelConfig c = tiny_config(arch);
    int64_t skipped_ref = 0;
    const Result ref = train(c, Precision::fp16, nullptr, kSteps, o, &skipped_ref);
    REQUIRE(skipped_ref > 0);
    REQUIRE(skipped_ref < kSteps - 5);
    for (auto [tp, tg, to] : {std::tuple{Tier::host, Tier::host, Tier::host}, {Tier::nvme, Tier::nvme, Tier::nvme},
                              {Tier::device, Tier::nvme, Tier::host}}) {
      INFO(arch << " fp16 params " << offload::tier_name(tp) << ", grads " << offload::tier_name(tg)
                << ", optimizer " << offload::tier_name(to));
      const offload::OffloadOptions off = placement(tp, tg, to, dir);
      int64_t skipped = 0;
      const Result r = train(c, Precision::fp16, &off, kSteps, o, &skipped);
      CHECK(skipped == skipped_ref);
      CHECK(r.losses == ref.losses);
      CHECK(first_difference(r, ref) == "");
    }
    CHECK(ref.losses.back() < ref.losses.front());
  }
}

TEST_CASE("a pinned pool of a few units: read-ahead yields, tiles shrink, results stay bitwise",
          "[offload][train]") {
  ScratchDir dir(1);
  ModelConfig c = tiny_config("gpt");
  c.d_model = 96;  // blocks of over 2^16 elements: the norm's chunking crosses a chunk
  c.d_mlp = 384;
  c.n_heads = 4;
  c.n_layers = 3;
  int64_t largest = 0;
  {
    Model m(c, cpu(), Precision::bf16, 5);
    for (int u = 0; u < m.num_units(); ++u) largest = std::max(largest, m.unit_numel(u));
  }
  REQUIRE(largest > (int64_t(1) << 16));
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    const Result ref = train(c, p, nullptr, 4);
    offload::OffloadOptions o = placement(Tier::nvme, Tier::nvme, Tier::nvme, dir);
    o.pinned_bytes = size_t(largest) * 4 * 2;
    o.tile_elements = 1 << 20;
    const Result r = train(c, p, &o, 4);
    INFO(precision_name(p));
    CHECK(r.losses == ref.losses);
    CHECK(first_difference(r, ref) == "");
  }
}

// Held by the NVMe fault hook: a write to one object waits until the test lets it go
// (or a timeout passes, which only a step that does not overlap would need).
struct Gate {
  std::mutex mutex;
  std::condition_variable cv;
  bool armed = false, open = false, held = false, timed_out = false;
  int64_t hold(uint32_t object, uint32_t target, bool write) {
    std::unique_lock lock(mutex);
    if (!armed || !write || object != target) return 0;
    held = true;
    timed_out = !cv.wait_for(lock, std::chrono::seconds(10), [&] { return open; });
    return 0;
  }
  void set(bool Gate::*flag) {
    std::lock_guard lock(mutex);
    this->*flag = true;
    cv.notify_all();
  }
};

TEST_CASE("the optimizer step runs behind the next forward, unit by unit in forward order", "[offload][train]") {
  ScratchDir dir(1);
  ModelConfig c = tiny_config("gpt");
  c.n_layers = 4;
  Model m(c, cpu(), Precision::bf16, 5);
  const int N = m.num_units();
  // Optimizer state alone on NVMe: objects are master, exp_avg, exp_avg_sq per unit,
  // reserved in unit order, so the last unit's master is object 3 (N - 1).
  offload::OffloadOptions o = placement(Tier::host, Tier::host, Tier::nvme, dir);
  auto gate = std::make_shared<Gate>();
  const uint32_t last_master = uint32_t(3 * (N - 1));
  o.nvme_fault_hook = [gate, last_master](const offload::NvmeFaultSite& s) {
    return gate->hold(s.object, last_master, s.write);
  };
  Trainer t(m, options(), o);
  RandomBatch b(kB, kT, c.vocab_size, 1000);
  t.forward_backward(b.batch());
  const std::vector<float> before_first = t.unit_parameters(0), before_last = t.unit_parameters(N - 1);
  gate->set(&Gate::armed);
  t.step();  // returns while the last unit's update is held
  // Had step() or this acquire waited for the whole update, they would sit in the
  // gate until its timeout.
  const std::vector<float> first = t.unit_parameters(0);  // waits for unit 0 only
  gate->set(&Gate::open);
  const std::vector<float> last = t.unit_parameters(N - 1);  // waits for the held write
  std::lock_guard lock(gate->mutex);
  CHECK(gate->held);
  CHECK(!gate->timed_out);
  CHECK(first != before_first);  // both units were updated
  CHECK(last != before_last);
}

TEST_CASE("an error of the background optimizer step reaches every later call", "[offload][train]") {
  ScratchDir dir(1);
  ModelConfig c = tiny_config("gpt");
  offload::OffloadOptions o = placement(Tier::host, Tier::host, Tier::nvme, dir);
  auto fail = std::make_shared<std::atomic<bool>>(false);
  o.nvme_fault_hook = [fail](const offload::NvmeFaultSite& s) -> int64_t {
    return fail->load() && s.write && s.object % 3 == 1 ? -EIO : 0;  // exp_avg writes
  };
  Model m(c, cpu(), Precision::bf16, 5);
  {
    Trainer t(m, options(), o);
    RandomBatch b0(kB, kT, c.vocab_size, 1000), b1(kB, kT, c.vocab_size, 1001);
    t.train_step({b0.batch(), b1.batch()});
    t.unit_parameters(m.num_units() - 1);  // the first update has landed: no write of it fails
    fail->store(true);
    t.train_step({b0.batch(), b1.batch()});  // its update fails in the background
    for (int i = 0; i < 2; ++i)
      REQUIRE_THROWS_WITH(t.train_step({b0.batch(), b1.batch()}),
                          Catch::Contains("optimizer step failed") && Catch::Contains("EIO") &&
                              Catch::Contains("partly updated"));
    REQUIRE_THROWS_WITH(t.unit_parameters(0), Catch::Contains("optimizer step failed"));
  }  // the store's destructor neither throws nor hangs
  CHECK(dir.file_count() == 0);
}

TEST_CASE("the device arena stays within a budget ten times smaller than the model", "[offload][train]") {
  ScratchDir dir(1);
  ModelConfig c = tiny_config("gpt");
  c.n_layers = 16;
  c.d_model = 64;
  c.d_mlp = 256;
  c.n_heads = 4;
  c.vocab_size = 256;
  c.max_seq = 16;
  auto device = Device::cpu(0);
  Model m(c, *device, Precision::bf16, 3);
  m.set_recompute(RecomputePolicy::every_block(c.n_layers));  // activations small beside the units
  const size_t state = size_t(m.num_parameters()) * 16;  // bf16 params, f32 grads, master, m, v
  const size_t budget = state / 10;
  offload::OffloadOptions o = placement(Tier::nvme, Tier::nvme, Tier::nvme, dir);
  o.pinned_bytes = size_t(4) << 20;
  o.prefetch = 1;  // the device pool holds prefetch + 2 unit buffers
  TrainOptions to = options();
  Trainer trainer(m, to, o);
  device->arena().reset_high_water();
  std::vector<float> losses;
  for (int s = 0; s < 3; ++s) {
    RandomBatch b0(kB, 16, c.vocab_size, 7), b1(kB, 16, c.vocab_size, 70);
    std::vector<Batch> views;
    for (RandomBatch* b : {&b0, &b1})
      views.push_back(Batch{TensorView(b->inputs.data(), DType::i32, {b->B, b->T}, device.get()),
                            TensorView(b->targets.data(), DType::i32, {b->B, b->T}, device.get())});
    StepReport r = trainer.train_step(views);
    losses.push_back(r.loss);
    CHECK(r.pinned_bytes <= o.pinned_bytes);
    CHECK(r.nvme_bytes >= state - size_t(m.num_parameters()) * 2);
    CHECK(r.io_stall_seconds >= 0);
    CHECK(r.nvme_read_gbps > 0);
    CHECK(r.nvme_write_gbps > 0);
  }
  INFO("device high-water " << device->arena().bytes_high_water() << " bytes, budget " << budget << " (state "
                            << state << ")");
  CHECK(device->arena().bytes_high_water() <= budget);
  CHECK(losses.back() < losses.front());
}

TEST_CASE("bad offload placements fail before training", "[offload][train]") {
  ModelConfig c = tiny_config("gpt");
  ScratchDir dir(1);
  auto make = [&](const offload::OffloadOptions& o) {
    Model m(c, cpu(), Precision::bf16, 1);
    Trainer t(m, options(), o);
  };
  offload::OffloadOptions o = placement(Tier::nvme, Tier::host, Tier::nvme, dir);
  SECTION("no NVMe path") {
    o.nvme_paths.clear();
    REQUIRE_THROWS_WITH(make(o), Catch::Contains("OffloadStore") && Catch::Contains("nvme_paths"));
  }
  SECTION("missing NVMe path") {
    o.nvme_paths = {dir.path() + "/missing"};
    REQUIRE_THROWS_WITH(make(o), Catch::Contains("OffloadStore") && Catch::Contains("does not exist"));
  }
  SECTION("pinned budget below the largest unit") {
    o.pinned_bytes = 4096;
    REQUIRE_THROWS_WITH(make(o), Catch::Contains("pinned budget") && Catch::Contains("largest unit"));
  }
  SECTION("device budget too small for a unit") {
    o.params = o.grads = o.optimizer = Tier::host;
    // Exactly the resident model: the pool is allocated after the resident state is
    // released, so it fits; a budget of a few KiB does not hold the model at all.
    auto tiny = Device::cpu(0, 64 << 10);
    REQUIRE_THROWS_WITH(Model(c, *tiny, Precision::bf16, 1), Catch::Contains("parameters") || Catch::Contains("capacity"));
  }
}


// Preconditions of their own: each case skips (support/skip.h) where it cannot run.
TEST_CASE("an NVMe path that is not writable fails before training", "[offload][train]") {
  if (geteuid() == 0) {
    skip_test("running as root, which writes anywhere");
    return;
  }
  ModelConfig c = tiny_config("gpt");
  ScratchDir dir(1);
  offload::OffloadOptions o = placement(Tier::nvme, Tier::host, Tier::nvme, dir);
  ::chmod(dir.paths()[0].c_str(), 0500);
  auto make = [&] {
    Model m(c, cpu(), Precision::bf16, 1);
    Trainer t(m, options(), o);
  };
  CHECK_THROWS_WITH(make(), Catch::Contains("OffloadStore") && Catch::Contains(dir.paths()[0]));
  ::chmod(dir.paths()[0].c_str(), 0700);
}

TEST_CASE("an NVMe path without O_DIRECT fails before training when O_DIRECT is required", "[offload][train]") {
  if (!std::filesystem::is_directory("/dev/shm") || accepts_direct_io("/dev/shm")) {
    skip_test("no directory refusing O_DIRECT here (/dev/shm is missing or accepts it)");
    return;
  }
  ModelConfig c = tiny_config("gpt");
  ScratchDir dir(1), shm(1, "/dev/shm");
  offload::OffloadOptions o = placement(Tier::nvme, Tier::host, Tier::nvme, dir);
  o.nvme_paths = shm.paths();
  o.require_direct = true;
  Model m(c, cpu(), Precision::bf16, 1);
  REQUIRE_THROWS_WITH(Trainer(m, options(), o), Catch::Contains("OffloadStore") && Catch::Contains("O_DIRECT"));
}
TEST_CASE("a new model's large gradient buffers read as zero (pages dropped, not written)", "[offload][train]") {
  ModelConfig c = tiny_config("gpt");
  c.vocab_size = 1024;
  c.d_model = 512;  // the embedding's gradient is 2 MiB: the madvise path
  c.d_mlp = 64;
  c.n_heads = 4;
  c.n_layers = 1;
  Model m(c, cpu(), Precision::bf16, 1);
  for (int u = 0; u < m.num_units(); ++u) {
    TensorView g = m.unit_grads(u);
    const float* p = g.ptr<float>();
    int64_t nonzero = 0;
    for (int64_t i = 0; i < g.numel(); ++i) nonzero += p[i] != 0.0f;
    CHECK(nonzero == 0);
  }
}
