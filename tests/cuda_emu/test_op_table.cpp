// The op table's reference cases (tests/ops/cases) on the emulated CUDA backend:
// selftest::compare_case runs each once on the CPU backend, recording its outputs,
// then on the emulated device with bitwise the same inputs; each output is compared
// with the CPU's (expect_match's tolerance of the dtype, times the case's slack).
// Cases marked slow_on_emulator run only under [slow].
// And the coverage of the emulated backend: every op it registered has a shared case.
#include <algorithm>
#include <catch2/catch.hpp>
#include <set>

#include "emu_support.h"
#include "ops.h"
#include "ops/backend.h"
#include "ops/op_table.h"
#include "selftest/gpu_vs_cpu.h"

namespace strata::test {
namespace {

void run_reference_cases(bool slow) {
  auto gpu = Device::cuda();
  for (const OpCase& c : op_table()) {
    if (!c.run_on || c.slow_on_emulator != slow) continue;
    for (DType dtype : c.dtypes)
      for (const auto& shape : c.shapes)
        DYNAMIC_SECTION(case_name(c, dtype, shape)) {
          const std::vector<selftest::CaseOutput> outputs = selftest::compare_case(c, *gpu, dtype, shape);
          REQUIRE(!outputs.empty());
          for (const selftest::CaseOutput& o : outputs) expect_match(o.what, o.gpu, o.cpu, c.slack);
        }
  }
}

TEST_CASE("cuda_emu: op table: every reference case against the CPU backend", "[cuda_emu][ops]") {
  run_reference_cases(false);
}

TEST_CASE("cuda_emu: op table: the long reference cases against the CPU backend", "[cuda_emu][ops][slow]") {
  run_reference_cases(true);
}

TEST_CASE("cuda_emu: every op of the emulated CUDA backend has a case against the CPU", "[cuda_emu][ops]") {
  const ops::Backend* cuda = nullptr;
  for (const ops::Backend* b : ops::backends())
    if (b->kind == DeviceKind::cuda) cuda = b;
  REQUIRE(cuda);
  const std::vector<std::string> cases = ops_with_cases(CaseKind::reference, /*portable=*/true);
  for (const std::string& op : ops::op_names()) {
    const bool in_table = std::find(cases.begin(), cases.end(), op) != cases.end();
    INFO("op " << op << " of the " << cuda->name << " backend");
    if (ops::has_op(*cuda, op)) CHECK(in_table);  // no reference case in tests/ops/cases compares it with the CPU
  }
}

}  // namespace
}  // namespace strata::test
