// The op table: every op of kernels/ops.h registers its cases here, one file per op
// family (tests/ops/test_<family>.cpp). The driver (test_op_table.cpp) walks the
// table over every dtype and shape, and checks that every op in ops::op_registry()
// has a reference case, and every backward op a finite-difference case.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "strata/dtype.h"

namespace strata::test {

enum class CaseKind { reference, gradcheck, errors };

struct OpCase {
  std::string op;  // the name in ops::op_registry()
  CaseKind kind;
  std::vector<std::vector<int64_t>> shapes;  // what a shape means is up to the case
  std::vector<DType> dtypes;
  std::function<void(DType, const std::vector<int64_t>&)> run;
};

std::vector<OpCase>& op_table();

struct RegisterOpCase {
  explicit RegisterOpCase(OpCase c) { op_table().push_back(std::move(c)); }
};

inline const std::vector<DType> kAllFloat = {DType::f32, DType::bf16, DType::f16};
inline const std::vector<DType> kF32 = {DType::f32};

}  // namespace strata::test

#define STRATA_OP_CASE_CAT2(a, b) a##b
#define STRATA_OP_CASE_CAT(a, b) STRATA_OP_CASE_CAT2(a, b)
// STRATA_OP_CASE({"matmul_forward", CaseKind::reference, shapes, dtypes, fn});
#define STRATA_OP_CASE(...) \
  static ::strata::test::RegisterOpCase STRATA_OP_CASE_CAT(strata_op_case_, __LINE__){__VA_ARGS__}
