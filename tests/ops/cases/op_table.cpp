// The op table's storage and the helpers every driver shares (test_ops, test_cuda_emu).
#include "ops/op_table.h"

#include <set>
#include <sstream>

namespace strata::test {

std::vector<OpCase>& op_table() {
  static std::vector<OpCase> table;
  return table;
}

OpCase reference_case(std::string op, std::vector<std::vector<int64_t>> shapes, std::vector<DType> dtypes,
                      std::function<void(OpEnv&, DType, const std::vector<int64_t>&)> body, double slack,
                      double hardware_slack) {
  OpCase c{std::move(op), CaseKind::reference, std::move(shapes), std::move(dtypes), {}, std::move(body), slack,
           hardware_slack};
  return c;
}

std::vector<std::string> ops_with_cases(CaseKind kind, bool portable) {
  std::set<std::string> ops;
  for (const OpCase& c : op_table())
    if (c.kind == kind && (!portable || c.run_on)) ops.insert(c.op);
  return {ops.begin(), ops.end()};
}

std::string case_name(const OpCase& c, DType dtype, const std::vector<int64_t>& shape) {
  const char* kind = c.kind == CaseKind::reference ? "reference" : c.kind == CaseKind::gradcheck ? "gradcheck" : "errors";
  // The how-manieth case of this op and kind: Catch2 runs only the first of several
  // sections with one name, so a later case that repeats a dtype and shape says so.
  int ordinal = 0;
  for (const OpCase& other : op_table()) {
    if (other.op == c.op && other.kind == c.kind) ++ordinal;
    if (&other == &c) break;
  }
  std::ostringstream s;
  s << c.op << " " << kind << " " << dtype_name(dtype) << " " << shape_str(shape);
  if (ordinal > 1) s << " (case " << ordinal << ")";
  return s.str();
}

}  // namespace strata::test
