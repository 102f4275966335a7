// The Catch2 main of every test program: Catch2's own, plus the honest-skip exit code
// (support/skip.h): when every test case that ran skipped, the process exits with
// kSkipExitCode so ctest counts it as skipped.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "support/skip.h"

namespace {
int cases_run = 0;

struct SkipListener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo&) override {
    ++cases_run;
    strata::test::current_case_skipped() = false;
  }
};
}  // namespace

CATCH_REGISTER_LISTENER(SkipListener)

int main(int argc, char* argv[]) {
  const int result = Catch::Session().run(argc, argv);
  if (result == 0 && cases_run > 0 && strata::test::skipped_cases() == cases_run) return strata::test::kSkipExitCode;
  return result;
}
