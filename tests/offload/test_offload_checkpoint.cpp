// Checkpoints of offloaded runs (OffloadStore through the Trainer) on CPU devices:
// save at step N and resume equals the uninterrupted run bit for bit (losses, working
// params, master, m, v) on every tier, fp32 and bf16 (fp16 on two placements); the
// files are byte for byte the resident run's, so a checkpoint resumes across resident
// and offloaded Trainers; a SIGKILL during a save of an NVMe run leaves the newest
// complete checkpoint loadable and equal to the run at its step; a save of a model
// whose state is many units large grows the resident set by about one unit; memory()
// reports every tier.
// The kill test's child is this binary re-executed (as tests/io/test_crash.cpp does:
// oneTBB's thread pool does not survive a bare fork).
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <tuple>

#include "checkpoint_support.h"
#include "nvme_test_dirs.h"
#include "offload/offload_store.h"
#include "strata/checkpoint.h"
#include "strata/strata.h"
#include "../train/train_support.h"

using namespace strata;
using namespace strata::test;
using offload::Tier;

namespace {

constexpr int kAccum = 2;
constexpr int64_t kB = 2, kT = 8;

ModelConfig config(const char* arch) {
  ModelConfig c = tiny_config(arch);
  c.dropout_residual = 0.1f;  // the masks are keyed by step: a resume must restore it
  return c;
}

TrainOptions options() {
  TrainOptions o;
  o.grad_accum = kAccum;
  o.adamw.lr = 1e-2f;
  o.clip_norm = 0.5f;
  o.schedule.warmup_steps = 2;  // the rate depends on the step too
  o.schedule.total_steps = 8;
  return o;
}

offload::OffloadOptions placement(Tier params, Tier grads, Tier opt, const ScratchDir& dir) {
  offload::OffloadOptions o;
  o.params = params;
  o.grads = grads;
  o.optimizer = opt;
  o.nvme_paths = dir.paths();
  o.pinned_bytes = size_t(1) << 20;
  o.tile_elements = 2048;
  o.require_direct = accepts_direct_io(dir.paths()[0]);
  return o;
}

// A model and its Trainer, resident when `off` is null.
struct Run {
  Model model;
  std::unique_ptr<Trainer> trainer;
  Run(const ModelConfig& c, Precision p, const offload::OffloadOptions* off) : model(c, cpu(), p, 5) {
    trainer = off ? std::make_unique<Trainer>(model, options(), *off) : std::make_unique<Trainer>(model, options());
  }
  // Steps [first, last): the batches depend on the step, as a data loader's would.
  void train(int first, int last, State& st) {
    for (int s = first; s < last; ++s) {
      RandomBatch b0(kB, kT, model.config().vocab_size, 1000 + uint64_t(s) * 10),
          b1(kB, kT, model.config().vocab_size, 1001 + uint64_t(s) * 10);
      append_bits(st.losses, {trainer->train_step({b0.batch(), b1.batch()}).loss});
    }
  }
  void finish(State& st) { append_state(*trainer, model.num_units(), st); }
};

// Trains [0, first) from scratch and saves to `save`, or loads `load` and trains
// [step, last); `off` null is the resident Trainer.
State span(const ModelConfig& c, Precision p, const offload::OffloadOptions* off, const std::string& load, int first,
           int last, const std::string& save = "") {
  Run r(c, p, off);
  State st;
  if (!load.empty()) {
    const CheckpointInfo info = load_checkpoint(load, r.model, r.trainer.get());
    REQUIRE(info.trainer.step == first);
  }
  r.train(first, last, st);
  if (!save.empty()) save_checkpoint(save, r.model, r.trainer.get());
  r.finish(st);
  return st;
}

// The offloaded placements the resume tests walk: each tier for each kind of state.
const std::tuple<Tier, Tier, Tier> kPlacements[] = {
    {Tier::host, Tier::host, Tier::host},   {Tier::nvme, Tier::nvme, Tier::nvme},
    {Tier::device, Tier::nvme, Tier::host}, {Tier::nvme, Tier::host, Tier::device},
    {Tier::host, Tier::device, Tier::nvme},
};

}  // namespace

TEST_CASE("an offloaded run saved at step N resumes bit for bit, every placement", "[offload][checkpoint]") {
  ScratchDir dir(2);
  constexpr int N = 3, M = 3;
  for (const char* arch : {"gpt", "llama"})
    for (Precision p : {Precision::fp32, Precision::bf16, Precision::fp16})
      for (auto [tp, tg, to] : kPlacements) {
        if (std::string(arch) == "llama" && tp != Tier::nvme) continue;  // gpt covers the mixed placements
        if (p == Precision::fp16 && (std::string(arch) == "llama" || tg != tp)) continue;  // the loss scale: a few
        INFO(arch << " " << precision_name(p) << " params " << offload::tier_name(tp) << ", grads "
                  << offload::tier_name(tg) << ", optimizer " << offload::tier_name(to));
        const ModelConfig c = config(arch);
        const offload::OffloadOptions o = placement(tp, tg, to, dir);
        const std::string ckpt = dir.path() + "/ckpt";
        const State whole = span(c, p, &o, "", 0, N + M);
        const State first = span(c, p, &o, "", 0, N, ckpt);
        const State rest = span(c, p, &o, ckpt, N, N + M);
        REQUIRE(whole.losses.size() == N + M);
        CHECK(std::vector<uint32_t>(whole.losses.begin(), whole.losses.begin() + N) == first.losses);
        CHECK(std::vector<uint32_t>(whole.losses.begin() + N, whole.losses.end()) == rest.losses);
        CHECK(rest.params == whole.params);
        CHECK(rest.optimizer == whole.optimizer);
        CHECK(first.params != whole.params);  // the M steps after the resume moved the weights
        std::filesystem::remove_all(ckpt);
      }
  CHECK(dir.file_count() == 0);  // no swap file outlives its store
}

TEST_CASE("offloaded and resident checkpoints are the same files and resume each other", "[offload][checkpoint]") {
  ScratchDir dir(1);
  constexpr int N = 2, M = 3;
  for (Precision p : {Precision::fp32, Precision::bf16}) {
    INFO(precision_name(p));
    const ModelConfig c = config("gpt");
    const offload::OffloadOptions nvme = placement(Tier::nvme, Tier::nvme, Tier::nvme, dir);
    const offload::OffloadOptions host = placement(Tier::host, Tier::host, Tier::device, dir);
    const std::string resident_ckpt = dir.path() + "/resident", offload_ckpt = dir.path() + "/offload";
    const State whole = span(c, p, nullptr, "", 0, N + M);
    span(c, p, nullptr, "", 0, N, resident_ckpt);
    span(c, p, &nvme, "", 0, N, offload_ckpt);
    for (const char* file : {"model.safetensors", "optimizer.rank0.safetensors", "trainer_state.json",
                             "config.json", "manifest.json"}) {
      INFO(file);
      const std::string a = file_bytes(resident_ckpt + "/" + file), b = file_bytes(offload_ckpt + "/" + file);
      CHECK(!a.empty());
      CHECK(a == b);
    }
    // resident -> offloaded, offloaded -> resident, NVMe -> host and device tiers
    for (auto [from, off] : {std::pair{resident_ckpt, &nvme}, {offload_ckpt, nullptr}, {offload_ckpt, &host}}) {
      INFO("from " << from << (off ? " to offload" : " to resident"));
      const State rest = span(c, p, off, from, N, N + M);
      CHECK(std::vector<uint32_t>(whole.losses.begin() + N, whole.losses.end()) == rest.losses);
      CHECK(rest.params == whole.params);
      CHECK(rest.optimizer == whole.optimizer);
    }
    std::filesystem::remove_all(resident_ckpt);
    std::filesystem::remove_all(offload_ckpt);
  }
}

TEST_CASE("a bf16 weights file resumes an offloaded fp32 run exactly: the master comes from the optimizer file",
          "[offload][checkpoint]") {
  ScratchDir dir(1);
  const ModelConfig c = config("gpt");
  const offload::OffloadOptions o = placement(Tier::nvme, Tier::host, Tier::nvme, dir);
  const std::string ckpt = dir.path() + "/bf16";
  const State whole = span(c, Precision::fp32, &o, "", 0, 4);
  {
    Run r(c, Precision::fp32, &o);
    State st;
    r.train(0, 2, st);
    save_checkpoint(ckpt, r.model, r.trainer.get(), {}, {DType::bf16, true});
  }
  const State rest = span(c, Precision::fp32, &o, ckpt, 2, 4);
  CHECK(rest.params == whole.params);
  CHECK(rest.optimizer == whole.optimizer);
}

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

// The kill test: a child trains an all-NVMe run and saves after every step, up to
// kCrashSteps steps (the parent's reference run covers as many).
constexpr int kCrashSteps = 40;
ModelConfig crash_config() {
  ModelConfig c = config("gpt");
  c.d_model = 64;
  c.n_heads = 4;
  c.d_mlp = 256;
  c.n_layers = 3;
  return c;
}

offload::OffloadOptions crash_placement(const std::string& swap) {
  offload::OffloadOptions o;
  o.params = o.grads = o.optimizer = Tier::nvme;
  o.nvme_paths = {swap};
  o.pinned_bytes = size_t(4) << 20;
  o.require_direct = accepts_direct_io(swap);
  return o;
}

pid_t spawn_saver(const std::string& run_dir, const std::string& swap) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::setenv("STRATA_OFFLOAD_CRASH_RUN", run_dir.c_str(), 1);
    ::setenv("STRATA_OFFLOAD_CRASH_SWAP", swap.c_str(), 1);
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::execl("/proc/self/exe", "test_offload", "offload checkpoint crash child: save in a loop until killed",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

bool kill_trial(uint64_t trial, int max_ms, const std::vector<State>& reference) {
  ScratchDir dir(2);  // a: the child's swap space, b: the run directory
  const std::string run = dir.paths()[1] + "/run";
  const pid_t pid = spawn_saver(run, dir.paths()[0]);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (list_checkpoints(run).empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  num::RandomKey key{0x0ff10ad, uint32_t(trial), 0};
  const int wait_ms = int(num::philox_word(key, 0) % uint64_t(max_ms));
  std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  INFO("trial " << trial << ", killed after " << wait_ms << " ms");
  REQUIRE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
  const std::vector<std::string> all = list_checkpoints(run);
  if (all.empty()) return false;
  CHECK(all.size() <= 3);  // killed between a rename and the pruning
  const std::string newest = all.back();
  verify_checkpoint(newest);
  ScratchDir swap(1);
  const offload::OffloadOptions o = crash_placement(swap.paths()[0]);
  Run r(crash_config(), Precision::bf16, &o);
  const CheckpointInfo info = load_checkpoint(newest, r.model, r.trainer.get());
  CHECK(newest == checkpoint_path(run, info.trainer.step));
  CHECK(info.progress.data_position == info.trainer.step);
  // The state at its step is the uninterrupted run's at that step, bit for bit.
  REQUIRE(size_t(info.trainer.step) < reference.size());
  State st;
  r.finish(st);
  CHECK(st.params == reference[size_t(info.trainer.step)].params);
  CHECK(st.optimizer == reference[size_t(info.trainer.step)].optimizer);
  return true;
}

}  // namespace

// Hidden ([.]): run only by name, as the child of the kill test.
TEST_CASE("offload checkpoint crash child: save in a loop until killed", "[.][offload]") {
  const char* run = std::getenv("STRATA_OFFLOAD_CRASH_RUN");
  const char* swap = std::getenv("STRATA_OFFLOAD_CRASH_SWAP");
  if (!run || !swap) return;
  const offload::OffloadOptions o = crash_placement(swap);
  Run r(crash_config(), Precision::bf16, &o);
  State st;
  for (int s = 0; s < kCrashSteps; ++s) {
    r.train(s, s + 1, st);
    save_run_checkpoint(run, r.model, *r.trainer, TrainingProgress{s + 1, {}}, {}, 2);
  }
  for (;;) ::pause();  // the parent's reference ends here; wait for the kill
}

TEST_CASE("SIGKILL during saves of an NVMe-offloaded run leaves the newest checkpoint loadable and exact",
          "[offload][checkpoint]") {
  // The reference: the state after each step of the same run, uninterrupted.
  constexpr int kTrials = 4;
  std::vector<State> reference;
  {
    ScratchDir swap(1);
    const offload::OffloadOptions o = crash_placement(swap.paths()[0]);
    Run r(crash_config(), Precision::bf16, &o);
    for (int s = 0; s <= kCrashSteps; ++s) {
      State st;
      r.finish(st);
      reference.push_back(st);
      r.train(s, s + 1, st);
    }
  }
  int found = 0;
  for (int t = 0; t < kTrials; ++t) found += kill_trial(uint64_t(t), 400, reference);
  INFO(found << " of " << kTrials << " trials had a checkpoint when killed");
  CHECK(found == kTrials);
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
  const size_t growth = status_bytes("VmHWM:") - rss;
  INFO("state " << state << " bytes, largest unit " << unit << " bytes, resident before the save " << rss
                << ", peak growth during it " << growth);
  CHECK(growth <= 2 * unit + (size_t(4) << 20));  // one unit's arrays (and their conversion), not the state
  std::printf("offload checkpoint RSS: state %zu B, largest unit %zu B (16 B/element), RSS before save %zu B, "
              "peak growth during save %zu B\n",
              state, unit, rss, growth);
}
