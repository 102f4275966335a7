// memory() of offloaded Trainers on CPU devices, against the placement's expected
// bytes and the store's own step report: every array once on its tier, the device
// pool of whole-unit buffers, the pinned high water; a frozen LoRA base stores its
// params only. And the resident set of a save: a model whose state is many units
// large grows it by about one unit (docs/checkpoints.md has the figures).
#include <malloc.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <tuple>

#include "checkpoint_support.h"
#include "support/skip.h"

using namespace strata;
using namespace strata::test;

TEST_CASE("memory() of an offloaded Trainer reports every tier as the store placed it", "[offload][checkpoint]") {
  ScratchDir dir(1);
  const ModelConfig c = config("gpt");
  for (Precision p : {Precision::fp32, Precision::bf16})
    for (auto [tp, tg, to] : kPlacements) {
      INFO(precision_name(p) << " params " << offload::tier_name(tp) << ", grads " << offload::tier_name(tg)
                             << ", optimizer " << offload::tier_name(to));
      const offload::OffloadOptions o = placement(tp, tg, to, dir);
      Run r(c, p, &o);
      size_t psi = 0, largest = 0;  // elements (padded), and of the largest unit
      for (int u = 0; u < r.model.num_units(); ++u) {
        psi += size_t(r.model.unit_numel(u));
        largest = std::max(largest, size_t(r.model.unit_numel(u)));
      }
      const size_t ds = p == Precision::fp32 ? 4 : 2;
      const size_t bytes[3] = {psi * ds, psi * 4, psi * 12};  // params, grads, optimizer
      const Tier tiers[3] = {tp, tg, to};
      size_t host = 0, nvme = 0;
      for (int k = 0; k < 3; ++k) {
        host += tiers[k] == Tier::host ? bytes[k] : 0;
        nvme += tiers[k] == Tier::nvme ? bytes[k] : 0;
      }
      State st;
      r.train(0, 1, st);
      const ZeroMemory before = r.trainer->memory();
      RandomBatch b(kB, kT, c.vocab_size, 7);
      const StepReport report = r.trainer->train_step({b.batch(), b.batch()});
      const ZeroMemory m = r.trainer->memory();
      // Every array once, on whichever tier, plus the store's device pool: whole
      // buffers of the largest unit, at least two (the head borrows the embedding).
      for (auto [got, array, buffer] :
           {std::tuple{m.params, bytes[0], largest * ds}, {m.grads, bytes[1], largest * 4}}) {
        REQUIRE(got >= array + 2 * buffer);
        CHECK((got - array) % buffer == 0);
      }
      CHECK(m.optimizer == bytes[2]);
      CHECK(m.host_bytes == host);
      CHECK(m.nvme_bytes == nvme);
      CHECK(report.nvme_bytes == nvme);  // the step report and memory() agree
      if (nvme > 0) {
        CHECK(report.pinned_bytes > 0);  // NVMe moves through the pinned pool
        // the most of every step so far (the background update may already hold more)
        CHECK(m.pinned_bytes >= std::max(before.pinned_bytes, report.pinned_bytes));
        CHECK(m.pinned_bytes <= o.pinned_bytes);
      } else {
        CHECK(m.pinned_bytes == 0);  // no NVMe: no pinned pool
      }
    }
}

TEST_CASE("memory() of a frozen LoRA base on NVMe: its params there, the adapters resident", "[offload][lora]") {
  ScratchDir dir(1);
  const ModelConfig c = config("gpt");
  const offload::OffloadOptions o = placement(Tier::nvme, Tier::nvme, Tier::nvme, dir);
  Model m(c, cpu(), Precision::bf16, 5);
  Lora lora(m, LoraOptions{});
  Trainer t(m, options(), o);
  size_t psi = 0, largest = 0;
  for (int u = 0; u < m.num_units(); ++u) {
    psi += size_t(m.unit_numel(u));
    largest = std::max(largest, size_t(m.unit_numel(u)));
  }
  RandomBatch b(kB, kT, c.vocab_size, 7);
  t.train_step({b.batch(), b.batch()});
  const ZeroMemory mem = t.memory();
  CHECK(mem.nvme_bytes == psi * 2);  // the base's bf16 params only: no gradients or optimizer state
  CHECK(mem.host_bytes == 0);
  REQUIRE(mem.params >= psi * 2 + 2 * largest * 2 + lora.param_bytes());
  CHECK((mem.params - psi * 2 - lora.param_bytes()) % (largest * 2) == 0);
  CHECK(mem.grads == lora.grad_bytes());
  CHECK(mem.optimizer == lora.optimizer_bytes());
  CHECK(mem.pinned_bytes > 0);
}

namespace {
// Resident set and its high water (VmHWM) of this process, in bytes; 0 when unknown.
size_t status_bytes(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0) return size_t(std::stoull(line.substr(std::strlen(field)))) * 1024;
  return 0;
}
}  // namespace

TEST_CASE("saving an NVMe-offloaded run grows the resident set by about one unit", "[offload][checkpoint]") {
#if defined(__SANITIZE_ADDRESS__)
  // ASan's allocator keeps freed memory in quarantine and ignores M_MMAP_THRESHOLD.
  return skip_test("the resident set under AddressSanitizer does not measure strata's buffers");
#endif
  ScratchDir dir(1);
  ModelConfig c = tiny_config("gpt");
  c.vocab_size = 256;
  c.d_model = 128;
  c.n_heads = 4;
  c.d_mlp = 512;
  c.n_layers = 24;
  c.max_seq = 16;
  // Every allocation of 64 KiB or more is its own mapping, returned when freed: the
  // high water then counts what the save holds at once, not what the heap kept.
  mallopt(M_MMAP_THRESHOLD, 1 << 16);
  offload::OffloadOptions o = placement(Tier::nvme, Tier::nvme, Tier::nvme, dir);
  o.pinned_bytes = size_t(8) << 20;
  Model m(c, cpu(), Precision::bf16, 3);
  Trainer t(m, options(), o);
  size_t state = 0, unit = 0;  // bytes: the whole training state, and one unit's (16 per element)
  for (int u = 0; u < m.num_units(); ++u) {
    state += size_t(m.unit_numel(u)) * 16;
    unit = std::max(unit, size_t(m.unit_numel(u)) * 16);
  }
  REQUIRE(state > 20 * unit);
  RandomBatch b(kB, 16, c.vocab_size, 7);
  t.train_step({b.batch(), b.batch()});  // its update runs in the background: the save waits for it
  std::ofstream("/proc/self/clear_refs") << "5";  // resets VmHWM to the current resident set
  const size_t rss = status_bytes("VmRSS:"), hwm_reset = status_bytes("VmHWM:");
  if (rss == 0 || hwm_reset > rss + unit) {
    WARN("this kernel does not reset VmHWM through /proc/self/clear_refs: not checked");
    return;
  }
  save_checkpoint(dir.path() + "/measured", m, &t);
  // The kernel syncs per-thread RSS counters lazily, so VmHWM may trail the VmRSS read
  // before the save by a few pages: no growth then, not an unsigned wrap.
  const size_t hwm = status_bytes("VmHWM:"), growth = hwm > rss ? hwm - rss : 0;
  INFO("state " << state << " bytes, largest unit " << unit << " bytes, resident before the save " << rss
                << ", peak growth during it " << growth);
  CHECK(growth <= 2 * unit + (size_t(4) << 20));  // one unit's arrays (and their conversion), not the state
  std::printf("offload checkpoint RSS: state %zu B, largest unit %zu B (16 B/element), RSS before save %zu B, "
              "peak growth during save %zu B\n",
              state, unit, rss, growth);
}
