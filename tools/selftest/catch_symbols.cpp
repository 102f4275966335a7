// Catch2's implementation, without a main: the shared op cases' support code
// (tests/support/host_tensor.cpp) is written against Catch2, so strata-selftest links
// it. Invariant: the selftest never runs a Catch session and never reaches a Catch
// assertion: its cases report through selftest::compare_case, not expect_close.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
