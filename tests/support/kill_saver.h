// The kill -9 harness of the crash tests: a child process saves checkpoints into a
// run directory in a loop; the parent waits for its first complete save, lets it run
// a seeded random time longer (so the kill lands mid-way through a later save even on
// a slow machine), kills it with SIGKILL and reaps it.
#pragma once
#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "common/philox.h"
#include "strata/checkpoint.h"

namespace strata::test {

// Returns the run's complete checkpoints after the kill; `waited_ms` is how long the
// child ran past its first save (drawn from `seed` and `trial`, below max_ms).
inline std::vector<std::string> kill_after_first_save(pid_t pid, const std::string& run, uint32_t seed,
                                                      uint64_t trial, int max_ms, int& waited_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (list_checkpoints(run).empty() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  num::RandomKey key{seed, uint32_t(trial), 0};
  waited_ms = int(num::philox_word(key, 0) % uint64_t(max_ms));
  std::this_thread::sleep_for(std::chrono::milliseconds(waited_ms));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
  return list_checkpoints(run);
}

}  // namespace strata::test
