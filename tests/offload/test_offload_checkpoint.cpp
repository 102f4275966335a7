// Checkpoints of offloaded runs (OffloadStore through the Trainer) on CPU devices:
// save at step N and resume equals the uninterrupted run bit for bit (losses, working
// params, master, m, v) on every tier, fp32 and bf16 (fp16 on two placements); the
// files are byte for byte the resident run's, so a checkpoint resumes across resident
// and offloaded Trainers; a SIGKILL during a save of an NVMe run leaves the newest
// complete checkpoint loadable and equal to the run at its step.
// The kill test's child is this binary re-executed (as tests/io/test_crash.cpp does:
// oneTBB's thread pool does not survive a bare fork).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <thread>

#include "checkpoint_support.h"
#include "support/kill_saver.h"

using namespace strata;
using namespace strata::test;

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
  int wait_ms = 0;
  const std::vector<std::string> all = kill_after_first_save(pid, run, 0x0ff10ad, trial, max_ms, wait_ms);
  INFO("trial " << trial << ", killed after " << wait_ms << " ms");
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
