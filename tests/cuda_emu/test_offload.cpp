// Offloaded training (OffloadStore through the Trainer) on the emulated CUDA device,
// whose op entry points refuse host memory: every byte between a tier and a device
// buffer must go through Stream::copy, and the CPU AdamW over host / NVMe tiers must
// run on the host. Each placement is checked against the same offloaded run on a CPU
// device (selftest's tolerances for training) and bitwise against the resident run on
// the emulated device (offload moves bytes; it never changes what is computed).
// The pinned pool of a store on a CUDA device is registered with CUDA while the
// store lives, and only then.
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>

#include "cuda/runtime.h"
#include "emu_support.h"
#include "offload/nvme_test_dirs.h"
#include "offload/offload_store.h"
#include "strata/error.h"
#include "strata/train.h"
#include "train/train_support.h"

namespace strata::test {
namespace {

using offload::Tier;

struct Run {
  std::vector<float> losses;
  std::vector<float> weights;  // every unit's, f32, concatenated
};

TrainOptions options() {
  TrainOptions o;
  o.grad_accum = 2;
  o.adamw.lr = 1e-2f;
  o.clip_norm = 0.5f;  // active: the offloaded norm is used
  return o;
}

// Resident when `off` is null.
Run train(Device& device, Precision p, const offload::OffloadOptions* off) {
  const ModelConfig c = tiny_config("gpt");
  Model m(c, device, p, 5);
  std::unique_ptr<Trainer> t = off ? std::make_unique<Trainer>(m, options(), *off) : std::make_unique<Trainer>(m, options());
  Run r;
  for (int s = 0; s < 5; ++s) {
    RandomBatch b0(2, 8, c.vocab_size, 1000), b1(2, 8, c.vocab_size, 1001);
    r.losses.push_back(t->train_step({b0.batch(), b1.batch()}).loss);
  }
  for (int u = 0; u < m.num_units(); ++u) {
    const std::vector<float> w = t->unit_parameters(u);
    r.weights.insert(r.weights.end(), w.begin(), w.end());
  }
  return r;
}

TEST_CASE("cuda_emu: offloaded training on the emulated CUDA device matches the CPU device and the resident run",
          "[cuda_emu][offload]") {
  ScratchDir dir(1);
  struct Placement {
    Tier params, grads, optimizer;
  };
  // Host and NVMe homes with the CPU AdamW; device homes staged to the CPU AdamW; host
  // and NVMe homes staged to the device AdamW.
  const Placement placements[] = {{Tier::host, Tier::host, Tier::host},
                                  {Tier::nvme, Tier::nvme, Tier::nvme},
                                  {Tier::device, Tier::device, Tier::host},
                                  {Tier::host, Tier::nvme, Tier::device}};
  auto gpu = Device::cuda();
  auto cpu_device = Device::cpu();
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    const Run resident = train(*gpu, p, nullptr);
    for (const Placement& pl : placements) {
      offload::OffloadOptions o;
      o.params = pl.params, o.grads = pl.grads, o.optimizer = pl.optimizer;
      o.nvme_paths = dir.paths();
      o.pinned_bytes = size_t(1) << 20;
      o.tile_elements = 2048;  // several tiles per unit: staging follows the pipeline
      o.require_direct = accepts_direct_io(dir.paths()[0]);
      const Run on_gpu = train(*gpu, p, &o), on_cpu = train(*cpu_device, p, &o);
      INFO(precision_name(p) << " params " << offload::tier_name(pl.params) << ", grads "
                             << offload::tier_name(pl.grads) << ", optimizer " << offload::tier_name(pl.optimizer));
      check_training_matches(on_gpu.losses, on_cpu.losses, on_gpu.weights, on_cpu.weights, p);
      CHECK(on_gpu.losses == resident.losses);
      CHECK(relative_l2(on_gpu.weights, resident.weights) == 0);
    }
  }
  CHECK(dir.file_count() == 0);
}

TEST_CASE("cuda_emu: the offload store on a CUDA device registers its pinned pool with CUDA while it lives",
          "[cuda_emu][offload]") {
  ScratchDir dir(1);
  offload::OffloadOptions o;
  o.params = o.grads = o.optimizer = Tier::nvme;
  o.nvme_paths = dir.paths();
  o.pinned_bytes = (size_t(1) << 20) + 100;  // registered as reserved: rounded to 4 KiB
  o.require_direct = accepts_direct_io(dir.paths()[0]);
  const size_t before = cuda_runtime::host_registered_bytes();
  auto gpu = Device::cuda();
  auto cpu_device = Device::cpu();
  for (Device* device : {gpu.get(), cpu_device.get()}) {
    INFO(device->name());
    const size_t expected = before + (device == gpu.get() ? (size_t(1) << 20) + 4096 : 0);
    Model m(tiny_config("gpt"), *device, Precision::bf16, 5);
    {
      Trainer t(m, options(), o);
      CHECK(cuda_runtime::host_registered_bytes() == expected);
      RandomBatch b0(2, 8, m.config().vocab_size, 1000), b1(2, 8, m.config().vocab_size, 1001);
      t.train_step({b0.batch(), b1.batch()});
      CHECK(cuda_runtime::host_registered_bytes() == expected);
    }
    CHECK(cuda_runtime::host_registered_bytes() == before);  // unregistered with the store
  }
}

}  // namespace
}  // namespace strata::test
