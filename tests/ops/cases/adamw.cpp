// Reference cases for adamw_step, for every backend: five steps against the
// double-precision update (tests/ops/adamw_reference.h), and the working copy exactly
// the new master rounded to its dtype. Argument errors, thread-count independence and
// the CPU's loop bodies: tests/ops/test_adamw.cpp.
#include "ops.h"
#include "ops/adamw_reference.h"
#include "ops/op_table.h"

namespace strata::test {
namespace {

using reference::AdamWHyper;

const std::vector<std::vector<int64_t>> kShapes = {{1}, {3}, {17}, {1000}, {4097}, {70001}};

// The emulator runs the CPU's float arithmetic: bitwise. Real hardware may contract
// the update into FMAs: master, m and v there within 1e-6 (1% of f32's tolerance).
// The working copy rounds that master to 16 bits, so one bf16 ulp may flip there:
// its case keeps the dtype's tolerance.
constexpr double kBitwise = 0.0, kHardwareState = 0.01, kHardwareWorking = 1.0;

// dt is the working copy's dtype; f32 runs once more without a working copy.
// `state`: expect master, m and v; otherwise only the working copy.
void run_steps(OpEnv& e, DType dt, const std::vector<int64_t>& shape, bool state) {
  const AdamWHyper h;
  const int64_t n = shape[0];
  // Made once for both runs: an unexpected output freed and a new tensor of the same
  // bytes at its address would get its stale device copy (see OpEnv::at).
  HostTensor master(DType::f32, {n}), grad(DType::f32, {n}), m(DType::f32, {n}), v(DType::f32, {n});
  HostTensor working(dt, {n}), rounded(dt, {n});
  for (bool with_working : {true, false}) {
    if (!with_working && (dt != DType::f32 || !state)) continue;
    const std::string variant = std::string(" (working ") + (with_working ? dtype_name(dt) : "none") + ")";
    master.uniform(11, -1, 1);
    m.fill(0);
    v.fill(0);
    std::vector<double> rm = master.values(), rmom(size_t(n), 0.0), rvel(size_t(n), 0.0);
    for (int64_t t = 1; t <= 5; ++t) {
      const std::string step = " step " + std::to_string(t) + variant;
      grad.uniform(100 + uint64_t(t), -2, 2);
      reference::adamw_step(h, t, grad.values(), rm, rmom, rvel);
      ops::adamw_step(reference::adamw_args(h, e.at(master), e.at(grad), e.at(m), e.at(v),
                                            with_working ? e.at(working) : TensorView{}, t),
                      e.stream());
      if (state) {
        e.expect("master" + step, master, rm, tolerance_for(DType::f32));
        e.expect("m" + step, m, rmom, tolerance_for(DType::f32));
        e.expect("v" + step, v, rvel, tolerance_for(DType::f32));
      } else {
        // Exactly the new master rounded to the working dtype, not merely close to it
        // (the reference matters on the CPU, where master is updated in place).
        rounded.set_values(master.values());
        e.expect("working" + step, working, rounded.values(), {0, 0});
      }
    }
  }
}

STRATA_OP_CASE(reference_case(
    "adamw_step", kShapes, kAllFloat,
    [](OpEnv& e, DType dt, const std::vector<int64_t>& shape) { run_steps(e, dt, shape, true); }, kBitwise,
    kHardwareState));
STRATA_OP_CASE(reference_case(
    "adamw_step", kShapes, kAllFloat,
    [](OpEnv& e, DType dt, const std::vector<int64_t>& shape) { run_steps(e, dt, shape, false); }, kBitwise,
    kHardwareWorking));

}  // namespace
}  // namespace strata::test
