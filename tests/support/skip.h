// Honest skips: a test case whose precondition is missing here (no O_DIRECT
// directory, running as root, no 'fortunes' package) calls skip_test and returns.
// The test main (tests/catch_main.cpp) then exits with kSkipExitCode when every test
// case it ran was skipped, and ctest (SKIP_RETURN_CODE in tests/CMakeLists.txt, one
// case per process) reports it as skipped, never as passed.
// Invariant: a skip asserts nothing; a case that skips after a failed check still fails.
#pragma once
#include <catch2/catch.hpp>
#include <string>

namespace strata::test {

constexpr int kSkipExitCode = 77;

// Test cases that called skip_test in this process (the main reads it).
inline int& skipped_cases() {
  static int n = 0;
  return n;
}
inline bool& current_case_skipped() {
  static bool skipped = false;
  return skipped;
}

// Says why (a Catch2 warning in the report) and marks the running case skipped; the
// caller returns.
inline void skip_test(const std::string& why) {
  WARN("skipped: " << why);
  if (!current_case_skipped()) ++skipped_cases();
  current_case_skipped() = true;
}

}  // namespace strata::test
