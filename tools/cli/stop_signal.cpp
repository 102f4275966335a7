// Stop signals and pipe-safe progress output (see stop_signal.h).
#include "stop_signal.h"

#include <signal.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstring>

namespace cli {

namespace {
std::atomic<int> g_stop{0};
static_assert(std::atomic<int>::is_always_lock_free);

void on_stop_signal(int sig) {
  if (g_stop.load() != 0) {  // the second one: stop now, as if unhandled
    ::signal(sig, SIG_DFL);
    ::raise(sig);
    return;
  }
  g_stop.store(sig);
}
}  // namespace

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // reads and writes in flight go on
  // A SIGINT ignored by whoever started us (a shell's background job, nohup) stays
  // ignored, as in any well-behaved program; SIGTERM always stops cleanly.
  struct sigaction old {};
  if (sigaction(SIGINT, nullptr, &old) == 0 && old.sa_handler != SIG_IGN) sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

int stop_requested() { return g_stop.load(); }

std::string signal_name(int sig) {
  if (sig == SIGINT) return "SIGINT";
  if (sig == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(sig);
}

void Output::printf(const char* format, ...) {
  if (broken_) return;
  va_list args;
  va_start(args, format);
  std::vprintf(format, args);
  va_end(args);
  if (std::ferror(stdout)) broken_ = true;
}

void Output::flush() {
  if (broken_) return;
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) broken_ = true;
}

}  // namespace cli
