// strata-selftest's body on the emulated device, as the GPU kit drives it: one op
// family at a time (--only), each check reported as it is made, and a family that
// throws recorded as a failed check while the others still run.
#include <catch2/catch.hpp>
#include <cstdio>

#include "ops/op_table.h"
#include "selftest/gpu_vs_cpu.h"
#include "strata/error.h"

namespace strata::test {
namespace {

TEST_CASE("cuda_emu: selftest runs only the families asked for and reports each check as it is made",
          "[cuda_emu][selftest]") {
  auto gpu = Device::cuda();
  selftest::CompareOptions o;
  o.small = true;
  o.families = {"elementwise", "reductions"};
  std::vector<std::string> seen;
  o.on_check = [&](const selftest::Check& c) { seen.push_back(c.op + " " + c.what + " " + c.dtype); };
  const std::vector<selftest::Check> checks = selftest::compare_ops(*gpu, o);
  REQUIRE(checks.size() == seen.size());
  REQUIRE(!checks.empty());
  for (size_t i = 0; i < checks.size(); ++i) {
    CHECK(seen[i] == checks[i].op + " " + checks[i].what + " " + checks[i].dtype);
    CHECK(checks[i].pass());
    const bool from_families = checks[i].op == "add" || checks[i].op == "scale" || checks[i].op == "cast" ||
                               checks[i].op == "accumulate" || checks[i].op == "fill_zero" ||
                               checks[i].op == "global_norm" || checks[i].op == "count_nonfinite";
    CHECK(from_families);
  }
  o.families = {"attention", "no_such_family"};
  REQUIRE_THROWS_WITH(selftest::compare_ops(*gpu, o), Catch::Contains("no op family 'no_such_family'"));
}

TEST_CASE("cuda_emu: a selftest family that throws is one failed check and the other families still run",
          "[cuda_emu][selftest]") {
  auto gpu = Device::cuda(0, 1024);  // too small for any family's tensors: each one throws
  selftest::CompareOptions o;
  o.small = true;
  // Two families of the shared op table: each case and dtype in its own try/catch.
  o.families = {"attention", "loss"};
  int reported = 0;
  o.on_check = [&](const selftest::Check&) { ++reported; };
  const std::vector<selftest::Check> checks = selftest::compare_ops(*gpu, o);
  const auto in_families = [](const std::string& op) {
    return op.rfind("attention_", 0) == 0 || op.rfind("cross_entropy_", 0) == 0;
  };
  size_t runs = 0, loss_runs = 0;
  for (const OpCase& c : op_table())
    if (c.run_on && !c.slow_on_emulator && in_families(c.op)) {
      runs += c.dtypes.size();
      if (c.op.rfind("cross_entropy_", 0) == 0) loss_runs += c.dtypes.size();
    }
  REQUIRE(loss_runs >= 3);
  REQUIRE(runs > loss_runs);
  REQUIRE(checks.size() == runs);  // none stopping the next
  CHECK(reported == int(checks.size()));
  for (const selftest::Check& c : checks) {
    INFO(c.op << " " << c.dtype << ": " << c.failure);
    CHECK_FALSE(c.pass());
    CHECK(in_families(c.op));
    CHECK(c.what == "threw");
    CHECK(c.failure.find("cannot allocate") != std::string::npos);
  }
}

TEST_CASE("cuda_emu: a selftest family of the shared op table prints one line per case and dtype",
          "[cuda_emu][selftest]") {
  auto gpu = Device::cuda();
  selftest::CompareOptions o;
  o.small = true;
  o.families = {"reductions"};
  const std::vector<selftest::Check> checks = selftest::compare_ops(*gpu, o);
  size_t runs = 0;
  for (const OpCase& c : op_table())
    if (c.run_on && (c.op == "global_norm" || c.op == "count_nonfinite")) runs += c.dtypes.size();
  REQUIRE(runs == 6);
  REQUIRE(checks.size() == runs);
  std::FILE* out = std::tmpfile();
  REQUIRE(out);
  CHECK(selftest::print(checks, out) == 0);
  std::rewind(out);
  char line[512];
  for (const selftest::Check& c : checks) {
    REQUIRE(std::fgets(line, sizeof line, out));
    INFO(line);
    CHECK(std::string(line).rfind(c.op, 0) == 0);
    CHECK(std::string(line).find(" outputs, worst ") != std::string::npos);
    CHECK(std::string(line).find(" PASS ") != std::string::npos);
  }
  std::fclose(out);
}

}  // namespace
}  // namespace strata::test
