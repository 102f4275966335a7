// The op table: every op of kernels/ops.h registers its cases here, one file per op
// family. Reference cases are written once for every backend (tests/ops/cases/*.cpp,
// compiled into test_ops and test_cuda_emu): each runs on an OpEnv, which on the CPU
// compares the outputs with the case's double-precision reference and on any other
// backend with the CPU backend's outputs for bitwise the same inputs. Finite-difference
// (gradcheck) and argument-error cases run on the CPU only (tests/ops/test_<family>.cpp).
// Drivers: test_op_table.cpp (CPU vs reference, and coverage of the CPU backend),
// tests/cuda_emu/test_op_table.cpp (emulated CUDA vs CPU, and its coverage), and
// strata-selftest (real CUDA vs CPU, through selftest::compare_case).
// Invariant: a reference case reports only through OpEnv::expect and includes no
// Catch2 header (strata-selftest runs it with no Catch session).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "strata/dtype.h"
#include "support/host_tensor.h"

namespace strata::test {

enum class CaseKind { reference, gradcheck, errors };

// Where a reference case runs. A case makes its tensors on the host (seeded, so every
// run makes the same bytes), names them through at() when it passes them to an op on
// stream(), and hands each output to expect().
class OpEnv {
 public:
  virtual ~OpEnv() = default;
  virtual Stream& stream() = 0;
  // h on this env's device: h.view() on the CPU; elsewhere a device copy of h made
  // when h is first named (the same copy each time, so outputs can feed later ops).
  // The copy is found by h's address and bytes: keep a tensor an op wrote and no
  // expect() read back alive to the end of the case, or a new tensor with its old
  // bytes at its address would get its stale copy.
  virtual TensorView at(HostTensor& h) = 0;
  // An output: on the CPU, `out` against `reference` at `tol`; on another backend,
  // the device's `out` (copied back into it) against the CPU backend's at the
  // backend tolerance of its dtype, times the case's slack.
  virtual void expect(const std::string& what, HostTensor& out, const std::vector<double>& reference,
                      Tolerance tol) = 0;
};

struct OpCase {
  std::string op;  // the name in ops::op_names()
  CaseKind kind;
  std::vector<std::vector<int64_t>> shapes;  // what a shape means is up to the case
  std::vector<DType> dtypes;
  // A gradcheck or errors case: CPU only.
  std::function<void(DType, const std::vector<int64_t>&)> run;
  // A reference case: every backend.
  std::function<void(OpEnv&, DType, const std::vector<int64_t>&)> run_on = {};
  // Backend comparisons allow slack x the backend's tolerance of the dtype: more for a
  // kernel whose math differs from the CPU's (libm tanhf against a vectorised exp),
  // 0 where every backend must give the CPU's bits.
  double slack = 1.0;
  // Real CUDA hardware (strata-selftest) allows hardware_slack instead, where set
  // (>= 0): nvcc may contract a * b + c into one rounding, where the emulator runs the
  // CPU's arithmetic. The emulated device keeps `slack`.
  double hardware_slack = -1;
  double slack_on(bool hardware) const { return hardware && hardware_slack >= 0 ? hardware_slack : slack; }
  // Too long for the emulated suite's default run: its driver runs it under [slow].
  bool slow_on_emulator = false;
};

std::vector<OpCase>& op_table();

struct RegisterOpCase {
  explicit RegisterOpCase(OpCase c) { op_table().push_back(std::move(c)); }
};

inline const std::vector<DType> kAllFloat = {DType::f32, DType::bf16, DType::f16};
inline const std::vector<DType> kF32 = {DType::f32};

// A reference case: op, shapes, dtypes, body(OpEnv&, DType, shape), slack, hardware_slack.
OpCase reference_case(std::string op, std::vector<std::vector<int64_t>> shapes, std::vector<DType> dtypes,
                      std::function<void(OpEnv&, DType, const std::vector<int64_t>&)> body, double slack = 1.0,
                      double hardware_slack = -1);

// c, marked slow_on_emulator.
inline OpCase slow_on_emulator(OpCase c) {
  c.slow_on_emulator = true;
  return c;
}

// The ops some case of `kind` covers; for reference cases, only those written for
// every backend when `portable`.
std::vector<std::string> ops_with_cases(CaseKind kind, bool portable = false);

// The section name of one run of a case: "gelu_forward reference bf16 [3, 17]", with
// " (case 2)" for the second case of that op and kind (names must be unique).
std::string case_name(const OpCase& c, DType dtype, const std::vector<int64_t>& shape);

}  // namespace strata::test

#define STRATA_OP_CASE_CAT2(a, b) a##b
#define STRATA_OP_CASE_CAT(a, b) STRATA_OP_CASE_CAT2(a, b)
// STRATA_OP_CASE({"matmul_forward", CaseKind::gradcheck, shapes, dtypes, fn});
// STRATA_OP_CASE(reference_case("gelu_forward", shapes, dtypes, [](OpEnv& e, DType, shape) {...}));
#define STRATA_OP_CASE(...) \
  static ::strata::test::RegisterOpCase STRATA_OP_CASE_CAT(strata_op_case_, __LINE__){__VA_ARGS__}
