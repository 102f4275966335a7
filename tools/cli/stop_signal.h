// Clean stops for long commands (`strata train`): the first SIGINT or SIGTERM only
// asks the loop to stop after the current step (which then saves and exits with
// 128 + the signal); a second one ends the process at once with the default action.
// SIGPIPE is ignored, so a reader that goes away (`strata train | head`) does not
// kill a run: Output notices the broken pipe and stops writing to stdout.
// Invariant: the handler only stores into a lock-free atomic (async-signal-safe).
#pragma once
#include <cstdio>
#include <string>

namespace cli {

// Installs the handlers; call once, before the work starts.
void install_stop_handlers();
// 0 while running; the first stop signal's number once one arrived.
int stop_requested();
// "SIGINT", "SIGTERM".
std::string signal_name(int sig);

// stdout for progress lines, which goes quiet once a write fails (a closed pipe):
// training goes on, and the last words go to stderr.
class Output {
 public:
  // enabled false: writes nothing (ranks other than 0).
  explicit Output(bool tty, bool enabled = true) : tty_(tty), broken_(!enabled) {}
  void printf(const char* format, ...) __attribute__((format(printf, 2, 3)));
  void flush();
  bool tty() const { return tty_ && !broken_; }
  bool broken() const { return broken_; }

 private:
  bool tty_;
  bool broken_ = false;
};

}  // namespace cli
