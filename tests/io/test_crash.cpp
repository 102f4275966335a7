// Crash safety: a child process trains and saves checkpoints in a loop; the parent
// SIGKILLs it at a random moment, then loads the newest complete checkpoint, which
// must exist (once one save has finished), verify, and be consistent.
// The child is this test binary re-executed (fork + exec of /proc/self/exe running
// the hidden test below), because oneTBB's thread pool does not survive a bare fork.
#include <signal.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "io_support.h"
#include "support/kill_saver.h"

using namespace strata;
using namespace strata::test;
namespace fs = std::filesystem;

namespace {

ModelConfig crash_config() {
  ModelConfig c = tiny_config("gpt");
  c.vocab_size = 256;
  c.d_model = 64;
  c.n_heads = 4;
  c.d_mlp = 256;
  return c;
}

TrainOptions crash_options() {
  TrainOptions o;
  o.adamw.lr = 1e-3f;
  return o;
}

pid_t spawn_saver(const std::string& run_dir, const std::string& shard) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::setenv("STRATA_CRASH_RUN", run_dir.c_str(), 1);
    ::setenv("STRATA_CRASH_SHARD", shard.c_str(), 1);
    const int devnull = ::open("/dev/null", O_WRONLY);
    ::dup2(devnull, 1);
    ::execl("/proc/self/exe", "test_io", "checkpoint crash child: save in a loop until killed", "--rng-seed", "1",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// Returns whether a checkpoint was found. The kill lands at a random moment after
// the child's first complete save, so a slow machine (sanitizers, load) still kills
// it mid-way through later saves rather than before it has saved anything.
bool one_trial(uint64_t trial, int max_ms) {
  TempDir dir;
  const std::string shard = random_shard(dir, 20000, 256, 9);
  const std::string run = dir.file("run");
  const pid_t pid = spawn_saver(run, shard);
  int wait_ms = 0;
  const std::vector<std::string> all = kill_after_first_save(pid, run, 0xc0ffee, trial, max_ms, wait_ms);
  INFO("trial " << trial << ", killed after " << wait_ms << " ms");
  if (all.empty()) return false;
  CHECK(all.size() <= 3);  // killed between a rename and the pruning
  for (const std::string& ck : all) {
    verify_checkpoint(ck);
    Run r(crash_config(), Precision::fp32, crash_options(), shard, 1);
    CheckpointInfo info = load_checkpoint(ck, r.model, &r.trainer);
    CHECK(ck == checkpoint_path(run, info.trainer.step));
    CHECK(info.progress.data_position == info.trainer.step);
  }
  return true;
}

void trials(int n, int max_ms) {
  int found = 0;
  for (int t = 0; t < n; ++t) found += one_trial(uint64_t(t), max_ms);
  INFO(found << " of " << n << " trials had a checkpoint when killed");
  CHECK(found == n);
}

}  // namespace

// Hidden ([.]): run only by name, as the child of the trials.
TEST_CASE("checkpoint crash child: save in a loop until killed", "[.][io]") {
  const char* run = std::getenv("STRATA_CRASH_RUN");
  const char* shard = std::getenv("STRATA_CRASH_SHARD");
  if (!run || !shard) return;
  Run r(crash_config(), Precision::fp32, crash_options(), shard, 1);
  for (;;) {
    r.step();
    save_run_checkpoint(run, r.model, r.trainer, TrainingProgress{r.loader.position(), {}}, {}, 2);
  }
}

TEST_CASE("SIGKILL during saves leaves the newest complete checkpoint loadable", "[io][cpu]") { trials(6, 300); }

TEST_CASE("SIGKILL during saves, many trials", "[io][cpu][slow]") { trials(100, 600); }
