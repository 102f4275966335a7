// Running the built `strata` binary from the CLI tests: its path comes from the
// build (STRATA_CLI, set in tools/CMakeLists.txt), each run's stdout and stderr go
// to files in a scratch directory and come back as strings with the exit status.
// A run may be signalled once a line appears in its stdout (Ctrl-C mid-run).
// Invariant: every process a test starts is waited for before the helper returns.
#pragma once
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "data/temp_dir.h"

namespace strata::test {

struct CliResult {
  int status = -1;  // exit status, or 128 + signal when killed by one
  bool signaled = false;  // killed by a signal (not an exit)
  std::string out, err;
};

class Cli {
 public:
  Cli() = default;
  const TempDir& dir() const { return dir_; }
  std::string file(const std::string& name) const { return dir_.file(name); }

  // Runs `strata args...`; when `signal_after` is non-empty, sends each signal in
  // `signals` (in order, `gap_ms` apart) once stdout contains it.
  CliResult run(const std::vector<std::string>& args, const std::string& signal_after = "",
                std::vector<int> signals = {}, int gap_ms = 300) const {
    const std::string out = dir_.file(".stdout"), err = dir_.file(".stderr");
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::signal(SIGINT, SIG_DFL);  // whatever the test runner inherited
      ::signal(SIGTERM, SIG_DFL);
      const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      ::dup2(o, 1);
      ::dup2(e, 2);
      std::vector<char*> argv;
      std::string bin = STRATA_CLI;
      argv.push_back(bin.data());
      std::vector<std::string> copy = args;
      for (std::string& a : copy) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(bin.c_str(), argv.data());
      ::_exit(127);
    }
    int status = 0;
    size_t sent = 0;
    for (;;) {
      const pid_t done = ::waitpid(pid, &status, signal_after.empty() || sent == signals.size() ? 0 : WNOHANG);
      if (done == pid) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(sent ? gap_ms : 20));
      if (read_file(out).find(signal_after) != std::string::npos) ::kill(pid, signals[sent++]);
    }
    CliResult r;
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.signaled = WIFSIGNALED(status);
    r.out = read_file(out);
    r.err = read_file(err);
    return r;
  }

  // Token shards of `lines` lines of a small deterministic text, made by `strata
  // prepare`; returns the training shard's path ("" when prepare failed).
  std::string prepare_corpus(int lines) const {
    std::string text;
    for (int i = 0; i < lines; ++i) text += "line " + std::to_string(i * 7919 % 1000) + " of the tiny corpus.\n";
    write_bytes(file("corpus.txt"), text.data(), text.size());
    if (run({"prepare", "--out", file("data"), file("corpus.txt")}).status != 0) return "";
    return file("data_train.bin");
  }

  // Runs a shell line (for pipes), with STRATA standing for the binary.
  int shell(const std::string& line) const {
    const std::string cmd = "STRATA='" + std::string(STRATA_CLI) + "' bash -c '" + line + "'";
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  TempDir dir_;
};

// The directory name of the checkpoint at `step` (strata::checkpoint_path's).
inline std::string checkpoint_name(int step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08d", step);
  return buf;
}

// Loss values printed on the step lines ("step 5/9 | loss 5.5412345 | ..."), by step.
inline std::vector<std::pair<int, std::string>> step_losses(const std::string& out) {
  std::vector<std::pair<int, std::string>> v;
  for (size_t at = out.find("step "); at != std::string::npos; at = out.find("step ", at + 1)) {
    const size_t slash = out.find('/', at), loss = out.find("| loss ", at), end = out.find(" |", loss + 7);
    if (slash == std::string::npos || loss == std::string::npos || end == std::string::npos) break;
    const std::string n = out.substr(at + 5, slash - at - 5);
    if (n.empty() || n.find_first_not_of("0123456789") != std::string::npos) continue;
    v.push_back({std::stoi(n), out.substr(loss + 7, end - loss - 7)});
  }
  return v;
}

}  // namespace strata::test
