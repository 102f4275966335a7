// Walks the op table: every case over every dtype and shape, plus coverage of the
// op registry (each op has a reference case; each *_backward op, and the forward
// ops whose gradient is checked through them, a finite-difference case).
#include <catch2/catch.hpp>
#include <set>

#include "op_table.h"
#include "ops.h"
#include "support/host_tensor.h"

namespace strata::test {

std::vector<OpCase>& op_table() {
  static std::vector<OpCase> table;
  return table;
}

namespace {
const char* kind_name(CaseKind k) {
  switch (k) {
    case CaseKind::reference: return "reference";
    case CaseKind::gradcheck: return "gradcheck";
    case CaseKind::errors: return "errors";
  }
  return "?";
}
}  // namespace

TEST_CASE("every registered CPU op has reference and gradient cases", "[ops][cpu]") {
  std::set<std::string> reference, gradcheck;
  for (const OpCase& c : op_table()) {
    if (c.kind == CaseKind::reference) reference.insert(c.op);
    if (c.kind == CaseKind::gradcheck) gradcheck.insert(c.op);
  }
  for (const ops::OpInfo& info : ops::op_registry()) {
    if (!info.cpu) continue;
    std::string name = info.name;
    INFO("op " << name);
    CHECK(reference.count(name) == 1);
    if (name.size() > 9 && name.compare(name.size() - 9, 9, "_backward") == 0) CHECK(gradcheck.count(name) == 1);
  }
}

TEST_CASE("op table", "[ops][cpu]") {
  for (const OpCase& c : op_table()) {
    for (DType dtype : c.dtypes) {
      for (const auto& shape : c.shapes) {
        DYNAMIC_SECTION(c.op << " " << kind_name(c.kind) << " " << dtype_name(dtype) << " "
                             << shape_str(shape)) {
          c.run(dtype, shape);
        }
      }
    }
  }
}

}  // namespace strata::test
